// Screened PFLM token selection: the exact tokens of the PFLM rule (argmax of the penalised logits, KFORCING.md
// section 6) without computing every logit of the output layer exactly.
//
// A PFLM decodes by argmax, so only the logits that could be the maximum need their exact value. A bf16 copy of the
// output weights (half the bytes of the fp32 matrix, which is ~30% of the official model's weights) gives every
// logit to within a proven bound; the logits whose upper bound reaches the best lower bound are the candidates, and
// only those are recomputed with kf_linear on the fp32 weights (same bits as the full layer: kf_linear's outputs do
// not depend on which rows share a call). An AR model sampling at a temperature needs every exact logit (the softmax
// normaliser), so this is the PFLM's alone.
//
// The bound. For a row h and weight row w (K terms) the approximate logit A = bf16dot(h, w) + b and the exact one
// L = fp32 kernel dot(h, w) + b differ by at most
//   |hb wb - h w| summed: (2^-8 + 2^-18) S      (bf16 round-to-nearest of h and of w, relative error 2^-9 each)
//   + the rounding of both accumulations:       about 2 * 53 * 2^-24 S (<= 48 products and a 4-level tree a lane)
//   + the final bias add:                         2^-24 (S + |b|)
// with S = sum |h_k w_k| <= ||h|| ||w|| (Cauchy-Schwarz). E = 1.05 * 2^-8 ||h|| ||w|| + 2^-22 |b| + 1e-30 covers
// these (the 5% covers the small terms many times over; the absolute term covers bf16 products flushed to zero).
// The penalised value P = fround(L - p) (p = fround(lambda * count) when the token was counted) is monotone in L;
// with lo/hi = A -+ E - p, widened by 2^-22 (|A| + E + p) for the float roundings, every token outside
// {v : hi_v >= max_u lo_u} has P_v < P of the best token, strictly: it can neither win nor tie. The candidates are
// then ranked exactly as sample.c's penalised_argmax ranks a full row (first maximum in vocabulary order).
//
// Rows whose h is not finite, whose bound could overflow, or that keep more than SCREEN_CAP candidates get the full
// fp32 row and kf_pflm_slot (sample.c), as without screening.
#define _GNU_SOURCE
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "kf.h"
#include "simd.h"

#if defined(__AVX512F__) && defined(__AVX512BF16__)
#define KF_SCREEN 1
#else
#define KF_SCREEN 0
#endif

#define SCREEN_CAP 2048 // candidates above this: the full row is cheaper than gathering

int kf_screen_supported(void) { return KF_SCREEN; }

size_t kf_screen_stride(size_t K) { return (K + 31) / 32 * 32; }

// float -> bf16, round to nearest even (finite inputs).
static inline uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

// ---- preparation: bf16 copy (rows zero-padded to a multiple of 32) and an upper bound of every row's norm -------------
typedef struct {
  const float *w;
  uint16_t *wb;
  float *norms;
  size_t N, K, Kp;
  atomic_size_t next;
  atomic_int bad;
} prep_job;

static void prep_task(void *p, int tid, int nt) {
  (void)tid;
  (void)nt;
  prep_job *j = p;
  size_t b;
  while ((b = atomic_fetch_add(&j->next, 1)) < (j->N + 255) / 256) {
    const size_t n1 = (b + 1) * 256 < j->N ? (b + 1) * 256 : j->N;
    for (size_t n = b * 256; n < n1; n++) {
      const float *w = j->w + n * j->K;
      uint16_t *o = j->wb + n * j->Kp;
      double s = 0;
      for (size_t k = 0; k < j->K; k++) {
        if (!isfinite(w[k])) atomic_store(&j->bad, 1);
        s += (double)w[k] * w[k];
        o[k] = to_bf16(w[k]);
      }
      for (size_t k = j->K; k < j->Kp; k++) o[k] = 0;
      j->norms[n] = nextafterf((float)(sqrt(s) * (1 + 1e-9)), INFINITY);
    }
  }
}

int kf_screen_prepare(const float *w, size_t N, size_t K, uint16_t *wb, float *norms) {
  if (!KF_SCREEN) return 0;
  prep_job j = {w, wb, norms, N, K, kf_screen_stride(K), 0, 0};
  kf_parallel(prep_task, &j, KF_THREADS);
  return !atomic_load(&j.bad);
}

#if KF_SCREEN
// ---- approximate logits: out[M, N] = bf16(h) . wb (no bias) ----------------------------------------------------------
// Threads take blocks of SB weight rows; every group of 4 h rows walks the block with a 4 x 4 tile (the first group
// streams it from DRAM with software prefetch, the others find it in L2).
#define SB 96
typedef struct {
  const uint16_t *xb, *wb;
  float *out;
  size_t M, N, Kp;
  atomic_size_t next;
} approx_job;

static void approx_task(void *p, int tid, int nt) {
  (void)tid;
  (void)nt;
  approx_job *j = p;
  const size_t Kp = j->Kp, N = j->N, M = j->M;
  size_t b;
  while ((b = atomic_fetch_add(&j->next, 1)) < (N + SB - 1) / SB) {
    const size_t n0 = b * SB, n1 = n0 + SB < N ? n0 + SB : N;
    for (size_t m0 = 0; m0 < M; m0 += 4) {
      const uint16_t *x[4];
      for (int m = 0; m < 4; m++) x[m] = j->xb + (m0 + m < M ? m0 + m : M - 1) * Kp;
      for (size_t n = n0; n < n1; n += 4) {
        const uint16_t *w[4];
        for (int i = 0; i < 4; i++) w[i] = j->wb + (n + i < n1 ? n + i : n1 - 1) * Kp;
        __m512 acc[16];
        for (int a = 0; a < 16; a++) acc[a] = _mm512_setzero_ps();
        for (size_t k = 0; k < Kp; k += 32) {
          __m512i wv[4];
          for (int i = 0; i < 4; i++) {
            wv[i] = _mm512_loadu_si512(w[i] + k);
            if (m0 == 0) _mm_prefetch((const char *)(w[i] + k) + 8192, _MM_HINT_T0);
          }
          for (int m = 0; m < 4; m++) {
            const __m512i xv = _mm512_loadu_si512(x[m] + k);
            for (int i = 0; i < 4; i++) acc[m * 4 + i] = _mm512_dpbf16_ps(acc[m * 4 + i], (__m512bh)xv, (__m512bh)wv[i]);
          }
        }
        float s[16];
        _mm512_storeu_ps(s, kf_reduce16(acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7], acc[8],
                                        acc[9], acc[10], acc[11], acc[12], acc[13], acc[14], acc[15]));
        for (int m = 0; m < 4 && m0 + m < M; m++)
          for (int i = 0; i < 4 && n + i < n1; i++) j->out[(m0 + m) * N + n + i] = s[m * 4 + i];
      }
    }
  }
}

// ---- selection ------------------------------------------------------------------------------------------------------
typedef struct {
  const float *h, *approx, *w, *bias, *norms;
  size_t K, N;
  const int32_t *rowStart, *takes;
  int32_t *const *counts;
  const double *lambdas;
  int32_t maskIndex;
  int32_t *out;
  size_t kmax, nseq;
  atomic_size_t next;
} sel_job;

static __thread float *t_wc, *t_lc, *t_row;
static __thread int32_t *t_cand;
static __thread double *t_hi;
static __thread size_t t_cap_n, t_cap_k;

static int scratch(size_t N, size_t K) {
  if (t_cap_n >= N && t_cap_k >= K) return 1;
  free(t_wc);
  free(t_lc);
  free(t_row);
  free(t_cand);
  free(t_hi);
  const size_t cap = N < SCREEN_CAP ? N : SCREEN_CAP;
  t_wc = aligned_alloc(64, (cap * K * sizeof(float) + 63) / 64 * 64);
  t_lc = malloc((cap + 1) * sizeof(float));
  t_row = aligned_alloc(64, (N * sizeof(float) + 63) / 64 * 64);
  t_cand = malloc(N * sizeof(int32_t));
  t_hi = malloc(N * sizeof(double));
  const int ok = t_wc && t_lc && t_row && t_cand && t_hi;
  t_cap_n = ok ? N : 0;
  t_cap_k = ok ? K : 0;
  return ok;
}

// The PFLM rule's value of a logit l of token v (sample.c penalised_argmax; lambda == 0: the logit itself).
static inline float penalised(float l, int32_t cnt, double lambda) {
  if (lambda == 0 || cnt == 0) return l;
  const float lam = (float)lambda;
  return (float)((double)l - (double)(float)((double)lam * (double)cnt));
}

typedef struct {
  double c1hn, plam; // 1.05 * 2^-8 * ||h||, fround(lambda) (0: no penalty)
} slot_consts;

#define C2 (1.0 / 4194304.0) // 2^-22

// Bounds of token v's penalised value (scalar form; the vector loop below computes the same for uncounted tokens).
static inline void bounds1(const sel_job *j, const slot_consts *sc, const float *approx, const int32_t *cnt, size_t v,
                           double *lo, double *hi) {
  if ((int32_t)v == j->maskIndex) {
    *lo = *hi = penalised(-1000.0f, cnt[v], sc->plam);
    return;
  }
  const double b = j->bias ? j->bias[v] : 0, a = (double)approx[v] + b;
  const double e = sc->c1hn * j->norms[v] + C2 * fabs(b) + 1e-30;
  const double p = cnt[v] && sc->plam != 0 ? (double)(float)(sc->plam * (double)cnt[v]) : 0;
  const double w = C2 * (fabs(a) + e + p);
  *lo = a - e - p - w;
  *hi = a + e - p + w;
}

// One slot: the token for row h (exact penalised argmax over the whole vocabulary).
static int32_t screened_slot(const sel_job *j, const float *h, const float *approx, const int32_t *cnt,
                             double lambda) {
  const size_t K = j->K, N = j->N;
  double hn = 0;
  for (size_t k = 0; k < K; k++) hn += (double)h[k] * h[k];
  hn = sqrt(hn) * (1 + 1e-9);
  const slot_consts sc = {1.05 / 256.0 * hn, lambda == 0 ? 0 : (double)(float)lambda};
  int full = !isfinite(hn) || !scratch(N, K);
  // One pass: tau = the best lower bound so far (lane-wise in the vector part, which only makes the test looser);
  // every token whose upper bound reaches it is kept with that bound, and the list is cut to the final tau below.
  double tau = -INFINITY, big = 0;
  size_t nc = 0;
  if (!full) {
    size_t v = 0;
    __m512d tv = _mm512_set1_pd(-INFINITY), bigv = _mm512_setzero_pd();
    const __m512d c1 = _mm512_set1_pd(sc.c1hn), c2 = _mm512_set1_pd(C2), tiny = _mm512_set1_pd(1e-30);
    const __m512i iota = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    for (; v + 8 <= N; v += 8) {
      const __mmask8 counted = _mm256_test_epi32_mask(_mm256_loadu_si256((const __m256i *)(cnt + v)),
                                                      _mm256_set1_epi32(-1));
      const int has_mask = j->maskIndex >= (int32_t)v && j->maskIndex < (int32_t)(v + 8);
      if (counted || has_mask) {
        for (size_t q = v; q < v + 8; q++) {
          double lo, hi;
          bounds1(j, &sc, approx, cnt, q, &lo, &hi);
          if (lo > tau) tau = lo;
          if (fabs(hi) > big) big = fabs(hi);
          if (hi >= tau) {
            t_cand[nc] = (int32_t)q;
            t_hi[nc++] = hi;
          }
        }
        continue;
      }
      const __m512d b = j->bias ? _mm512_cvtps_pd(_mm256_loadu_ps(j->bias + v)) : _mm512_setzero_pd();
      const __m512d a = _mm512_add_pd(_mm512_cvtps_pd(_mm256_loadu_ps(approx + v)), b);
      const __m512d e = _mm512_add_pd(_mm512_add_pd(_mm512_mul_pd(c1, _mm512_cvtps_pd(_mm256_loadu_ps(j->norms + v))),
                                                    _mm512_mul_pd(c2, _mm512_abs_pd(b))), tiny);
      const __m512d w = _mm512_mul_pd(c2, _mm512_add_pd(_mm512_abs_pd(a), e));
      const __m512d lo = _mm512_sub_pd(_mm512_sub_pd(a, e), w), hi = _mm512_add_pd(_mm512_add_pd(a, e), w);
      tv = _mm512_max_pd(tv, lo);
      bigv = _mm512_max_pd(bigv, _mm512_abs_pd(hi));
      const __mmask8 keep = _mm512_cmp_pd_mask(hi, tv, _CMP_GE_OQ) | _mm512_cmp_pd_mask(hi, _mm512_set1_pd(tau), _CMP_GE_OQ);
      if (keep) {
        _mm256_mask_compressstoreu_epi32(t_cand + nc, keep, _mm512_cvtepi64_epi32(_mm512_add_epi64(iota, _mm512_set1_epi64((long long)v))));
        _mm512_mask_compressstoreu_pd(t_hi + nc, keep, hi);
        nc += (size_t)__builtin_popcount(keep);
      }
    }
    for (; v < N; v++) {
      double lo, hi;
      bounds1(j, &sc, approx, cnt, v, &lo, &hi);
      if (lo > tau) tau = lo;
      if (fabs(hi) > big) big = fabs(hi);
      if (hi >= tau) {
        t_cand[nc] = (int32_t)v;
        t_hi[nc++] = hi;
      }
    }
    const double tvm = _mm512_reduce_max_pd(tv), bm = _mm512_reduce_max_pd(bigv);
    if (tvm > tau) tau = tvm;
    if (bm > big) big = bm;
    if (!(big < 1e37)) full = 1; // a bound near float overflow (or NaN): rank the full row instead
    size_t m = 0;
    for (size_t c = 0; c < nc; c++)
      if (t_hi[c] >= tau) t_cand[m++] = t_cand[c];
    nc = m;
    if (nc > SCREEN_CAP) full = 1;
  }
  if (full) {
    if (!t_row) return -2; // no memory at all
    kf_linear(t_row, h, j->w, j->bias, 1, K, N);
    return kf_pflm_slot(t_row, N, cnt, lambda, j->maskIndex);
  }
  // Exact logits of the candidates (the mask's is the constant), ranked in vocabulary order.
  size_t ng = 0;
  float bg[SCREEN_CAP];
  for (size_t c = 0; c < nc; c++) {
    const int32_t v = t_cand[c];
    if (v == j->maskIndex) continue;
    memcpy(t_wc + ng * K, j->w + (size_t)v * K, K * sizeof(float));
    bg[ng++] = j->bias ? j->bias[v] : 0.0f;
  }
  if (ng > 0) kf_linear(t_lc, h, t_wc, j->bias ? bg : NULL, 1, K, ng);
  int32_t best = -1;
  float bv = -INFINITY;
  for (size_t c = 0, g = 0; c < nc; c++) {
    const int32_t v = t_cand[c];
    const float l = v == j->maskIndex ? -1000.0f : t_lc[g++];
    const float x = penalised(l, cnt[v], lambda);
    if (best < 0 || x > bv) {
      bv = x;
      best = v;
    }
  }
  return best;
}

static void sel_task(void *p, int tid, int nt) {
  (void)tid;
  (void)nt;
  sel_job *j = p;
  size_t i;
  while ((i = atomic_fetch_add(&j->next, 1)) < j->nseq) {
    int32_t *cnt = j->counts[i], *o = j->out + i * j->kmax;
    int32_t s;
    for (s = 0; s < j->takes[i]; s++) {
      const size_t r = (size_t)j->rowStart[i] + (size_t)s;
      const int32_t t = screened_slot(j, j->h + r * j->K, j->approx + r * j->N, cnt, j->lambdas[i]);
      o[s] = t;
      if (t < 0) break;
      cnt[t]++; // later slots of the block see this choice; undone below (the caller records it)
    }
    for (int32_t q = 0; q < s; q++) cnt[o[q]]--;
  }
}
#endif

void kf_screen_select(const float *h, size_t M, size_t K, size_t N, const uint16_t *wb, const float *norms,
                      const float *w, const float *bias, float *approx, const int32_t *rowStart, const int32_t *takes,
                      int32_t *const *counts, const double *lambdas, size_t nseq, int32_t maskIndex, size_t kmax,
                      int32_t *out) {
#if KF_SCREEN
  const size_t Kp = kf_screen_stride(K);
  uint16_t *xb = aligned_alloc(64, (M * Kp * sizeof(uint16_t) + 63) / 64 * 64);
  if (!xb) {
    for (size_t i = 0; i < nseq * kmax; i++) out[i] = -2;
    return;
  }
  for (size_t m = 0; m < M; m++) {
    for (size_t k = 0; k < K; k++) xb[m * Kp + k] = isfinite(h[m * K + k]) ? to_bf16(h[m * K + k]) : 0;
    for (size_t k = K; k < Kp; k++) xb[m * Kp + k] = 0;
  }
  approx_job aj = {xb, wb, approx, M, N, Kp, 0};
  kf_parallel(approx_task, &aj, KF_THREADS);
  free(xb);
  sel_job sj = {h, approx, w, bias, norms, K, N, rowStart, takes, counts, lambdas, maskIndex, out, kmax, nseq, 0};
  kf_parallel(sel_task, &sj, nseq >= 2 ? KF_THREADS : 1);
#else
  (void)h; (void)M; (void)K; (void)N; (void)wb; (void)norms; (void)w; (void)bias; (void)approx; (void)rowStart;
  (void)takes; (void)counts; (void)lambdas; (void)maskIndex;
  for (size_t i = 0; i < nseq * kmax; i++) out[i] = -2;
#endif
}
