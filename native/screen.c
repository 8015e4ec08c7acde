// Screened PFLM token selection: the exact tokens of the PFLM rule (argmax of the penalised logits, KFORCING.md
// section 6) without computing every logit of the output layer exactly.
//
// A PFLM decodes by argmax, so only the logits that could be the maximum need their exact value. An int8 copy of the
// output weights (a quarter of the bytes of the fp32 matrix, which is ~30% of the official model's weights) gives
// every logit to within a proven bound; the logits whose upper bound reaches the best lower bound are the
// candidates, and only those are recomputed with kf_linear on the fp32 weights (same bits as the full layer:
// kf_linear's outputs do not depend on which rows share a call). An AR model sampling at a temperature needs every
// exact logit (the softmax normaliser), so this is the PFLM's alone.
//
// The approximation. Weight row w is stored as q = round(w / s_w) (|q| <= 127, s_w = max|w| / 127) and h, at run
// time, in two int8 parts: q1 = round(h / s_h) (s_h = max|h| / 127) and q2 = round((h - s_h q1) / (s_h / 256)), so
// h^ = s_h (q1 + q2 / 256) is within s_h / 256 of h elementwise. The dot products of q with q1 and q2 are exact
// integers (VNNI u8 x s8 dot products into int32), so h^.w^ (w^ = s_w q) is known to double precision, and
//   |h.w - h^.w^| <= |(h - h^).w| + |h^.(w - w^)| <= (s_h / 256) ||w||_1 + min((s_w / 2) ||h^||_1, ||h^||_2 ||w - w^||_2)
// (elementwise bounds, or Cauchy-Schwarz with the residual norm stored per row). The exact kernel's own rounding (<= 48
// FMA roundings a lane, a 4-level tree, the bias add) adds at most 2^-18 (max|h| ||w||_1 + |b|). E = 1.0001 times the
// first bound plus the second plus 1e-30 bounds |A - L| between A = h^.w^ + b and the logit L the full layer
// computes (the 0.0001 and the absolute term cover the double arithmetic here). The penalised value
// P = fround(L - p) (p = fround(lambda * count) when the token was counted) is monotone in L; with lo/hi = A -+ E - p,
// widened by 2^-22 (|A| + E + p) for the float roundings, every token outside {v : hi_v >= max_u lo_u} has P_v < P of
// the best token, strictly: it can neither win nor tie. The candidates are then ranked exactly as sample.c's
// penalised_argmax ranks a full row (first maximum in vocabulary order).
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

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define KF_SCREEN 1
#else
#define KF_SCREEN 0
#endif

#define SCREEN_CAP 2048 // candidates above this: the full row is cheaper than gathering

int kf_screen_supported(void) { return KF_SCREEN; }

size_t kf_screen_stride(size_t K) { return (K + 63) / 64 * 64; }

// ---- preparation: int8 rows (zero-padded to a multiple of 64); per row its scale, an L1 norm bound and sum of q ---
typedef struct {
  const float *w;
  int8_t *wq;
  float *meta; // [4][N]: s_w, upper bounds of ||w||_1 and of ||w - s_w q||_2, sum of q (an integer)
  size_t N, K, Kp;
  atomic_size_t next;
  atomic_int bad;
} prep_job;

#if KF_SCREEN
// One row: max|w| (float, exact), then q = round(w / s_w) as round(w * (1 / s_w)) in float (within 127 * 2^-24 of
// the half-step, which the bound's 1.0001 covers), the sum of q, and double sums of |w| and of the exact residuals'
// squares (w - s_w q is exact in double), each rounded up at the end.
static void prep_row(const float *w, int8_t *q, float *meta, size_t n, size_t N, size_t K, size_t Kp, int *bad) {
  __m512 mx = _mm512_setzero_ps();
  __m512d l1 = _mm512_setzero_pd();
  size_t k = 0;
  for (; k < K; k += 16) {
    const __mmask16 m = kf_tail_mask(K - k);
    const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(m, w + k));
    if (_mm512_mask_cmp_ps_mask(m, a, _mm512_set1_ps(INFINITY), _CMP_NLT_UQ)) *bad = 1; // inf or NaN
    mx = _mm512_max_ps(mx, a);
    l1 = _mm512_add_pd(l1, _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(a)),
                                         _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)))));
  }
  const float sw = _mm512_reduce_max_ps(mx) / 127.0f;
  const __m512 inv = _mm512_set1_ps(sw > 0 ? 1.0f / sw : 0.0f);
  __m512i sum = _mm512_setzero_si512();
  __m512d r2 = _mm512_setzero_pd();
  for (k = 0; k < Kp; k += 16) {
    const __mmask16 m = k < K ? kf_tail_mask(K - k) : 0;
    const __m512 x = _mm512_maskz_loadu_ps(m, w + k);
    __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(x, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm512_min_ps(_mm512_max_ps(r, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
    const __m512i qi = _mm512_cvtps_epi32(r);
    _mm_storeu_si128((__m128i *)(q + k), _mm512_cvtsepi32_epi8(qi));
    sum = _mm512_add_epi32(sum, qi);
    for (int h = 0; h < 2; h++) { // residuals in double: w - s_w q, exact
      const __m512d xd = _mm512_cvtps_pd(h ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)) : _mm512_castps512_ps256(x));
      const __m512d rd = _mm512_cvtps_pd(h ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(r), 1)) : _mm512_castps512_ps256(r));
      const __m512d d = _mm512_sub_pd(xd, _mm512_mul_pd(_mm512_set1_pd((double)sw), rd));
      r2 = _mm512_add_pd(r2, _mm512_mul_pd(d, d));
    }
  }
  meta[n] = sw;
  meta[N + n] = nextafterf((float)(_mm512_reduce_add_pd(l1) * (1 + 1e-9)), INFINITY);
  meta[2 * N + n] = nextafterf((float)(sqrt(_mm512_reduce_add_pd(r2)) * (1 + 1e-9)), INFINITY);
  meta[3 * N + n] = (float)_mm512_reduce_add_epi32(sum); // |sum| <= 127 K: exact in float for K < 2^17
}

static void prep_task(void *p, int tid, int nt) {
  (void)tid;
  (void)nt;
  prep_job *j = p;
  size_t b;
  int bad = 0;
  while ((b = atomic_fetch_add(&j->next, 1)) < (j->N + 255) / 256) {
    const size_t n1 = (b + 1) * 256 < j->N ? (b + 1) * 256 : j->N;
    for (size_t n = b * 256; n < n1; n++) prep_row(j->w + n * j->K, j->wq + n * j->Kp, j->meta, n, j->N, j->K, j->Kp, &bad);
  }
  if (bad) atomic_store(&j->bad, 1);
}
#endif

int kf_screen_prepare(const float *w, size_t N, size_t K, int8_t *wq, float *meta) {
#if KF_SCREEN
  if (K >= (1u << 17)) return 0;
  prep_job j = {w, wq, meta, N, K, kf_screen_stride(K), 0, 0};
  kf_parallel(prep_task, &j, KF_THREADS);
  return !atomic_load(&j.bad);
#else
  (void)w; (void)N; (void)K; (void)wq; (void)meta;
  return 0;
#endif
}

#if KF_SCREEN
// ---- approximate logits: isum[M, N, 2] = sum_k (q1 + 128) q and sum_k (q2 + 128) q (u8 x s8 dot products; the 128
// offsets are taken out later). Threads take long blocks of weight rows (kf_split_rows: equal blocks of about
// BLOCK_BYTES, the last one of each thread cut into pieces) and walk them in sub-blocks of SB rows;
// every group of up to 4 h rows walks a sub-block with an R rows x 2 parts x 8/R weight rows tile (R = 3: 2; the
// first group streams it from DRAM with software prefetch, the others find it in L2). Blocks of 96 rows claimed one
// at a time cost 13-15% of the integer pass for 1-8 rows against ~1 MB runs per thread (measured, RESULTS.md).
#define SB 96
#define BLOCK_BYTES ((size_t)1 << 20)
typedef struct {
  const uint8_t *xq; // [M][2][Kp]
  const int8_t *wq;
  int32_t *out;
  size_t M, N, Kp, pf; // pf: software prefetch distance in bytes along each weight row
  kf_row_blocks split;
  atomic_size_t next;
} approx_job;

// One level of simd.h's reduction tree on int32 lanes (integer adds are exact, so any order would do; this one keeps
// lane a of the final result = the sum of accumulator a).
KF_INLINE __m512i ilvl(__m512i a, __m512i b, int lvl) {
  const __m512 x = _mm512_castsi512_ps(a), y = _mm512_castsi512_ps(b);
  __m512 lo, hi;
  switch (lvl) {
  case 1: lo = _mm512_shuffle_f32x4(x, y, 0x44); hi = _mm512_shuffle_f32x4(x, y, 0xEE); break;
  case 2: lo = _mm512_shuffle_f32x4(x, y, 0x88); hi = _mm512_shuffle_f32x4(x, y, 0xDD); break;
  case 3: lo = _mm512_shuffle_ps(x, y, 0x44); hi = _mm512_shuffle_ps(x, y, 0xEE); break;
  default: lo = _mm512_shuffle_ps(x, y, 0x88); hi = _mm512_shuffle_ps(x, y, 0xDD); break;
  }
  return _mm512_add_epi32(_mm512_castps_si512(lo), _mm512_castps_si512(hi));
}

// Rows [m0, m0 + R) against weight rows [n0, n1): tiles of NW weight rows x R rows x 2 parts (at most 16
// accumulators), so that one h row (a batch-1 AR step) does a quarter of the integer work of four.
KF_INLINE void approx_rows(const int R, const approx_job *j, size_t m0, size_t n0, size_t n1) {
  const int NW = R == 1 ? 8 : R == 2 ? 4 : 2;
  const size_t Kp = j->Kp, N = j->N;
  const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const uint8_t *x[8]; // (row, part) = 2 * r + part
  for (int r = 0; r < R; r++)
    for (int part = 0; part < 2; part++) x[2 * r + part] = j->xq + ((m0 + r) * 2 + part) * Kp;
  for (size_t n = n0; n < n1; n += NW) {
    const int8_t *w[8]; // weight rows past the block repeat its first (computed, not stored)
    for (int i = 0; i < NW; i++) w[i] = j->wq + (n + i < n1 ? n + i : n) * Kp;
    __m512i acc[16]; // acc[xp * NW + i]: (row, part) xp, weight row i; the rest stay 0
    for (int a = 0; a < 16; a++) acc[a] = _mm512_setzero_si512();
    for (size_t k = 0; k < Kp; k += 64) {
      __m512i wv[8];
      for (int i = 0; i < NW; i++) wv[i] = _mm512_loadu_si512(w[i] + k);
      if (m0 == 0)
        for (int i = 0; i < NW; i++) _mm_prefetch((const char *)(w[i] + k) + j->pf, _MM_HINT_T0);
      for (int xp = 0; xp < 2 * R; xp++) {
        const __m512i xv = _mm512_loadu_si512(x[xp] + k);
        for (int i = 0; i < NW; i++) acc[xp * NW + i] = _mm512_dpbusd_epi32(acc[xp * NW + i], xv, wv[i]);
      }
    }
    __m512i l1[8], l2[4], l3[2];
    for (int a = 0; a < 8; a++) l1[a] = ilvl(acc[2 * a], acc[2 * a + 1], 1);
    for (int a = 0; a < 4; a++) l2[a] = ilvl(l1[2 * a], l1[2 * a + 1], 2);
    for (int a = 0; a < 2; a++) l3[a] = ilvl(l2[2 * a], l2[2 * a + 1], 3);
    int32_t s[16];
    _mm512_storeu_si512(s, _mm512_permutexvar_epi32(perm, ilvl(l3[0], l3[1], 4)));
    for (int r = 0; r < R; r++)
      for (int part = 0; part < 2; part++)
        for (int i = 0; i < NW && n + i < n1; i++) j->out[((m0 + r) * N + n + i) * 2 + part] = s[(2 * r + part) * NW + i];
  }
}

static void approx_task(void *p, int tid, int nt) {
  (void)tid;
  (void)nt;
  approx_job *j = p;
  const size_t M = j->M;
  size_t b;
  while ((b = atomic_fetch_add(&j->next, 1)) < j->split.nblocks) {
    size_t b0, b1;
    kf_block_rows(&j->split, b, &b0, &b1);
    for (size_t n0 = b0; n0 < b1; n0 += SB) {
      const size_t n1 = n0 + SB < b1 ? n0 + SB : b1;
      for (size_t m0 = 0; m0 < M; m0 += 4) {
        switch (M - m0 < 4 ? M - m0 : 4) {
        case 1: approx_rows(1, j, m0, n0, n1); break;
        case 2: approx_rows(2, j, m0, n0, n1); break;
        case 3: approx_rows(3, j, m0, n0, n1); break;
        default: approx_rows(4, j, m0, n0, n1); break;
        }
      }
    }
  }
}

// ---- selection ------------------------------------------------------------------------------------------------------
typedef struct {
  const float *h, *w, *bias;
  const float *sw, *wl1, *wr2, *wsum; // meta: per weight row s_w, bounds of ||w||_1 and ||w - w^||_2, sum of q
  const int32_t *isum; // [M][N][2]
  const double *hq; // per h row: s_h, ||h^||_1, ||h^||_2, max|h| (s_h < 0: the row is not finite)
  size_t K, N;
  const int32_t *rowStart, *takes;
  int32_t *const *counts;
  const double *lambdas;
  int32_t maskIndex;
  int32_t *out;
  size_t kmax, nseq, units;
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

#define C2 (1.0 / 4194304.0) // 2^-22
#define C18 (1.0 / 262144.0) // 2^-18

typedef struct {
  double sh, hl1, hl2, hmax, plam; // s_h, ||h^||_1, ||h^||_2, max|h|, fround(lambda) (0: no penalty)
} slot_consts;

// Bounds of token v's penalised value (scalar form; the vector loop below computes the same for uncounted tokens).
static inline void bounds1(const sel_job *j, const slot_consts *sc, const int32_t *isum, const int32_t *cnt, size_t v,
                           double *lo, double *hi) {
  if ((int32_t)v == j->maskIndex) {
    *lo = *hi = penalised(-1000.0f, cnt[v], sc->plam);
    return;
  }
  const double b = j->bias ? j->bias[v] : 0, sw = j->sw[v], l1 = j->wl1[v], off = 128.0 * (double)j->wsum[v];
  const double a = sc->sh * sw * (((double)isum[2 * v] - off) + ((double)isum[2 * v + 1] - off) * (1.0 / 256)) + b;
  const double t2 = fmin(0.5 * sw * sc->hl1, sc->hl2 * (double)j->wr2[v]);
  const double e = 1.0001 * (sc->sh * (1.0 / 256) * l1 + t2) + C18 * (sc->hmax * l1 + fabs(b)) + 1e-30;
  const double p = cnt[v] && sc->plam != 0 ? (double)(float)(sc->plam * (double)cnt[v]) : 0;
  const double w = C2 * (fabs(a) + e + p);
  *lo = a - e - p - w;
  *hi = a + e - p + w;
}

// Token v through the scan of screened_slot: raises the best lower bound tau and the largest |bound| big, and keeps v
// (with its upper bound) while that bound reaches tau.
static inline void scan1(const sel_job *j, const slot_consts *sc, const int32_t *isum, const int32_t *cnt, size_t v,
                         double *tau, double *big, size_t *nc) {
  double lo, hi;
  bounds1(j, sc, isum, cnt, v, &lo, &hi);
  if (lo > *tau) *tau = lo;
  if (fabs(hi) > *big) *big = fabs(hi);
  if (hi >= *tau) {
    t_cand[*nc] = (int32_t)v;
    t_hi[(*nc)++] = hi;
  }
}

// One slot: the token for row h (exact penalised argmax over the whole vocabulary).
static int32_t screened_slot(const sel_job *j, const float *h, const double *hq, const int32_t *isum,
                             const int32_t *cnt, double lambda) {
  const size_t K = j->K, N = j->N;
  const slot_consts sc = {hq[0], hq[1], hq[2], hq[3], lambda == 0 ? 0 : (double)(float)lambda};
  int full = !(sc.sh >= 0) || !scratch(N, K);
  // One pass: tau = the best lower bound so far (lane-wise in the vector part, which only makes the test looser);
  // every token whose upper bound reaches it is kept with that bound, and the list is cut to the final tau below.
  double tau = -INFINITY, big = 0;
  size_t nc = 0;
  if (!full) {
    size_t v = 0;
    __m512d tv = _mm512_set1_pd(-INFINITY), bigv = _mm512_setzero_pd();
    const __m512d sh = _mm512_set1_pd(sc.sh), sh256 = _mm512_set1_pd(sc.sh / 256), hl1h = _mm512_set1_pd(0.5 * sc.hl1);
    const __m512d hl2 = _mm512_set1_pd(sc.hl2), hmax18 = _mm512_set1_pd(C18 * sc.hmax), c1 = _mm512_set1_pd(1.0001);
    const __m512d c2 = _mm512_set1_pd(C2), c18 = _mm512_set1_pd(C18), inv256 = _mm512_set1_pd(1.0 / 256);
    const __m512d tiny = _mm512_set1_pd(1e-30), k128 = _mm512_set1_pd(128.0);
    const __m512i iota = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    for (; v + 8 <= N; v += 8) {
      const __mmask8 counted = _mm256_test_epi32_mask(_mm256_loadu_si256((const __m256i *)(cnt + v)),
                                                      _mm256_set1_epi32(-1));
      const int has_mask = j->maskIndex >= (int32_t)v && j->maskIndex < (int32_t)(v + 8);
      if (counted || has_mask) {
        for (size_t q = v; q < v + 8; q++) scan1(j, &sc, isum, cnt, q, &tau, &big, &nc);
        continue;
      }
      // the same operations as bounds1, 8 tokens at a time
      const __m512d b = j->bias ? _mm512_cvtps_pd(_mm256_loadu_ps(j->bias + v)) : _mm512_setzero_pd();
      const __m512d sw = _mm512_cvtps_pd(_mm256_loadu_ps(j->sw + v)), l1 = _mm512_cvtps_pd(_mm256_loadu_ps(j->wl1 + v));
      const __m512d r2 = _mm512_cvtps_pd(_mm256_loadu_ps(j->wr2 + v));
      const __m512i pair = _mm512_permutexvar_epi32(even, _mm512_loadu_si512(isum + 2 * v)); // parts 1 | parts 2
      const __m512d i1 = _mm512_cvtepi32_pd(_mm512_castsi512_si256(pair));
      const __m512d i2 = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(pair, 1));
      const __m512d off = _mm512_mul_pd(k128, _mm512_cvtps_pd(_mm256_loadu_ps(j->wsum + v)));
      const __m512d a = _mm512_add_pd(_mm512_mul_pd(_mm512_mul_pd(sh, sw),
                                                    _mm512_add_pd(_mm512_sub_pd(i1, off), _mm512_mul_pd(_mm512_sub_pd(i2, off), inv256))), b);
      const __m512d t2 = _mm512_min_pd(_mm512_mul_pd(hl1h, sw), _mm512_mul_pd(hl2, r2));
      const __m512d e = _mm512_add_pd(
          _mm512_add_pd(_mm512_mul_pd(c1, _mm512_add_pd(_mm512_mul_pd(sh256, l1), t2)),
                        _mm512_add_pd(_mm512_mul_pd(hmax18, l1), _mm512_mul_pd(c18, _mm512_abs_pd(b)))),
          tiny);
      const __m512d w = _mm512_mul_pd(c2, _mm512_add_pd(_mm512_abs_pd(a), e));
      const __m512d lo = _mm512_sub_pd(_mm512_sub_pd(a, e), w), hi = _mm512_add_pd(_mm512_add_pd(a, e), w);
      tv = _mm512_max_pd(tv, lo);
      bigv = _mm512_max_pd(bigv, _mm512_abs_pd(hi));
      const __mmask8 keep = _mm512_cmp_pd_mask(hi, tv, _CMP_GE_OQ) | _mm512_cmp_pd_mask(hi, _mm512_set1_pd(tau), _CMP_GE_OQ);
      if (keep) {
        _mm256_mask_compressstoreu_epi32(t_cand + nc, keep,
                                         _mm512_cvtepi64_epi32(_mm512_add_epi64(iota, _mm512_set1_epi64((long long)v))));
        _mm512_mask_compressstoreu_pd(t_hi + nc, keep, hi);
        nc += (size_t)__builtin_popcount(keep);
      }
    }
    for (; v < N; v++) scan1(j, &sc, isum, cnt, v, &tau, &big, &nc);
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

// Work units: a sequence with a penalty is one unit (its slots in order: each sees the tokens of the slots before
// it in its counts); without one its slots are independent (the counts do not enter the rule), one unit each.
static int independent_slots(const sel_job *j, size_t i) { return j->lambdas[i] == 0; }

// Slot s of sequence i with the counts cnt.
static int32_t slot_of(const sel_job *j, size_t i, size_t s, const int32_t *cnt) {
  const size_t r = (size_t)j->rowStart[i] + s;
  return screened_slot(j, j->h + r * j->K, j->hq + 4 * r, j->isum + 2 * r * j->N, cnt, j->lambdas[i]);
}

static void sel_task(void *p, int tid, int nt) {
  (void)tid;
  (void)nt;
  sel_job *j = p;
  size_t u;
  while ((u = atomic_fetch_add(&j->next, 1)) < j->units) {
    size_t i = 0, s0 = 0;
    for (;; i++) { // the unit's sequence (nseq is a decode batch: a scan is fine)
      const size_t n = independent_slots(j, i) ? (size_t)j->takes[i] : 1;
      if (u < n) {
        s0 = u;
        break;
      }
      u -= n;
    }
    int32_t *cnt = j->counts[i], *o = j->out + i * j->kmax;
    if (independent_slots(j, i)) {
      o[s0] = slot_of(j, i, s0, cnt);
      continue;
    }
    int32_t s;
    for (s = 0; s < j->takes[i]; s++) {
      const int32_t t = slot_of(j, i, (size_t)s, cnt);
      o[s] = t;
      if (t < 0) break;
      cnt[t]++; // later slots of the block see this choice; undone below (the caller records it)
    }
    for (int32_t q = 0; q < s; q++) cnt[o[q]]--;
  }
}
#endif

void kf_screen_select(const float *h, size_t M, size_t K, size_t N, const int8_t *wq, const float *meta,
                      const float *w, const float *bias, int32_t *isum, const int32_t *rowStart, const int32_t *takes,
                      int32_t *const *counts, const double *lambdas, size_t nseq, int32_t maskIndex, size_t kmax,
                      int32_t *out) {
#if KF_SCREEN
  // h rows quantised in two int8 parts, offset to unsigned (u8 x s8 products); per row s_h, ||h^||_1, ||h^||_2, max|h|.
  const size_t Kp = kf_screen_stride(K);
  uint8_t *xq = aligned_alloc(64, (M * 2 * Kp + 63) / 64 * 64);
  double *hq = malloc((M ? M : 1) * 4 * sizeof(double));
  if (!xq || !hq) {
    free(xq);
    free(hq);
    for (size_t i = 0; i < nseq * kmax; i++) out[i] = -2;
    return;
  }
  for (size_t m = 0; m < M; m++) {
    const float *x = h + m * K;
    uint8_t *x1 = xq + m * 2 * Kp, *x2 = x1 + Kp;
    double mx = 0;
    int finite = 1;
    for (size_t k = 0; k < K; k++) {
      if (!isfinite(x[k])) finite = 0;
      else if (fabs((double)x[k]) > mx) mx = fabs((double)x[k]);
    }
    const double s = (double)(float)(mx / 127);
    double l1 = 0, l2 = 0;
    for (size_t k = 0; k < K; k++) {
      double q1 = finite && s > 0 ? nearbyint((double)x[k] / s) : 0;
      q1 = q1 > 127 ? 127 : q1 < -127 ? -127 : q1;
      double q2 = finite && s > 0 ? nearbyint(((double)x[k] - s * q1) / (s / 256)) : 0;
      q2 = q2 > 127 ? 127 : q2 < -127 ? -127 : q2;
      x1[k] = (uint8_t)(q1 + 128);
      x2[k] = (uint8_t)(q2 + 128);
      const double hh = s * (q1 + q2 / 256); // h^: exact (few significant bits)
      l1 += fabs(hh);
      l2 += hh * hh;
    }
    for (size_t k = K; k < Kp; k++) x1[k] = x2[k] = 128; // q = 0 (the weights' padding is 0 too)
    hq[4 * m] = finite ? s : -1;
    hq[4 * m + 1] = l1 * (1 + 1e-12);
    hq[4 * m + 2] = sqrt(l2) * (1 + 1e-12);
    hq[4 * m + 3] = mx;
  }
  // Prefetch 6 KB ahead along each weight row: whole screen for 1 / 4 rows of the official shape (runs/screen-bench.ts,
  // alternating): 4 KB 1.19-1.32 / 1.61-1.90 ms, 6 KB 0.95-1.00 / 1.59-1.77, 8 KB 0.91-1.05 / 1.66-1.95; 2 KB slower.
  approx_job aj = {xq, wq, isum, M, N, Kp, 6144, kf_split_rows(N, Kp, BLOCK_BYTES, 8, 4), 0};
  kf_parallel(approx_task, &aj, KF_THREADS);
  free(xq);
  sel_job sj = {h, w, bias, meta, meta + N, meta + 2 * N, meta + 3 * N, isum, hq, K, N, rowStart, takes, counts,
                lambdas, maskIndex, out, kmax, nseq, 0, 0};
  for (size_t i = 0; i < nseq; i++) sj.units += independent_slots(&sj, i) ? (size_t)takes[i] : 1;
  kf_parallel(sel_task, &sj, sj.units >= 2 ? KF_THREADS : 1);
  free(hq);
#else
  (void)h; (void)M; (void)K; (void)N; (void)wq; (void)meta; (void)w; (void)bias; (void)isum; (void)rowStart;
  (void)takes; (void)counts; (void)lambdas; (void)maskIndex;
  for (size_t i = 0; i < nseq * kmax; i++) out[i] = -2;
#endif
}
