// Token selection kernels (the native side of src/decode/sampling.ts), one call for all rows of a decode step.
//
// The contract is EXACT equality with the TypeScript rules, token for token, so everything here repeats the TS
// arithmetic operation by operation in float64 (the build uses -ffp-contract=off, so no FMA sneaks in):
//  - exp is the algorithm V8's Math.exp uses (an fdlibm-style exp: reduction by ln2 split in a high and a low part,
//    a degree-5 rational approximation, scaling by 2^k; exp(1) is Math.E), evaluated lane-wise, so every lane gives the bits the
//    scalar algorithm (and Math.exp) gives; test/native checks this against Math.exp itself.
//  - the normaliser and the cumulative scan up to the sampled token's block are the TS lane sums (laneSum,
//    blockSum in sampling.ts: 8 lanes, combined in a fixed tree), the rest of the scan serial like the TS loop;
//    exponentials, the maximum and the products are lane-wise, none of which depends on order.
//  - top-p keeps the same prefix of the (probability descending, index ascending) order that TS's full sort gives,
//    found with a partial selection, and sums it in that order.
// Rows are independent, so the result of a row never depends on the batch around it; the two pool threads take rows
// from a shared counter.
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "kf.h"
#ifdef __AVX512F__
#include <immintrin.h>
#endif

// ---- exp (float64) ----------------------------------------------------------------------------------------------
static const double LN2_HI = 6.93147180369123816490e-01; // high bits of ln 2 (k * LN2_HI is exact for |k| < 2^11)
static const double LN2_LO = 1.90821492927058770002e-10;
static const double INV_LN2 = 1.44269504088896338700e+00;
static const double EP1 = 1.66666666666666019037e-01, EP2 = -2.77777777770155933842e-03,
                    EP3 = 6.61375632143793436117e-05, EP4 = -1.65339022054652515390e-06,
                    EP5 = 4.13813679705723846039e-08;
static const double KF_E = 2.718281828459045;
static const double EXP_OVER = 7.09782712893383973096e+02, EXP_UNDER = -7.45133219101941108420e+02;

static double pow2i(int k) { // 2^k for -1022 <= k <= 1023, built from its exponent bits
  union { uint64_t u; double d; } b;
  b.u = (uint64_t)(k + 1023) << 52;
  return b.d;
}

double kf_exp64(double x) {
  union { double d; uint64_t u; } b = {x};
  uint32_t hx = (uint32_t)(b.u >> 32) & 0x7fffffffu;
  int neg = (int)(b.u >> 63);
  if (hx >= 0x40862E42u) { // |x| >= 709.78: overflow, underflow or not finite
    if (hx >= 0x7ff00000u) return isnan(x) ? x + x : (neg ? 0.0 : x);
    if (x > EXP_OVER) return INFINITY;
    if (x < EXP_UNDER) return 0.0;
  }
  double hi = x, lo = 0.0;
  int k = 0;
  if (hx > 0x3fd62e42u) { // |x| > ln2 / 2: reduce
    if (hx < 0x3FF0A2B2u) { // |x| < 1.5 ln2: k = +-1
      if (x == 1.0) return KF_E; // V8 returns Math.E here (the general path is one ulp off)
      hi = neg ? x + LN2_HI : x - LN2_HI;
      lo = neg ? -LN2_LO : LN2_LO;
      k = neg ? -1 : 1;
    } else {
      k = (int)(INV_LN2 * x + (neg ? -0.5 : 0.5));
      double t = (double)k;
      hi = x - t * LN2_HI;
      lo = t * LN2_LO;
    }
    x = hi - lo;
  } else if (hx < 0x3e300000u) { // |x| < 2^-28
    return 1.0 + x;
  }
  double t = x * x;
  double c = x - t * (EP1 + t * (EP2 + t * (EP3 + t * (EP4 + t * EP5))));
  // k = 0 is written (x*c)/(c-2) - x in the scalar algorithm; with lo = 0 and hi = x the general form below gives
  // the same bits, since c-2 = -(2-c) and a/(-b) = -(a/b) exactly.
  double y = 1.0 - ((lo - (x * c) / (2.0 - c)) - hi);
  if (k >= -1021) {
    if (k == 1024) return y * 2.0 * pow2i(1023);
    return y * pow2i(k);
  }
  return y * pow2i(k + 1000) * pow2i(-1000);
}

#ifdef __AVX512F__
// The scalar algorithm's y = exp(r) for r = hi - lo, before the scaling by 2^k (its rational approximation).
static inline __m512d exp_reduced(__m512d hi, __m512d lo) {
  const __m512d r = _mm512_sub_pd(hi, lo);
  const __m512d r2 = _mm512_mul_pd(r, r);
  __m512d p = _mm512_add_pd(_mm512_set1_pd(EP4), _mm512_mul_pd(r2, _mm512_set1_pd(EP5)));
  p = _mm512_add_pd(_mm512_set1_pd(EP3), _mm512_mul_pd(r2, p));
  p = _mm512_add_pd(_mm512_set1_pd(EP2), _mm512_mul_pd(r2, p));
  p = _mm512_add_pd(_mm512_set1_pd(EP1), _mm512_mul_pd(r2, p));
  const __m512d c = _mm512_sub_pd(r, _mm512_mul_pd(r2, p));
  const __m512d q = _mm512_div_pd(_mm512_mul_pd(r, c), _mm512_sub_pd(_mm512_set1_pd(2.0), c));
  return _mm512_sub_pd(_mm512_set1_pd(1.0), _mm512_sub_pd(_mm512_sub_pd(lo, q), hi));
}

// kf_exp64 on 8 lanes; every lane follows the scalar branches through masks, so lane results equal kf_exp64's.
// When every lane is in the general range (1.5 ln2 < |x|, -707 < x < 709: reduction by k = trunc(x / ln2 +- 1/2),
// 2^k a normal number, no special value) the masked steps below all keep the general branch, so that branch alone
// gives the same bits; a softmax's exponentials are nearly all there (the few near its maximum are not).
static inline __m512d exp64x8(__m512d x) {
  const __mmask8 general = _mm512_cmp_pd_mask(_mm512_abs_pd(x), _mm512_set1_pd(1.0397207708399179), _CMP_GT_OQ) &
                           _mm512_cmp_pd_mask(x, _mm512_set1_pd(-707.0), _CMP_GT_OQ) &
                           _mm512_cmp_pd_mask(x, _mm512_set1_pd(709.0), _CMP_LT_OQ);
  if (general == 0xff) {
    const __m512d half = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(x, _mm512_setzero_pd(), _CMP_LT_OQ),
                                              _mm512_set1_pd(0.5), _mm512_set1_pd(-0.5));
    const __m512i k = _mm512_cvttpd_epi64(_mm512_add_pd(_mm512_mul_pd(_mm512_set1_pd(INV_LN2), x), half));
    const __m512d t = _mm512_cvtepi64_pd(k);
    const __m512d hi = _mm512_sub_pd(x, _mm512_mul_pd(t, _mm512_set1_pd(LN2_HI)));
    const __m512d lo = _mm512_mul_pd(t, _mm512_set1_pd(LN2_LO));
    return _mm512_mul_pd(exp_reduced(hi, lo),
                         _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(k, _mm512_set1_epi64(1023)), 52)));
  }
  const __m512i bits = _mm512_castpd_si512(x);
  const __m512i hx = _mm512_and_epi64(_mm512_srli_epi64(bits, 32), _mm512_set1_epi64(0x7fffffff));
  const __mmask8 neg = _mm512_test_epi64_mask(bits, _mm512_set1_epi64((long long)0x8000000000000000ull));
  const __mmask8 reduce = _mm512_cmpgt_epi64_mask(hx, _mm512_set1_epi64(0x3fd62e42));
  const __mmask8 near1 = reduce & _mm512_cmplt_epi64_mask(hx, _mm512_set1_epi64(0x3FF0A2B2));
  const __mmask8 far = reduce & ~near1;
  const __mmask8 tiny = _mm512_cmplt_epi64_mask(hx, _mm512_set1_epi64(0x3e300000));
  const __m512d half = _mm512_mask_blend_pd(neg, _mm512_set1_pd(0.5), _mm512_set1_pd(-0.5));
  // far: k = trunc(x / ln2 +- 1/2); near1: k = +-1; otherwise 0
  __m512i k = _mm512_maskz_cvttpd_epi64(far, _mm512_add_pd(_mm512_mul_pd(_mm512_set1_pd(INV_LN2), x), half));
  k = _mm512_mask_blend_epi64(near1, k, _mm512_mask_blend_epi64(neg, _mm512_set1_epi64(1), _mm512_set1_epi64(-1)));
  const __m512d t = _mm512_cvtepi64_pd(k);
  __m512d hi = _mm512_mask_sub_pd(x, far, x, _mm512_mul_pd(t, _mm512_set1_pd(LN2_HI)));
  __m512d lo = _mm512_maskz_mul_pd(far, t, _mm512_set1_pd(LN2_LO));
  hi = _mm512_mask_blend_pd(near1, hi, _mm512_mask_blend_pd(neg, _mm512_sub_pd(x, _mm512_set1_pd(LN2_HI)),
                                                           _mm512_add_pd(x, _mm512_set1_pd(LN2_HI))));
  lo = _mm512_mask_blend_pd(near1, lo, _mm512_mask_blend_pd(neg, _mm512_set1_pd(LN2_LO), _mm512_set1_pd(-LN2_LO)));
  __m512d y = exp_reduced(hi, lo);
  // scaling: 2^k directly for k >= -1021; 2^(k+1000) then 2^-1000 below; k = 1024 as y * 2 * 2^1023
  const __mmask8 low = _mm512_cmplt_epi64_mask(k, _mm512_set1_epi64(-1021));
  const __mmask8 top = _mm512_cmpeq_epi64_mask(k, _mm512_set1_epi64(1024));
  __m512i ks = _mm512_mask_add_epi64(k, low, k, _mm512_set1_epi64(1000));
  ks = _mm512_mask_blend_epi64(top, ks, _mm512_set1_epi64(1023));
  y = _mm512_mask_mul_pd(y, top, y, _mm512_set1_pd(2.0));
  const __m512d scale = _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(ks, _mm512_set1_epi64(1023)), 52));
  y = _mm512_mul_pd(y, scale);
  y = _mm512_mask_mul_pd(y, low, y, _mm512_set1_pd(pow2i(-1000)));
  // the special ranges, in the scalar order of tests
  y = _mm512_mask_blend_pd(tiny, y, _mm512_add_pd(_mm512_set1_pd(1.0), x));
  y = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(x, _mm512_set1_pd(EXP_UNDER), _CMP_LT_OQ), y, _mm512_setzero_pd());
  y = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(x, _mm512_set1_pd(EXP_OVER), _CMP_GT_OQ), y,
                           _mm512_set1_pd(INFINITY));
  y = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(x, x, _CMP_UNORD_Q), y, _mm512_add_pd(x, x));
  y = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(x, _mm512_set1_pd(1.0), _CMP_EQ_OQ), y, _mm512_set1_pd(KF_E));
  return y;
}
#endif

void kf_exp64_array(double *out, const double *x, size_t n) {
  size_t i = 0;
#ifdef __AVX512F__
  for (; i < n; i += 8) {
    __mmask8 m = n - i >= 8 ? 0xff : (__mmask8)((1u << (n - i)) - 1);
    _mm512_mask_storeu_pd(out + i, m, exp64x8(_mm512_maskz_loadu_pd(m, x + i)));
  }
#endif
  for (; i < n; i++) out[i] = kf_exp64(x[i]);
}

// ---- per-thread scratch ------------------------------------------------------------------------------------------
typedef struct {
  double p;
  int32_t v;
} prob_idx;

static __thread double *t_e;
static __thread size_t t_e_cap;
static __thread prob_idx *t_pi;
static __thread int32_t *t_keep;
static __thread size_t t_pi_cap;

static int ensure_scratch(size_t V, int need_topp) {
  if (t_e_cap < V) {
    free(t_e);
    t_e = malloc(V * sizeof *t_e);
    t_e_cap = t_e ? V : 0;
    if (!t_e) return 0;
  }
  if (need_topp && t_pi_cap < V) {
    free(t_pi);
    free(t_keep);
    t_pi = malloc(2 * V * sizeof *t_pi); // the second half is the radix sort's buffer
    t_keep = malloc(V * sizeof *t_keep);
    t_pi_cap = t_pi && t_keep ? V : 0;
    if (!t_pi_cap) return 0;
  }
  return 1;
}

// ---- AR rule --------------------------------------------------------------------------------------------------------
// ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)): how laneSum / blockSum (sampling.ts) combine their 8 lanes.
static inline double lanes8(const double *l) { return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])); }

// e[v] = exp(logits[v] * (1/T) - max) and their sum in laneSum's order; *m gets the maximum. Same operations as the
// TS expShifted: the products and exponentials are elementwise, the maximum is order-free (NaNs skipped like `x > m`;
// the sign of a zero maximum cannot change any x - m that feeds exp(), as exp(+-0) = 1).
static double exp_shifted(const float *l, size_t V, double invT, double *e, double *m_out) {
  double m = -INFINITY;
  size_t v = 0;
#ifdef __AVX512F__
  const __m512d iv = _mm512_set1_pd(invT);
  __m512d mv = _mm512_set1_pd(-INFINITY);
  for (; v + 8 <= V; v += 8) mv = _mm512_max_pd(_mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(l + v)), iv), mv);
  m = _mm512_reduce_max_pd(mv);
#endif
  for (; v < V; v++) {
    double x = (double)l[v] * invT;
    if (x > m) m = x;
  }
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  v = 0;
#ifdef __AVX512F__
  const __m512d mm = _mm512_set1_pd(m);
  __m512d zv = _mm512_setzero_pd();
  for (; v + 8 <= V; v += 8) {
    const __m512d x = exp64x8(_mm512_sub_pd(_mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(l + v)), iv), mm));
    _mm512_storeu_pd(e + v, x);
    zv = _mm512_add_pd(zv, x);
  }
  _mm512_storeu_pd(lane, zv);
#endif
  for (; v + 8 <= V; v += 8)
    for (int i = 0; i < 8; i++) {
      e[v + i] = kf_exp64((double)l[v + i] * invT - m);
      lane[i] += e[v + i];
    }
  double z = lanes8(lane);
  for (; v < V; v++) {
    e[v] = kf_exp64((double)l[v] * invT - m);
    z += e[v];
  }
  *m_out = m;
  return z;
}

#define CDF_BLOCK 64 // sampling.ts CDF_BLOCK

// blockSum (sampling.ts): the sum of e[v] * invZ over [v0, v0 + 64), lane l adding v0 + l, v0 + l + 8, ... in order.
static inline double block_sum(const double *e, double invZ, size_t v0) {
  double lane[8];
#ifdef __AVX512F__
  const __m512d iz = _mm512_set1_pd(invZ);
  __m512d t = _mm512_mul_pd(_mm512_loadu_pd(e + v0), iz);
  for (int i = 1; i < 8; i++) t = _mm512_add_pd(t, _mm512_mul_pd(_mm512_loadu_pd(e + v0 + 8 * i), iz));
  _mm512_storeu_pd(lane, t);
#else
  for (int l = 0; l < 8; l++) {
    double a = e[v0 + l] * invZ;
    for (int i = 1; i < 8; i++) a += e[v0 + 8 * i + l] * invZ;
    lane[l] = a;
  }
#endif
  return lanes8(lane);
}

// sampleSoftmax's scan (sampling.ts): whole blocks skipped while their running sum stays below u, then token by token.
static int32_t sample_blocked(const double *e, size_t V, double invZ, double u) {
  double c = 0;
  size_t v = 0;
  for (; v + CDF_BLOCK <= V; v += CDF_BLOCK) {
    const double next = c + block_sum(e, invZ, v);
    if (next >= u) break;
    c = next;
  }
  for (; v < V; v++) {
    c += e[v] * invZ;
    if (c >= u) return (int32_t)v;
  }
  return (int32_t)V - 1;
}

// Orders (p descending, index ascending): TS's sort comparator `probs[b] - probs[a] || a - b`.
static inline int before(const prob_idx *a, const prob_idx *b) { return a->p > b->p || (a->p == b->p && a->v < b->v); }

static int cmp_order(const void *x, const void *y) {
  const prob_idx *a = x, *b = y;
  return before(a, b) ? -1 : before(b, a) ? 1 : 0;
}

static int cmp_int(const void *x, const void *y) {
  int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
  return (a > b) - (a < b);
}

// Moves the K first elements of the order into a[0, K) (in any order): a quickselect with median-of-three pivots.
static void select_top(prob_idx *a, size_t n, size_t K) {
  size_t lo = 0, hi = n; // the boundary K lies in [lo, hi)
  while (hi - lo > 16) {
    size_t mid = lo + (hi - lo) / 2;
    prob_idx s[3] = {a[lo], a[mid], a[hi - 1]}, piv;
    if (before(&s[1], &s[0])) { prob_idx t = s[0]; s[0] = s[1]; s[1] = t; }
    if (before(&s[2], &s[1])) { prob_idx t = s[1]; s[1] = s[2]; s[2] = t; }
    if (before(&s[1], &s[0])) { prob_idx t = s[0]; s[0] = s[1]; s[1] = t; }
    piv = s[1];
    // three-way split: [lo, i) before pivot, [i, j) the pivot itself (indices are unique), [j, hi) after
    size_t i = lo, j = lo;
    for (size_t r = lo; r < hi; r++) {
      if (before(&a[r], &piv)) {
        prob_idx t = a[r]; a[r] = a[j]; a[j] = a[i]; a[i] = t;
        i++; j++;
      } else if (!before(&piv, &a[r])) {
        prob_idx t = a[r]; a[r] = a[j]; a[j] = t;
        j++;
      }
    }
    if (K < i) hi = i;
    else if (K > j) lo = j;
    else return;
  }
  qsort(a + lo, hi - lo, sizeof *a, cmp_order);
}

// Stable LSD radix sort of a[0, n) by p descending (8 bits of p's bit pattern per pass; p >= 0, so the bit order is
// the value order). Stability keeps equal probabilities in their incoming (index) order.
static void radix_sort_desc(prob_idx *a, prob_idx *tmp, size_t n) {
  prob_idx *src = a, *dst = tmp;
  for (int shift = 0; shift < 64; shift += 8) {
    size_t cnt[256] = {0};
    for (size_t i = 0; i < n; i++) {
      union { double d; uint64_t u; } b = {src[i].p};
      cnt[255 - ((b.u >> shift) & 255)]++;
    }
    int trivial = 0;
    for (int d = 0; d < 256; d++) trivial |= cnt[d] == n;
    if (trivial) continue; // every element has this digit: the pass would not move anything
    size_t off = 0;
    for (int d = 0; d < 256; d++) {
      size_t c = cnt[d];
      cnt[d] = off;
      off += c;
    }
    for (size_t i = 0; i < n; i++) {
      union { double d; uint64_t u; } b = {src[i].p};
      dst[cnt[255 - ((b.u >> shift) & 255)]++] = src[i];
    }
    prob_idx *t = src;
    src = dst;
    dst = t;
  }
  if (src != a) memcpy(a, src, n * sizeof *a);
}

// topPFilter then inverseCdf (sampling.ts): keeps the shortest prefix of the order whose running sum reaches topP,
// renormalises it by 1/sum and walks it in vocabulary order. A peaked distribution reaches topP within its top 256
// tokens, found by a partial selection; otherwise the whole vocabulary is radix-sorted. Either way the prefix and
// its running sums are those of TS's full sort.
static int32_t sample_top_p(const double *e, size_t V, double invZ, double topP, double u) {
  prob_idx *pi = t_pi;
  for (size_t v = 0; v < V; v++) {
    pi[v].p = e[v] * invZ;
    pi[v].v = (int32_t)v;
  }
  size_t K = V < 256 ? V : 256, keep = 0;
  double c = 0;
  select_top(pi, V, K);
  qsort(pi, K, sizeof *pi, cmp_order);
  while (keep < K && c < topP) c += pi[keep++].p;
  if (c < topP && K < V) {
    for (size_t v = 0; v < V; v++) {
      pi[v].p = e[v] * invZ;
      pi[v].v = (int32_t)v;
    }
    radix_sort_desc(pi, t_pi + V, V);
    keep = 0;
    c = 0;
    while (keep < V && c < topP) c += pi[keep++].p;
  }
  double inv = 1 / c;
  // probs of the kept tokens are (e[v] * invZ) * inv; every other token contributes an exact +0
  double cum = 0;
  if (keep < 64) { // few tokens: sort their indices
    for (size_t i = 0; i < keep; i++) t_keep[i] = pi[i].v;
    qsort(t_keep, keep, sizeof *t_keep, cmp_int);
    for (size_t i = 0; i < keep; i++) {
      int32_t v = t_keep[i];
      cum += (e[v] * invZ) * inv;
      if (cum >= u) return v;
    }
    return (int32_t)V - 1;
  }
  memset(t_keep, 0, V * sizeof *t_keep); // many: flag them and walk the vocabulary
  for (size_t i = 0; i < keep; i++) t_keep[pi[i].v] = 1;
  for (size_t v = 0; v < V; v++) {
    if (!t_keep[v]) continue;
    cum += (e[v] * invZ) * inv;
    if (cum >= u) return (int32_t)v;
  }
  return (int32_t)V - 1;
}

#ifdef __AVX512F__
// Keeps each lane's first maximum of 16 values at indices idx (strictly greater wins), then moves idx 16 on.
static inline void lane_max_step(__m512 x, __m512 *vb, __m512i *vi, __m512i *idx) {
  const __mmask16 gt = _mm512_cmp_ps_mask(x, *vb, _CMP_GT_OQ);
  *vb = _mm512_mask_mov_ps(*vb, gt, x);
  *vi = _mm512_mask_mov_epi32(*vi, gt, *idx);
  *idx = _mm512_add_epi32(*idx, _mm512_set1_epi32(16));
}

// Merges 16 lanes that each hold their first maximum (value vb, index vi) into (*bv, *best): the larger value wins,
// the lower index on equal values.
static inline void merge_lane_maxima(__m512 vb, __m512i vi, float *bv, size_t *best) {
  float bvs[16];
  int32_t bis[16];
  _mm512_storeu_ps(bvs, vb);
  _mm512_storeu_si512(bis, vi);
  for (int j = 0; j < 16; j++)
    if (bvs[j] > *bv || (bvs[j] == *bv && bvs[j] != -INFINITY && (size_t)bis[j] < *best)) {
      *bv = bvs[j];
      *best = (size_t)bis[j];
    }
}
#endif

// First index of the largest value (NaNs never win); -1 when the row is all -inf/NaN and starts with NaN, where the
// TS argmax throws.
static int32_t argmax_f32(const float *l, size_t V) {
  size_t best = 0;
  float bv = -INFINITY;
  size_t v = 0;
#ifdef __AVX512F__
  if (V >= 16) {
    __m512 vb = _mm512_set1_ps(-INFINITY);
    __m512i vi = _mm512_setzero_si512(), idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; v + 16 <= V; v += 16) {
      __m512 x = _mm512_loadu_ps(l + v);
      lane_max_step(x, &vb, &vi, &idx);
    }
    merge_lane_maxima(vb, vi, &bv, &best);
  }
#endif
  for (; v < V; v++)
    if (l[v] > bv) {
      bv = l[v];
      best = v;
    }
  if (bv == -INFINITY && isnan(l[0])) return -1;
  return (int32_t)best;
}

typedef struct {
  float *const *rows;
  size_t n, V;
  const double *temps, *topPs, *us;
  int32_t *out;
  atomic_size_t next;
} ar_job;

static void ar_task(void *arg, int tid, int nt) {
  ar_job *j = arg;
  size_t i;
  while ((i = atomic_fetch_add(&j->next, 1)) < j->n) {
    const float *l = j->rows[i];
    double T = j->temps[i];
    if (T == 0) {
      j->out[i] = argmax_f32(l, j->V);
      continue;
    }
    int topp = j->topPs[i] < 1;
    if (!ensure_scratch(j->V, topp)) {
      j->out[i] = -2;
      continue;
    }
    double m, z = exp_shifted(l, j->V, 1 / T, t_e, &m);
    if (!isfinite(z) || !isfinite(m)) {
      j->out[i] = -1;
      continue;
    }
    double invZ = 1 / z;
    if (topp) {
      j->out[i] = sample_top_p(t_e, j->V, invZ, j->topPs[i], j->us[i]);
      continue;
    }
    j->out[i] = sample_blocked(t_e, j->V, invZ, j->us[i]);
  }
}

void kf_sample_ar(float *const *rows, size_t n, size_t V, const double *temps, const double *topPs,
                  const double *us, int32_t *out) {
  ar_job j = {rows, n, V, temps, topPs, us, out, 0};
  kf_parallel(ar_task, &j, n >= 2 ? KF_THREADS : 1);
}

// ---- PFLM rule ------------------------------------------------------------------------------------------------------
// argmax over v of (counts[v] == 0 ? l[v] : fround(l[v] - fround(lambda * counts[v]))), first maximum; -1 as in
// argmax_f32 for an all-NaN/-inf row starting with NaN. float32 results computed through double like Math.fround.
static int32_t penalised_argmax(const float *l, size_t V, const int32_t *cnt, float lam) {
  size_t best = 0;
  float bv = -INFINITY;
  size_t v = 0;
#ifdef __AVX512F__
  __m512 vb = _mm512_set1_ps(-INFINITY);
  __m512i vi = _mm512_setzero_si512(), idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (; v + 16 <= V; v += 16) {
    __m512 x = _mm512_loadu_ps(l + v);
    __mmask16 pen = _mm512_test_epi32_mask(_mm512_loadu_si512(cnt + v), _mm512_set1_epi32(-1));
    if (pen) {
      float xs[16];
      _mm512_storeu_ps(xs, x);
      for (int q = 0; q < 16; q++)
        if (cnt[v + q]) xs[q] = (float)((double)xs[q] - (double)(float)((double)lam * (double)cnt[v + q]));
      x = _mm512_loadu_ps(xs);
    }
    lane_max_step(x, &vb, &vi, &idx);
  }
  merge_lane_maxima(vb, vi, &bv, &best);
#endif
  for (; v < V; v++) {
    float x = cnt[v] ? (float)((double)l[v] - (double)(float)((double)lam * (double)cnt[v])) : l[v];
    if (x > bv) {
      bv = x;
      best = v;
    }
  }
  if (bv == -INFINITY && isnan(l[0])) return -1;
  return (int32_t)best;
}

// One slot of the PFLM rule on a full row of logits (the mask logit is set here), as pflm_task applies it.
int32_t kf_pflm_slot(float *row, size_t V, const int32_t *cnt, double lambda, int32_t maskIndex) {
  if (maskIndex >= 0 && (size_t)maskIndex < V) row[maskIndex] = -1000.0f;
  return lambda == 0 ? argmax_f32(row, V) : penalised_argmax(row, V, cnt, (float)lambda);
}

typedef struct {
  float *const *blocks;
  int32_t *const *counts;
  const int32_t *takes;
  const double *lambdas;
  size_t n, V;
  int32_t maskIndex;
  int32_t *out; // [n * kmax]
  size_t kmax;
  atomic_size_t next;
} pflm_job;

static void pflm_task(void *arg, int tid, int nt) {
  pflm_job *j = arg;
  size_t i;
  while ((i = atomic_fetch_add(&j->next, 1)) < j->n) {
    float *blk = j->blocks[i];
    int32_t *cnt = j->counts[i];
    int32_t *o = j->out + i * j->kmax;
    int32_t take = j->takes[i], s;
    for (s = 0; s < take; s++) {
      // lambda == 0 is TS's plain argmax; otherwise the penalty uses Math.fround(lambda)
      int32_t t = kf_pflm_slot(blk + (size_t)s * j->V, j->V, cnt, j->lambdas[i], j->maskIndex);
      o[s] = t;
      if (t < 0) break;
      cnt[t]++; // later slots of the block see this choice; undone below (the caller records it)
    }
    for (int32_t q = 0; q < s; q++) cnt[o[q]]--;
  }
}

void kf_select_pflm(float *const *blocks, int32_t *const *counts, const int32_t *takes, const double *lambdas,
                    size_t n, size_t V, size_t kmax, int32_t maskIndex, int32_t *out) {
  pflm_job j = {blocks, counts, takes, lambdas, n, V, maskIndex, out, kmax, 0};
  kf_parallel(pflm_task, &j, n >= 2 ? KF_THREADS : 1);
}
