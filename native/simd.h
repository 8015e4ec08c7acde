// AVX-512 helpers shared by the hot kernels (defined only under __AVX512F__; KF_INLINE always).
#ifndef KF_SIMD_H
#define KF_SIMD_H

#define KF_INLINE static inline __attribute__((always_inline))

#ifdef __AVX512F__
#include <immintrin.h>
#include <math.h>

// One level of the fixed reduction tree applied to two accumulators at once. Every add pairs two lanes of the SAME
// accumulator, so an accumulator's result never depends on its neighbours: a tile of 16 accumulators reduced
// together gives bit-for-bit what kf_tree16 gives for each one alone.
// Level 1: lane i + lane i+8 (per accumulator). Output: a's 8 partials in lanes 0-7, b's in 8-15.
KF_INLINE __m512 kf_lvl1(__m512 a, __m512 b) {
  return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
}
// Level 2: within each 8-lane half, i + i+4. Output 128-bit lane L holds the 4 partials of input accumulator L.
KF_INLINE __m512 kf_lvl2(__m512 p, __m512 q) {
  return _mm512_add_ps(_mm512_shuffle_f32x4(p, q, 0x88), _mm512_shuffle_f32x4(p, q, 0xDD));
}
// Level 3: within each 128-bit lane, i + i+2.
KF_INLINE __m512 kf_lvl3(__m512 r, __m512 s) {
  return _mm512_add_ps(_mm512_shuffle_ps(r, s, 0x44), _mm512_shuffle_ps(r, s, 0xEE));
}
// Level 4: within each 128-bit lane, i + i+1.
KF_INLINE __m512 kf_lvl4(__m512 t, __m512 u) {
  return _mm512_add_ps(_mm512_shuffle_ps(t, u, 0x88), _mm512_shuffle_ps(t, u, 0xDD));
}

// Reduces n <= 16 accumulators; lane j of the result is the sum of acc[j] (lanes >= n are junk). Missing partners
// at a level are filled with a copy, which is harmless since pairs never mix accumulators.
KF_INLINE __m512 kf_reduce(const __m512 *acc, int n) {
  __m512 l1[8], l2[4], l3[2], l4;
  int n1 = (n + 1) / 2, n2 = (n1 + 1) / 2, n3 = (n2 + 1) / 2;
  for (int i = 0; i < n1; i++) l1[i] = kf_lvl1(acc[2 * i], 2 * i + 1 < n ? acc[2 * i + 1] : acc[2 * i]);
  for (int i = 0; i < n2; i++) l2[i] = kf_lvl2(l1[2 * i], 2 * i + 1 < n1 ? l1[2 * i + 1] : l1[2 * i]);
  for (int i = 0; i < n3; i++) l3[i] = kf_lvl3(l2[2 * i], 2 * i + 1 < n2 ? l2[2 * i + 1] : l2[2 * i]);
  l4 = kf_lvl4(l3[0], n3 > 1 ? l3[1] : l3[0]);
  // After the four levels, 128-bit lane L slot s holds accumulator L + 4s; undo that 4x4 transpose.
  // With fewer accumulators the same holds for the copies' slots, so only indices < n are meaningful.
  const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(perm, l4);
}

// The full 16-accumulator tree on values (no array, so the compiler keeps everything in registers). Lane a of the
// result is the sum of accumulator a.
KF_INLINE __m512 kf_reduce16(__m512 a0, __m512 a1, __m512 a2, __m512 a3, __m512 a4, __m512 a5, __m512 a6, __m512 a7,
                             __m512 a8, __m512 a9, __m512 a10, __m512 a11, __m512 a12, __m512 a13, __m512 a14,
                             __m512 a15) {
  __m512 p0 = kf_lvl1(a0, a1), p1 = kf_lvl1(a2, a3), p2 = kf_lvl1(a4, a5), p3 = kf_lvl1(a6, a7);
  __m512 p4 = kf_lvl1(a8, a9), p5 = kf_lvl1(a10, a11), p6 = kf_lvl1(a12, a13), p7 = kf_lvl1(a14, a15);
  __m512 q0 = kf_lvl2(p0, p1), q1 = kf_lvl2(p2, p3), q2 = kf_lvl2(p4, p5), q3 = kf_lvl2(p6, p7);
  __m512 r0 = kf_lvl3(q0, q1), r1 = kf_lvl3(q2, q3);
  const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(perm, kf_lvl4(r0, r1));
}

// Forces v into a register here: stops the compiler from folding a load into every FMA that uses it (which would
// re-load a shared operand once per use and make the tile load-bound).
#define KF_IN_REG(v) __asm__("" : "+v"(v))

// exp(x) for float lanes: n = round(x log2 e), r = x - n ln2 (two-constant Cody-Waite), degree-7 Taylor on
// |r| <= ln2/2 (truncation error < 1e-8 relative), scaled by 2^n with scalef (handles underflow to 0).
KF_INLINE __m512 kf_exp512(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.72f)), _mm512_set1_ps(-104.0f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606820309417232e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// tanh-form GELU of 16 lanes, x * sigmoid(2u) with u = sqrt(2/pi) (x + 0.044715 x^3): the one definition kf_gelu and
// the linear kernel's fused epilogue share, so that both give the same bits. sigmoid(2u) = 1 / (1 + e): reciprocal
// estimate (14 bits) plus one Newton step (~23 bits) instead of a division, several times cheaper; 1/inf = 0.
KF_INLINE __m512 kf_gelu_tanh512(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
  const __m512 x2 = _mm512_mul_ps(x, x);
  const __m512 u = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f),
                                 _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(0.044715f), x2), x, x));
  const __m512 e = kf_exp512(_mm512_mul_ps(_mm512_set1_ps(-2.0f), u));
  const __m512 den = _mm512_add_ps(one, e);
  __m512 s = _mm512_rcp14_ps(den);
  s = _mm512_mul_ps(s, _mm512_fnmadd_ps(den, s, two));
  s = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(den, _mm512_set1_ps(INFINITY), _CMP_LT_OQ), s);
  return _mm512_mul_ps(x, s);
}

KF_INLINE __mmask16 kf_tail_mask(size_t left) {
  return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

#endif
#endif
