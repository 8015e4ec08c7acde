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
// time, as q1 = round(h / s_h) (s_h = max|h| / 127): h^ = s_h q1, and e = max_k |h_k - h^_k| (about s_h / 2) is
// measured. The dot products of q with q1 are exact integers (VNNI u8 x s8 dot products into int32), so h^.w^
// (w^ = s_w q) is known to double precision, and
//   |h.w - h^.w^| <= |(h - h^).w| + |h^.(w - w^)|
//                 <= min(e ||w||_1, ||h - h^||_2 ||w||_2) + min((s_w / 2) ||h^||_1, ||h^||_2 ||w - w^||_2)
// (elementwise bounds, or Cauchy-Schwarz with the norms stored per row and measured per h row). The Cauchy-Schwarz
// form of the first term is the smaller one when the rounding errors spread over all of h (for even errors and
// Gaussian-like weight rows, sqrt(K / 3) e ||w||_2 against e ||w||_1: ~0.72 of it): it halved the first round's
// candidates (session 18: 374 -> 187 a slot at 122 tokens, 1853 -> 989 at 1018, where the candidates and the second
// round's gathers grow). The candidates of that first round
// are narrowed by a second one: h's remainder in a second int8 part, q2 = round((h - h^) / (s_h / 256)), gives
// h^^ = s_h (q1 + q2 / 256) with max|h - h^^| about s_h / 512 (measured like e), and the dot products of q with q2,
// for the candidates only, the same bound with h^^ in place of h^: a 256 times smaller first term. (Until session
// 12 both parts went through the whole vocabulary: twice the integer work of the streaming pass, which the DRAM
// stream did not hide: 4 rows 1.56 ms against 1.30 with one part. One part alone keeps ~5 candidates a slot on
// kbench's Gaussian rows, but 430-670 on the random-weight model's flatter logits; the second round brings that back
// to ~20.) The exact kernel's own rounding (<= 48
// FMA roundings a lane, a 4-level tree, the bias add) adds at most 2^-18 (max|h| ||w||_1 + |b|). E = 1.0001 times the
// first bound plus the second plus 1e-30 bounds |A - L| between A = h^.w^ + b and the logit L the full layer
// computes (the 0.0001 and the absolute term cover the double arithmetic here). The penalised value
// P = fround(L - p) (p = fround(lambda * count) when the token was counted) is monotone in L; with lo/hi = A -+ E - p,
// widened by 2^-22 (|A| + E + p) for the float roundings, every token outside {v : hi_v >= max_u lo_u} has P_v < P of
// the best token, strictly: it can neither win nor tie. The candidates are then ranked exactly as sample.c's
// penalised_argmax ranks a full row (first maximum in vocabulary order).
//
// Two phases, so that a penalised block's slots (each sees the tokens of the slots before it in its counts) need not
// run one after another: first every slot, in parallel, finds its candidates and their exact logits with the counts
// as they were, keeping for slot s of a penalised sequence every token whose upper bound reaches the (s + 1)-th
// largest lower bound instead of the largest (slot_candidates says why that is enough); then each sequence ranks its
// slots' candidates in order with the counts as they become.
//
// Rows whose h is not finite, whose bound could overflow, or that keep more than SCREEN_CAP candidates get the full
// fp32 row and kf_pflm_slot (sample.c), as without screening.
#define _GNU_SOURCE
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "kf.h"
#include "simd.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define KF_SCREEN 1
#else
#define KF_SCREEN 0
#endif

#define SCREEN_CAP 2048 // candidates above this: the full row is cheaper than gathering

int kf_screen_supported(void) { return KF_SCREEN; }

// The roofline charges the screen's int8 dot products at this host's rate for them relative to fp32 FMAs: vpdpbusd
// (64 multiply-adds) against vfmadd231ps (16), both on 512-bit registers, 12 independent chains each, one thread,
// best of 7 alternating runs (~10 ms in all, once per process). Zen 4 hosts ran the int8 instruction at about half
// the FMA rate (session 12), Zen 5 hosts at the same rate (session 16).
#if KF_SCREEN
static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

// Twelve named accumulators: with an array GCC copied every dpbusd accumulator to another register each iteration,
// and those copies alone took the measured ratio from 1.0 to 0.71 in some processes.
#define RATE_ACC(T, init) T a0 = init, a1 = init, a2 = init, a3 = init, a4 = init, a5 = init, a6 = init, a7 = init, \
                                a8 = init, a9 = init, a10 = init, a11 = init
#define RATE_STEP(op) \
  a0 = op(a0); a1 = op(a1); a2 = op(a2); a3 = op(a3); a4 = op(a4); a5 = op(a5); \
  a6 = op(a6); a7 = op(a7); a8 = op(a8); a9 = op(a9); a10 = op(a10); a11 = op(a11)

__attribute__((noinline)) static double fma_seconds(long n, float *sink) {
  const __m512 b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-4f);
  RATE_ACC(__m512, _mm512_set1_ps(1e-3f));
#define FMA1(a) _mm512_fmadd_ps(a, b, c)
  const double t0 = now_s();
  for (long r = 0; r < n; r++) {
    RATE_STEP(FMA1);
  }
  const double t = now_s() - t0;
#undef FMA1
  const __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                                               _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7))),
                                 _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
  *sink += _mm512_reduce_add_ps(s);
  return t;
}

__attribute__((noinline)) static double dpbusd_seconds(long n, int *sink) {
  const __m512i x = _mm512_set1_epi8(3), w = _mm512_set1_epi8(-5);
  RATE_ACC(__m512i, _mm512_set1_epi32(1));
#define DP1(a) _mm512_dpbusd_epi32(a, x, w)
  const double t0 = now_s();
  for (long r = 0; r < n; r++) {
    RATE_STEP(DP1);
  }
  const double t = now_s() - t0;
#undef DP1
  const __m512i s = _mm512_add_epi32(
      _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                       _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7))),
      _mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)));
  *sink += _mm512_reduce_add_epi32(s);
  return t;
}
#endif

double kf_screen_int8_ratio(void) {
#if KF_SCREEN
  static double ratio = 0;
  if (ratio > 0) return ratio;
  const long n = 400000; // 4.8 M instructions: ~0.7 ms at this host's rates
  float fs = 0;
  int is = 0;
  double tf = INFINITY, ti = INFINITY;
  for (int r = 0; r < 7; r++) {
    const double a = fma_seconds(n, &fs), b = dpbusd_seconds(n, &is);
    tf = a < tf ? a : tf;
    ti = b < ti ? b : ti;
  }
  ratio = ti > 0 && tf > 0 ? tf / ti : 0.5;
  return ratio;
#else
  return 0;
#endif
}

size_t kf_screen_stride(size_t K) { return (K + 63) / 64 * 64; }

// ---- preparation: int8 rows (zero-padded to a multiple of 64); per row its scale, an L1 norm bound and sum of q ---
// Layout: rows in groups of 4 (the last group padded with zero rows), each group's rows interleaved in 64-byte chunks
// (row 0 bytes 0-63, row 1 bytes 0-63, ..., row 3, row 0 bytes 64-127, ...), so that the integer pass, which walks
// 4 rows at a time, reads one sequential stream per thread: the hardware prefetchers follow it, where 2-8 rows 768 B
// apart ran the 4-row pass at 29 GB/s against 38 with this layout (runs of kbench screen, same process).
#define RG 4 // rows per interleaved group

static size_t wq_offset(size_t n, size_t Kp) { return n / RG * RG * Kp + n % RG * 64; }

// A second copy, lane-major, for the integer pass over 8-16 h rows (approx_lanes): rows in tiles of LT, and within
// a tile, for each 4-byte group g of the row (bytes 4g..4g+3), the LT rows' groups side by side, so that a tile is one
// sequential run of LT * Kp bytes in the order the pass reads it (one group of every row, then the next group).
#define LT 12 // weight rows per lane-major tile

static size_t lanes_base(size_t N, size_t Kp) { return (N + RG - 1) / RG * RG * Kp; }
static size_t lanes_offset(size_t n, size_t Kp) { return n / LT * LT * Kp + n % LT * 4; } // row n's group 0

size_t kf_screen_bytes(size_t N, size_t K) {
  const size_t Kp = kf_screen_stride(K);
  return lanes_base(N, Kp) + (N + LT - 1) / LT * LT * Kp;
}

typedef struct {
  const float *w;
  int8_t *wq;
  float *meta; // [KF_SCREEN_META][N]: s_w, upper bounds of ||w||_1 and of ||w - s_w q||_2, sum of q (an integer),
               // upper bound of ||w||_2
  size_t N, K, Kp;
  atomic_size_t next;
  atomic_int bad;
} prep_job;

#if KF_SCREEN
// One row: max|w| (float, exact), then q = round(w / s_w) as round(w * (1 / s_w)) in float (within 127 * 2^-24 of
// the half-step, which the bound's 1.0001 covers), the sum of q, and double sums of |w|, of w^2 (exact squares) and
// of the exact residuals' squares (w - s_w q is exact in double), each rounded up at the end.
static void prep_row(const float *w, int8_t *q, float *meta, size_t n, size_t N, size_t K, size_t Kp, int *bad) {
  __m512 mx = _mm512_setzero_ps();
  __m512d l1 = _mm512_setzero_pd(), l2 = _mm512_setzero_pd();
  size_t k = 0;
  for (; k < K; k += 16) {
    const __mmask16 m = kf_tail_mask(K - k);
    const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(m, w + k));
    if (_mm512_mask_cmp_ps_mask(m, a, _mm512_set1_ps(INFINITY), _CMP_NLT_UQ)) *bad = 1; // inf or NaN
    mx = _mm512_max_ps(mx, a);
    const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(a));
    const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
    l1 = _mm512_add_pd(l1, _mm512_add_pd(lo, hi));
    l2 = _mm512_add_pd(l2, _mm512_add_pd(_mm512_mul_pd(lo, lo), _mm512_mul_pd(hi, hi)));
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
    _mm_storeu_si128((__m128i *)(q + k / 64 * RG * 64 + k % 64), _mm512_cvtsepi32_epi8(qi));
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
  meta[4 * N + n] = nextafterf((float)(sqrt(_mm512_reduce_add_pd(l2)) * (1 + 1e-9)), INFINITY);
}

static void prep_task(void *p, int tid, int nt) {
  (void)tid;
  (void)nt;
  prep_job *j = p;
  size_t b;
  int bad = 0;
  while ((b = atomic_fetch_add(&j->next, 1)) < (j->N + 255) / 256) {
    const size_t n1 = (b + 1) * 256 < j->N ? (b + 1) * 256 : j->N;
    for (size_t n = b * 256; n < n1; n++) {
      int8_t *q = j->wq + wq_offset(n, j->Kp);
      prep_row(j->w + n * j->K, q, j->meta, n, j->N, j->K, j->Kp, &bad);
      int8_t *lanes = j->wq + lanes_base(j->N, j->Kp) + lanes_offset(n, j->Kp);
      for (size_t k = 0; k < j->Kp; k += 4) memcpy(lanes + k * LT, q + k / 64 * RG * 64 + k % 64, 4);
    }
  }
  if (bad) atomic_store(&j->bad, 1);
}
#endif

int kf_screen_prepare(const float *w, size_t N, size_t K, int8_t *wq, float *meta) {
#if KF_SCREEN
  if (K >= (1u << 17)) return 0;
  prep_job j = {w, wq, meta, N, K, kf_screen_stride(K), 0, 0};
  for (size_t n = N; n % RG; n++) // the last group's padding rows
    for (size_t k = 0; k < j.Kp; k += 64) memset(wq + wq_offset(n, j.Kp) + k * RG, 0, 64);
  for (size_t n = N; n % LT; n++) // and the last lane-major tile's
    for (size_t k = 0; k < j.Kp; k += 4) memset(wq + lanes_base(N, j.Kp) + lanes_offset(n, j.Kp) + k * LT, 0, 4);
  kf_parallel(prep_task, &j, KF_THREADS);
  return !atomic_load(&j.bad);
#else
  (void)w; (void)N; (void)K; (void)wq; (void)meta;
  return 0;
#endif
}

#if KF_SCREEN
// ---- approximate logits: isum[M, N] = sum_k (q1 + 128) q (u8 x s8 dot products; the 128 offset is taken out
// later). Threads take long blocks of weight rows (kf_split_rows: equal blocks of about BLOCK_BYTES, the last one of
// each thread cut into pieces) and walk them in sub-blocks of SB rows; every group of up to 4 h rows walks a sub-block
// with an R rows x 4 weight rows tile (one interleaved group of the layout; the first group of h rows streams it
// from DRAM with software prefetch, the others find it in L2). Blocks of 96 rows claimed one at a time cost 13-15% of
// the integer pass for 1-8 rows against ~1 MB runs per thread (measured, RESULTS.md).
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

// Rows [m0, m0 + R) against weight rows [n0, n1) (n0 a multiple of RG): one RG-row group at a time, R x RG
// accumulators (at most 16). Rows of the last group past n1 are computed, not stored.
KF_INLINE void approx_rows(const int R, const approx_job *j, size_t m0, size_t n0, size_t n1, const char *pf2,
                            size_t pf2_step) {
  const size_t Kp = j->Kp, N = j->N;
  const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const uint8_t *x[4];
  for (int r = 0; r < R; r++) x[r] = j->xq + (m0 + r) * Kp;
  for (size_t n = n0; n < n1; n += RG) {
    const int8_t *wg = j->wq + wq_offset(n, Kp);
    __m512i acc[16]; // acc[r * RG + i]: h row r, weight row i; the rest stay 0
    for (int a = 0; a < 16; a++) acc[a] = _mm512_setzero_si512();
    for (size_t k = 0; k < Kp; k += 64) {
      __m512i wv[RG];
      for (int i = 0; i < RG; i++) wv[i] = _mm512_loadu_si512(wg + k * RG + 64 * i);
      if (m0 == 0)
        for (int i = 0; i < RG; i++) _mm_prefetch((const char *)(wg + k * RG + 64 * i) + j->pf, _MM_HINT_T0);
      else if (pf2) {
        _mm_prefetch(pf2, _MM_HINT_T1);
        pf2 += pf2_step;
      }
      for (int r = 0; r < R; r++) {
        const __m512i xv = _mm512_loadu_si512(x[r] + k);
        for (int i = 0; i < RG; i++) acc[r * RG + i] = _mm512_dpbusd_epi32(acc[r * RG + i], xv, wv[i]);
      }
    }
    __m512i l1[8], l2[4], l3[2];
    for (int a = 0; a < 8; a++) l1[a] = ilvl(acc[2 * a], acc[2 * a + 1], 1);
    for (int a = 0; a < 4; a++) l2[a] = ilvl(l1[2 * a], l1[2 * a + 1], 2);
    for (int a = 0; a < 2; a++) l3[a] = ilvl(l2[2 * a], l2[2 * a + 1], 3);
    int32_t s[16];
    _mm512_storeu_si512(s, _mm512_permutexvar_epi32(perm, ilvl(l3[0], l3[1], 4)));
    for (int r = 0; r < R; r++)
      for (int i = 0; i < RG && n + i < n1; i++) j->out[(m0 + r) * N + n + i] = s[r * RG + i];
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
      // From 9 h rows on (17 while approx_lanes takes 8-16), the passes after the first read this sub-block from L2
      // while DRAM would idle, so they prefetch the next one into L2, each pass its share, spread over its k steps
      // (kbench screen, alternating runs: 16 rows 2.0 -> 1.6 ms for the integer pass, 12 rows 1.75 -> 1.53, 32 rows
      // 3.5 -> 3.05; at 8 rows, one such pass, it was no faster).
      const size_t passes = (M + 3) / 4, nn1 = n1 + SB < b1 ? n1 + SB : b1;
      const size_t next_bytes = passes >= 3 && nn1 > n1 ? (nn1 - n1 + RG - 1) / RG * RG * j->Kp : 0;
      const size_t steps = (n1 - n0 + RG - 1) / RG * (j->Kp / 64);
      const char *next = (const char *)(j->wq + wq_offset(n1, j->Kp));
      for (size_t m0 = 0, g = 0; m0 < M; m0 += 4, g++) {
        const char *pf2 = NULL;
        size_t pf2_step = 0;
        if (g > 0 && next_bytes > 0) {
          const size_t lo = next_bytes * (g - 1) / (passes - 1), hi = next_bytes * g / (passes - 1);
          pf2 = next + lo;
          pf2_step = (hi - lo + steps - 1) / steps;
        }
        switch (M - m0 < 4 ? M - m0 : 4) {
        case 1: approx_rows(1, j, m0, n0, n1, pf2, pf2_step); break;
        case 2: approx_rows(2, j, m0, n0, n1, pf2, pf2_step); break;
        case 3: approx_rows(3, j, m0, n0, n1, pf2, pf2_step); break;
        default: approx_rows(4, j, m0, n0, n1, pf2, pf2_step); break;
        }
      }
    }
  }
}

// The same sums from the lane-major copy, for 8-16 h rows: the rows across the vector lanes (4 bytes of a row a lane),
// each weight row's 4 bytes broadcast to them, so one u8 x s8 dot product instruction adds 4 terms to 16 (row, token)
// sums, each weight is read once, and no reduction across lanes is left at the end. The dot form above reduces every
// (row, token) sum across lanes and walks each weight block once per 4 h rows. Integer sums are exact: both give the
// same isum. kbench screen, alternating (RESULTS.md, session 16): integer pass at 8 rows 1.11-1.16 -> 1.05-1.06 ms,
// 12 rows 1.42-1.45 -> 1.08-1.10, 16 rows 1.58-1.64 -> 1.23-1.34; two row vectors (32 rows, half tiles to fit the
// accumulators in registers) were no faster than the dot form, so larger steps keep it.
#define LANES_MIN 8
#define LANES_MAX 16

typedef struct {
  const uint8_t *xl; // [Kp / 4][64]: h row l's bytes 4g..4g+3 at g * 64 + 4 l
  const int8_t *lanes;
  int32_t *out;
  size_t M, N, Kp, tiles, claim;
  atomic_size_t next;
} lanes_job;

typedef int32_t kf_i32u __attribute__((may_alias, aligned(1)));

// The h rows against tile t: LT accumulators, one per weight row, lane l = h row l.
KF_INLINE void lanes_tile(const lanes_job *j, size_t t) {
  const size_t G = j->Kp / 4;
  const int8_t *tile = j->lanes + t * LT * j->Kp;
  __m512i acc[LT];
  for (int i = 0; i < LT; i++) acc[i] = _mm512_setzero_si512();
  for (size_t g = 0; g < G; g++) {
    const int8_t *wg = tile + g * LT * 4;
    _mm_prefetch((const char *)wg + 4096, _MM_HINT_T0);
    const __m512i xv = _mm512_load_si512(j->xl + g * 64);
    for (int i = 0; i < LT; i++)
      acc[i] = _mm512_dpbusd_epi32(acc[i], xv, _mm512_set1_epi32(*(const kf_i32u *)(wg + 4 * i)));
  }
  int32_t buf[LT][16] __attribute__((aligned(64)));
  for (int i = 0; i < LT; i++) _mm512_store_si512(buf[i], acc[i]);
  const size_t n0 = t * LT, nn = j->N - n0 < LT ? j->N - n0 : LT;
  for (size_t l = 0; l < j->M; l++) {
    int32_t *o = j->out + l * j->N + n0;
    for (size_t i = 0; i < nn; i++) o[i] = buf[i][l];
  }
}

static void lanes_task(void *p, int tid, int nt) {
  (void)tid;
  (void)nt;
  lanes_job *j = p;
  size_t c;
  while ((c = atomic_fetch_add(&j->next, 1)) * j->claim < j->tiles) {
    const size_t t1 = (c + 1) * j->claim < j->tiles ? (c + 1) * j->claim : j->tiles;
    for (size_t t = c * j->claim; t < t1; t++) lanes_tile(j, t);
  }
}

// isum[M][N] from the lane-major copy for LANES_MIN-LANES_MAX rows, and in two passes (16 rows, then the rest) for
// 25-32, unless KFORCE_SCREEN_LANES=0 (the tests compare both layouts' sums); xq holds the h rows' first part [M][Kp].
// 0: not taken (or out of memory), use the dot form. Two passes re-stream the copy, and still beat the dot form there
// (session 17, kbench screen, alternating binaries: 32 rows 4.58-4.65 -> 3.96-4.06 ms, 26 rows 3.79-3.92 ->
// 3.43-3.61); at 20-24 rows they do not (20: 2.79-2.94 -> 3.03-3.47, 24 equal).
static int approx_lanes(const uint8_t *xq, const int8_t *wq, int32_t *isum, size_t M, size_t N, size_t Kp) {
  const char *e = getenv("KFORCE_SCREEN_LANES");
  if (M < LANES_MIN || (M > LANES_MAX && M <= LANES_MAX + LANES_MIN) || M > 2 * LANES_MAX || (e && !strcmp(e, "0")))
    return 0;
  const size_t G = Kp / 4;
  uint8_t *xl = aligned_alloc(64, G * 64);
  if (!xl) return 0;
  for (size_t m0 = 0; m0 < M; m0 += LANES_MAX) {
    const size_t mr = M - m0 < LANES_MAX ? M - m0 : LANES_MAX;
    memset(xl, 0, G * 64);
    for (size_t m = 0; m < mr; m++)
      for (size_t g = 0; g < G; g++) memcpy(xl + g * 64 + m * 4, xq + (m0 + m) * Kp + 4 * g, 4);
    // claims of 64 tiles (~590 KB of the official shape's copy): long sequential runs, balanced ends
    lanes_job j = {xl, wq + lanes_base(N, Kp), isum + m0 * N, mr, N, Kp, (N + LT - 1) / LT, 64, 0};
    kf_parallel(lanes_task, &j, KF_THREADS);
  }
  free(xl);
  return 1;
}

// ---- selection ------------------------------------------------------------------------------------------------------
typedef struct {
  const float *h, *w, *bias;
  const float *sw, *wl1, *wr2, *wsum, *wl2; // meta: per weight row s_w, bounds of ||w||_1 and ||w - w^||_2, sum of q,
                                           // bound of ||w||_2
  const int32_t *isum; // [M][N]
  const double *hq; // per h row (HQ values): s_h, max|h|, then ||h^||_1, ||h^||_2, max|h - h^| and the same three for
                    // h^^, then ||h - h^||_2 and ||h - h^^||_2 (s_h < 0: the row is not finite)
  const uint8_t *xq2; // per h row its second part q2 + 128 [M][Kp]
  const int8_t *wq;
  size_t Kp;
  size_t K, N;
  const int32_t *rowStart, *takes;
  int32_t *const *counts;
  const double *lambdas;
  int32_t maskIndex;
  int32_t *out;
  size_t kmax, nseq, units;
  atomic_size_t next;
  int32_t *cn;  // per slot row: its candidates' count, or -1: rank the full row in the second phase
  int32_t *cid; // [M][SCREEN_CAP] candidates (vocabulary order)
  float *cl;    // [M][SCREEN_CAP] their exact logits
} sel_job;

#define HQ 10 // values per h row in sel_job.hq
#define REFINE_MIN 4 // candidates above this go through the second round
#define REFINE_MAX 16384 // first-round candidates above this: nearly flat logits, where the second round (768 bytes of
                         // int8 row each, up to the whole copy) would end past SCREEN_CAP anyway: the full row at once

static __thread float *t_row;
static __thread int32_t *t_cand, *t_s2;
static __thread double *t_hi, *t_top;
static __thread size_t t_cap_n, t_cap_t;

static int scratch(size_t N, size_t T) {
  if (t_cap_t < T) {
    free(t_top);
    t_top = malloc(T * sizeof(double));
    t_cap_t = t_top ? T : 0;
    if (!t_top) return 0;
  }
  if (t_cap_n >= N) return 1;
  free(t_s2);
  free(t_row);
  free(t_cand);
  free(t_hi);
  t_s2 = malloc(N * sizeof(int32_t));
  t_row = aligned_alloc(64, (N * sizeof(float) + 63) / 64 * 64);
  t_cand = malloc(N * sizeof(int32_t));
  t_hi = malloc(N * sizeof(double));
  const int ok = t_s2 && t_row && t_cand && t_hi;
  t_cap_n = ok ? N : 0;
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
  double sh, hmax, plam; // s_h, max|h|, fround(lambda) (0: no penalty)
  double hl1[2], hl2[2], einf[2], dl2[2]; // round r (0: h^, 1: h^^): its L1 and L2 norms, max|h - approximation|
                                          // and ||h - approximation||_2
} slot_consts;

// Bounds of token v's penalised value in round r, given dot = the approximation's dot product with q divided by s_h
// (exact in double: integers, and a multiple of 1/256). The vector loop of slot_candidates computes the same in round 0
// for uncounted tokens.
static inline void bounds_at(const sel_job *j, const slot_consts *sc, int r, double dot, const int32_t *cnt, size_t v,
                             double *lo, double *hi) {
  if ((int32_t)v == j->maskIndex) {
    *lo = *hi = penalised(-1000.0f, cnt[v], sc->plam);
    return;
  }
  const double b = j->bias ? j->bias[v] : 0, sw = j->sw[v], l1 = j->wl1[v];
  const double a = sc->sh * sw * dot + b;
  const double t2 = fmin(0.5 * sw * sc->hl1[r], sc->hl2[r] * (double)j->wr2[v]);
  const double t1 = fmin(sc->einf[r] * l1, sc->dl2[r] * (double)j->wl2[v]);
  const double e = 1.0001 * (t1 + t2) + C18 * (sc->hmax * l1 + fabs(b)) + 1e-30;
  const double p = cnt[v] && sc->plam != 0 ? (double)(float)(sc->plam * (double)cnt[v]) : 0;
  const double w = C2 * (fabs(a) + e + p);
  *lo = a - e - p - w;
  *hi = a + e - p + w;
}

static inline void bounds1(const sel_job *j, const slot_consts *sc, const int32_t *isum, const int32_t *cnt, size_t v,
                           double *lo, double *hi) {
  bounds_at(j, sc, 0, (double)isum[v] - 128.0 * (double)j->wsum[v], cnt, v, lo, hi);
}

// Second round for token v, given s2 = sum_k (q2 + 128) q over its int8 row: the bounds with h^^.
static inline void bounds2(const sel_job *j, const slot_consts *sc, int32_t s2, const int32_t *isum,
                           const int32_t *cnt, size_t v, double *lo, double *hi) {
  const double off = 128.0 * (double)j->wsum[v];
  const double dot = ((double)isum[v] - off) + ((double)s2 - off) * (1.0 / 256);
  bounds_at(j, sc, 1, dot, cnt, v, lo, hi);
}

// The candidates' rows are scattered and cold: both loops below walk 16 of them at once (16 independent misses in
// flight) and prefetch the next 16 line by line as they go.
#define GATHER 16

// s2[c] = sum_k (q2 + 128) q over the int8 row of token cand[c], c < n.
static void second_sums(const sel_job *j, const uint8_t *x2, const int32_t *cand, size_t n, int32_t *s2) {
  const size_t Kp = j->Kp;
  for (size_t c0 = 0; c0 < n; c0 += GATHER) {
    const int8_t *wr[GATHER];
    const char *nx[GATHER];
    for (int c = 0; c < GATHER; c++) {
      wr[c] = j->wq + wq_offset((size_t)cand[c0 + c < n ? c0 + c : c0], Kp);
      const size_t q = c0 + GATHER + c;
      nx[c] = q < n ? (const char *)(j->wq + wq_offset((size_t)cand[q], Kp)) : NULL;
    }
    __m512i acc[GATHER];
    for (int c = 0; c < GATHER; c++) acc[c] = _mm512_setzero_si512();
    for (size_t k = 0; k < Kp; k += 64) {
      const __m512i xv = _mm512_loadu_si512(x2 + k);
      for (int c = 0; c < GATHER; c++) {
        acc[c] = _mm512_dpbusd_epi32(acc[c], xv, _mm512_loadu_si512(wr[c] + k * RG));
        if (nx[c]) _mm_prefetch(nx[c] + k * RG, _MM_HINT_T0);
      }
    }
    for (size_t c = 0; c < GATHER && c0 + c < n; c++) s2[c0 + c] = _mm512_reduce_add_epi32(acc[c]);
  }
}

// out[c] = the exact logit of token cand[c] (c < n; the mask token's entry is left to the caller), with kf_linear's
// arithmetic for one output (16 lane accumulators over k ascending, masked zero tail, kf_reduce16's tree, then the
// bias): the bits the full layer gives it.
static void exact_logits(const sel_job *j, const float *h, const int32_t *cand, size_t n, float *out) {
  const size_t K = j->K;
  for (size_t c0 = 0; c0 < n; c0 += GATHER) {
    const float *wr[GATHER];
    const char *nx[GATHER];
    for (int c = 0; c < GATHER; c++) {
      const int32_t v = cand[c0 + c < n ? c0 + c : c0];
      wr[c] = j->w + (v == j->maskIndex ? 0 : (size_t)v) * K;
      const size_t q = c0 + GATHER + c;
      nx[c] = q < n && cand[q] != j->maskIndex ? (const char *)(j->w + (size_t)cand[q] * K) : NULL;
    }
    __m512 acc[GATHER];
    for (int c = 0; c < GATHER; c++) acc[c] = _mm512_setzero_ps();
    for (size_t k = 0; k < K; k += 16) {
      const __mmask16 m = kf_tail_mask(K - k);
      const __m512 hv = _mm512_maskz_loadu_ps(m, h + k);
      for (int c = 0; c < GATHER; c++) {
        acc[c] = _mm512_fmadd_ps(hv, _mm512_maskz_loadu_ps(m, wr[c] + k), acc[c]);
        if (nx[c]) _mm_prefetch(nx[c] + k * sizeof(float), _MM_HINT_T0);
      }
    }
    float s[16];
    _mm512_storeu_ps(s, kf_reduce16(acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7], acc[8], acc[9],
                                    acc[10], acc[11], acc[12], acc[13], acc[14], acc[15]));
    for (size_t c = 0; c < GATHER && c0 + c < n; c++) {
      const int32_t v = cand[c0 + c];
      out[c0 + c] = j->bias ? s[c] + j->bias[v] : s[c];
    }
  }
}

// The T largest lower bounds seen (descending, n of them) and the threshold they give: the T-th largest, -inf while
// fewer than T were seen.
typedef struct {
  double *v;
  size_t T, n;
  double thr;
} top_t;

static inline void top_push(top_t *t, double x) {
  if (t->n == t->T && !(x > t->v[t->T - 1])) return;
  size_t i = t->n < t->T ? t->n++ : t->T - 1;
  for (; i > 0 && t->v[i - 1] < x; i--) t->v[i] = t->v[i - 1];
  t->v[i] = x;
  if (t->n == t->T) t->thr = t->v[t->T - 1];
}

// Token v through the scan of slot_candidates: its lower bound into top, the largest |bound| into big, and v kept
// (with its upper bound) while that bound reaches top's threshold.
static inline void scan1(const sel_job *j, const slot_consts *sc, const int32_t *isum, const int32_t *cnt, size_t v,
                         top_t *top, double *big, size_t *nc) {
  double lo, hi;
  bounds1(j, sc, isum, cnt, v, &lo, &hi);
  if (lo > top->thr) top_push(top, lo);
  if (fabs(hi) > *big) *big = fabs(hi);
  if (hi >= top->thr) {
    t_cand[*nc] = (int32_t)v;
    t_hi[(*nc)++] = hi;
  }
}

// First phase for one slot row r: the candidates that can still be the token under any counts that differ from cnt
// by at most T - 1 more tokens (the slots before it in its sequence, when it has a penalty; T = 1 without one), with
// their exact logits, into j->cn/cid/cl. Why T: those tokens only lose value (the penalised value is monotone in the
// count), so the best lower bound under the final counts is at least the T-th largest one under cnt (one of the T
// best tokens is unchanged), and every token that can win then has an upper bound under cnt that reaches it.
static void slot_candidates(sel_job *j, size_t r, size_t T, const int32_t *cnt, double lambda) {
  const size_t K = j->K, N = j->N;
  const double *hq = j->hq + HQ * r;
  const float *h = j->h + r * K;
  const int32_t *isum = j->isum + r * N;
  const uint8_t *x2 = j->xq2 + r * j->Kp;
  const slot_consts sc = {hq[0], hq[1], lambda == 0 ? 0 : (double)(float)lambda, {hq[2], hq[5]}, {hq[3], hq[6]},
                          {hq[4], hq[7]}, {hq[8], hq[9]}};
  j->cn[r] = -1;
  if (!(sc.sh >= 0) || !scratch(N, T)) return;
  // One pass: top = the T best lower bounds so far; every token whose upper bound reaches their threshold is kept
  // with that bound, and the list is cut to the final threshold below.
  top_t top = {t_top, T, 0, -INFINITY};
  double big = 0;
  size_t nc = 0;
  { // the first round over the vocabulary; its vector constants end with it
    size_t v = 0;
    __m512d bigv = _mm512_setzero_pd();
    const __m512d sh = _mm512_set1_pd(sc.sh), einf = _mm512_set1_pd(sc.einf[0]), hl1h = _mm512_set1_pd(0.5 * sc.hl1[0]);
    const __m512d hl2 = _mm512_set1_pd(sc.hl2[0]), hmax18 = _mm512_set1_pd(C18 * sc.hmax), c1 = _mm512_set1_pd(1.0001);
    const __m512d c2 = _mm512_set1_pd(C2), c18 = _mm512_set1_pd(C18), dl2 = _mm512_set1_pd(sc.dl2[0]);
    const __m512d tiny = _mm512_set1_pd(1e-30), k128 = _mm512_set1_pd(128.0);
    const __m512i iota = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    for (; v + 8 <= N; v += 8) {
      const __mmask8 counted = _mm256_test_epi32_mask(_mm256_loadu_si256((const __m256i *)(cnt + v)),
                                                      _mm256_set1_epi32(-1));
      const int has_mask = j->maskIndex >= (int32_t)v && j->maskIndex < (int32_t)(v + 8);
      if (counted || has_mask) {
        for (size_t q = v; q < v + 8; q++) scan1(j, &sc, isum, cnt, q, &top, &big, &nc);
        continue;
      }
      // the same operations as bounds1, 8 tokens at a time
      const __m512d b = j->bias ? _mm512_cvtps_pd(_mm256_loadu_ps(j->bias + v)) : _mm512_setzero_pd();
      const __m512d sw = _mm512_cvtps_pd(_mm256_loadu_ps(j->sw + v)), l1 = _mm512_cvtps_pd(_mm256_loadu_ps(j->wl1 + v));
      const __m512d r2 = _mm512_cvtps_pd(_mm256_loadu_ps(j->wr2 + v)), n2 = _mm512_cvtps_pd(_mm256_loadu_ps(j->wl2 + v));
      const __m512d i1 = _mm512_cvtepi32_pd(_mm256_loadu_si256((const __m256i *)(isum + v)));
      const __m512d off = _mm512_mul_pd(k128, _mm512_cvtps_pd(_mm256_loadu_ps(j->wsum + v)));
      const __m512d a = _mm512_add_pd(_mm512_mul_pd(_mm512_mul_pd(sh, sw), _mm512_sub_pd(i1, off)), b);
      const __m512d t1 = _mm512_min_pd(_mm512_mul_pd(einf, l1), _mm512_mul_pd(dl2, n2));
      const __m512d t2 = _mm512_min_pd(_mm512_mul_pd(hl1h, sw), _mm512_mul_pd(hl2, r2));
      const __m512d e = _mm512_add_pd(
          _mm512_add_pd(_mm512_mul_pd(c1, _mm512_add_pd(t1, t2)),
                        _mm512_add_pd(_mm512_mul_pd(hmax18, l1), _mm512_mul_pd(c18, _mm512_abs_pd(b)))),
          tiny);
      const __m512d w = _mm512_mul_pd(c2, _mm512_add_pd(_mm512_abs_pd(a), e));
      const __m512d lo = _mm512_sub_pd(_mm512_sub_pd(a, e), w), hi = _mm512_add_pd(_mm512_add_pd(a, e), w);
      bigv = _mm512_max_pd(bigv, _mm512_abs_pd(hi));
      __mmask8 up = _mm512_cmp_pd_mask(lo, _mm512_set1_pd(top.thr), _CMP_GT_OQ);
      if (up) {
        double l8[8];
        _mm512_storeu_pd(l8, lo);
        for (; up; up &= (__mmask8)(up - 1)) {
          const double x = l8[__builtin_ctz(up)];
          if (x > top.thr) top_push(&top, x);
        }
      }
      const __mmask8 keep = _mm512_cmp_pd_mask(hi, _mm512_set1_pd(top.thr), _CMP_GE_OQ);
      if (keep) {
        _mm256_mask_compressstoreu_epi32(t_cand + nc, keep,
                                         _mm512_cvtepi64_epi32(_mm512_add_epi64(iota, _mm512_set1_epi64((long long)v))));
        _mm512_mask_compressstoreu_pd(t_hi + nc, keep, hi);
        nc += (size_t)__builtin_popcount(keep);
      }
    }
    for (; v < N; v++) scan1(j, &sc, isum, cnt, v, &top, &big, &nc);
    const double bm = _mm512_reduce_max_pd(bigv);
    if (bm > big) big = bm;
    if (!(big < 1e37)) return; // a bound near float overflow (or NaN): rank the full row instead
  }
  double tau = top.thr;
  size_t m = 0;
  for (size_t c = 0; c < nc; c++)
    if (t_hi[c] >= tau) t_cand[m++] = t_cand[c];
  nc = m;
  if (nc > REFINE_MAX) return;
  if (nc > REFINE_MIN) {
    // Second round over the candidates (a superset of the final ones). Every bound is valid, so the threshold may
    // rise to the T-th largest second-round lower bound among them.
    top_t top2 = {t_top, T, 0, -INFINITY};
    int32_t *s2 = t_s2;
    second_sums(j, x2, t_cand, nc, s2);
    for (size_t c = 0; c < nc; c++) {
      double lo, hi;
      bounds2(j, &sc, s2[c], isum, cnt, (size_t)t_cand[c], &lo, &hi);
      if (lo > top2.thr) top_push(&top2, lo);
      t_hi[c] = hi;
    }
    if (top2.thr > tau) tau = top2.thr;
    m = 0;
    for (size_t c = 0; c < nc; c++)
      if (t_hi[c] >= tau) t_cand[m++] = t_cand[c];
    nc = m;
  }
  if (nc > SCREEN_CAP) return;
  // Exact logits of the candidates (the mask's is the constant).
  int32_t *cid = j->cid + r * SCREEN_CAP;
  float *cl = j->cl + r * SCREEN_CAP;
  memcpy(cid, t_cand, nc * sizeof(int32_t));
  exact_logits(j, h, cid, nc, cl);
  for (size_t c = 0; c < nc; c++)
    if (cid[c] == j->maskIndex) cl[c] = -1000.0f;
  j->cn[r] = (int32_t)nc;
}

// Second phase for slot row r: the token by the PFLM rule with the counts cnt, from its candidates (ranked in
// vocabulary order, first maximum wins, as sample.c's penalised argmax), or from the full row.
static int32_t slot_token(const sel_job *j, size_t r, const int32_t *cnt, double lambda) {
  const int32_t nc = j->cn[r];
  if (nc < 0) {
    if (!scratch(j->N, 1)) return -2;
    kf_linear(t_row, j->h + r * j->K, j->w, j->bias, 1, j->K, j->N);
    return kf_pflm_slot(t_row, j->N, cnt, lambda, j->maskIndex);
  }
  const int32_t *cid = j->cid + r * SCREEN_CAP;
  const float *cl = j->cl + r * SCREEN_CAP;
  int32_t best = -1;
  float bv = -INFINITY;
  for (int32_t c = 0; c < nc; c++) {
    const float x = penalised(cl[c], cnt[cid[c]], lambda);
    if (best < 0 || x > bv) {
      bv = x;
      best = cid[c];
    }
  }
  return best;
}

// Slot u of all sequences (in order) as (sequence, slot); nseq is a decode batch: a scan is fine.
static void unit_slot(const sel_job *j, size_t u, size_t *i, size_t *s) {
  for (*i = 0; u >= (size_t)j->takes[*i]; (*i)++) u -= (size_t)j->takes[*i];
  *s = u;
}

// Phase one: every slot is a unit (a sequence with a penalty gives slot s T = s + 1; without one the counts do not
// enter the rule). Phase two: every sequence is a unit, its slots in order, each seeing the tokens of the slots before
// it in its counts.
static void cand_task(void *p, int tid, int nt) {
  (void)tid;
  (void)nt;
  sel_job *j = p;
  size_t u;
  while ((u = atomic_fetch_add(&j->next, 1)) < j->units) {
    size_t i, s;
    unit_slot(j, u, &i, &s);
    slot_candidates(j, (size_t)j->rowStart[i] + s, j->lambdas[i] == 0 ? 1 : s + 1, j->counts[i], j->lambdas[i]);
  }
}

static void pick_task(void *p, int tid, int nt) {
  (void)tid;
  (void)nt;
  sel_job *j = p;
  size_t i;
  while ((i = atomic_fetch_add(&j->next, 1)) < j->nseq) {
    int32_t *cnt = j->counts[i], *o = j->out + i * j->kmax;
    int32_t s;
    for (s = 0; s < j->takes[i]; s++) {
      const int32_t t = slot_token(j, (size_t)j->rowStart[i] + (size_t)s, cnt, j->lambdas[i]);
      o[s] = t;
      if (t < 0) break;
      if (j->lambdas[i] != 0) cnt[t]++; // later slots of the block see this choice; undone below
    }
    if (j->lambdas[i] != 0)
      for (int32_t q = 0; q < s; q++) cnt[o[q]]--;
  }
}
#endif

void kf_screen_select(const float *h, size_t M, size_t K, size_t N, const int8_t *wq, const float *meta,
                      const float *w, const float *bias, int32_t *isum, const int32_t *rowStart, const int32_t *takes,
                      int32_t *const *counts, const double *lambdas, size_t nseq, int32_t maskIndex, size_t kmax,
                      int32_t *out) {
#if KF_SCREEN
  // h rows quantised in two int8 parts, offset to unsigned (u8 x s8 products): q1 [M][Kp] for the streaming pass,
  // then q2 [M][Kp] for the second round; per row (HQ) s_h, max|h|, and for h^ and h^^ their L1 and L2 norms,
  // max|h - approximation| and ||h - approximation||_2 (each difference exact in double up to one rounding, which the
  // 1 + 1e-12 covers, as it covers the double sums of K terms).
  const size_t Kp = kf_screen_stride(K);
  uint8_t *xq = aligned_alloc(64, (M * 2 * Kp + 63) / 64 * 64);
  double *hq = malloc((M ? M : 1) * HQ * sizeof(double));
  if (!xq || !hq) {
    free(xq);
    free(hq);
    for (size_t i = 0; i < nseq * kmax; i++) out[i] = -2;
    return;
  }
  for (size_t m = 0; m < M; m++) {
    const float *x = h + m * K;
    uint8_t *x1 = xq + m * Kp, *x2 = xq + (M + m) * Kp;
    double mx = 0;
    int finite = 1;
    for (size_t k = 0; k < K; k++) {
      if (!isfinite(x[k])) finite = 0;
      else if (fabs((double)x[k]) > mx) mx = fabs((double)x[k]);
    }
    const double s = (double)(float)(mx / 127);
    double l1[2] = {0, 0}, l2[2] = {0, 0}, einf[2] = {0, 0}, d2[2] = {0, 0};
    for (size_t k = 0; k < K; k++) {
      double q1 = finite && s > 0 ? nearbyint((double)x[k] / s) : 0;
      q1 = q1 > 127 ? 127 : q1 < -127 ? -127 : q1;
      double q2 = finite && s > 0 ? nearbyint(((double)x[k] - s * q1) / (s / 256)) : 0;
      q2 = q2 > 127 ? 127 : q2 < -127 ? -127 : q2;
      x1[k] = (uint8_t)(q1 + 128);
      x2[k] = (uint8_t)(q2 + 128);
      const double a[2] = {s * q1, s * (q1 + q2 / 256)}; // h^ and h^^: exact (a float times <= 15 bits)
      for (int r = 0; r < 2; r++) {
        l1[r] += fabs(a[r]);
        l2[r] += a[r] * a[r];
        const double d = finite ? (double)x[k] - a[r] : 0;
        if (fabs(d) > einf[r]) einf[r] = fabs(d);
        d2[r] += d * d;
      }
    }
    for (size_t k = K; k < Kp; k++) x1[k] = x2[k] = 128; // q = 0 (the weights' padding is 0 too)
    double *o = hq + HQ * m;
    o[0] = finite ? s : -1;
    o[1] = mx;
    for (int r = 0; r < 2; r++) {
      o[2 + 3 * r] = l1[r] * (1 + 1e-12);
      o[3 + 3 * r] = sqrt(l2[r]) * (1 + 1e-12);
      o[4 + 3 * r] = einf[r] * (1 + 1e-12);
      o[8 + r] = sqrt(d2[r]) * (1 + 1e-12);
    }
  }
  // Prefetch 6 KB ahead along the stream: the 4-row integer pass of the official shape (session 12, kbench-like
  // harness, alternating): none 1.21 ms, 2 KB 1.07, 6 KB 0.97-1.00, 12 KB 1.04-1.06, 24 KB 1.12-1.16.
  if (!approx_lanes(xq, wq, isum, M, N, Kp)) {
    approx_job aj = {xq, wq, isum, M, N, Kp, 6144, kf_split_rows(N, Kp, BLOCK_BYTES, 8, 4), 0};
    kf_parallel(approx_task, &aj, KF_THREADS);
  }
  int32_t *cn = malloc((M ? M : 1) * sizeof(int32_t)), *cid = malloc((M ? M : 1) * SCREEN_CAP * sizeof(int32_t));
  float *cl = malloc((M ? M : 1) * SCREEN_CAP * sizeof(float));
  if (!cn || !cid || !cl) {
    free(xq); free(hq); free(cn); free(cid); free(cl);
    for (size_t i = 0; i < nseq * kmax; i++) out[i] = -2;
    return;
  }
  sel_job sj = {h, w, bias, meta, meta + N, meta + 2 * N, meta + 3 * N, meta + 4 * N, isum, hq, xq + M * Kp, wq, Kp, K, N,
                rowStart, takes, counts, lambdas, maskIndex, out, kmax, nseq, 0, 0, cn, cid, cl};
  for (size_t i = 0; i < nseq; i++) sj.units += (size_t)takes[i];
  kf_parallel(cand_task, &sj, sj.units >= 2 ? KF_THREADS : 1);
  atomic_store(&sj.next, 0);
  kf_parallel(pick_task, &sj, nseq >= 2 ? KF_THREADS : 1);
  free(xq);
  free(hq);
  free(cn);
  free(cid);
  free(cl);
#else
  (void)h; (void)M; (void)K; (void)N; (void)wq; (void)meta; (void)w; (void)bias; (void)isum; (void)rowStart;
  (void)takes; (void)counts; (void)lambdas; (void)maskIndex;
  for (size_t i = 0; i < nseq * kmax; i++) out[i] = -2;
#endif
}
