// out[M,N] = x[M,K] @ w[N,K]^T (+ bias): the hot kernel of every forward pass.
//
// Arithmetic contract (what makes it row-invariant): every output element is one dot product computed with 16 lane
// accumulators walked over k in ascending order (masked, zero-filled tail), reduced by the fixed pairwise tree of
// kf_tree16, then bias added. Tiles of any shape only decide which dot products share loads; they never change
// an output's operations, so a row gives the same bits whatever M is, where it sits, and which tile it lands in.
//
// Work split: both threads pull blocks of weight rows (N) from a shared counter; K is never split. Inside a block
// the loop runs over x-row tiles of up to 8 rows and, for each, over pairs of weight rows: with few rows (decode) each
// weight row is streamed from DRAM exactly once for all x rows; with many rows the block is sized to stay in L2 and
// is reused from there by every x tile.
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "kf.h"
#include "simd.h"

#define MR_MAX 8 // rows up to which the weights are streamed from DRAM exactly once per block pass

typedef struct {
  float *out;
  const float *x, *w, *bias;
  size_t M, K, N;
  size_t nb;       // weight rows per block
  size_t nblocks;
  atomic_size_t next;
} lin_job;

static size_t pf_bytes = 0; // software prefetch distance along the weight stream (0: default chosen per K)
static int pf_init = 0;

#ifdef __AVX512F__

// One register tile: NR (<= 4) weight rows x MR (<= 4) x rows, 16 accumulators at most, all reduced by a single tree.
// PF: prefetch the weight stream ahead (worth it only on the first pass over a block, which comes from DRAM).
KF_INLINE void tile(const int NR, const int MR, const int PF, const float *x, const float *w, const float *bias,
                    float *out, size_t K, size_t N, size_t pfd) {
  // acc index a = mi * 4 + ni, padded to the full 4x4 numbering so the reduced vector holds row mi in 128-bit lane
  // mi. Unused slots stay zero; the tree never mixes slots, so they cost time but cannot change a result.
  __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
  __m512 c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
#define KF_ROW(mi, XV, W0, W1, W2, W3)                                            \
  do {                                                                            \
    if (MR > mi) {                                                                \
      c##mi##0 = _mm512_fmadd_ps(XV, W0, c##mi##0);                               \
      if (NR > 1) c##mi##1 = _mm512_fmadd_ps(XV, W1, c##mi##1);                   \
      if (NR > 2) c##mi##2 = _mm512_fmadd_ps(XV, W2, c##mi##2);                   \
      if (NR > 3) c##mi##3 = _mm512_fmadd_ps(XV, W3, c##mi##3);                   \
    }                                                                             \
  } while (0)
#define KF_STEP(LOAD)                                                                                 \
  do {                                                                                                \
    __m512 w0 = LOAD(w + k), w1 = w0, w2 = w0, w3 = w0;                                               \
    if (NR > 1) w1 = LOAD(w + K + k);                                                                 \
    if (NR > 2) w2 = LOAD(w + 2 * K + k);                                                             \
    if (NR > 3) w3 = LOAD(w + 3 * K + k);                                                             \
    KF_IN_REG(w0); KF_IN_REG(w1); KF_IN_REG(w2); KF_IN_REG(w3);                                      \
    __m512 x0 = LOAD(x + k), x1 = x0, x2 = x0, x3 = x0;                                               \
    if (MR > 1) x1 = LOAD(x + K + k);                                                                 \
    if (MR > 2) x2 = LOAD(x + 2 * K + k);                                                             \
    if (MR > 3) x3 = LOAD(x + 3 * K + k);                                                             \
    KF_IN_REG(x0); KF_IN_REG(x1); KF_IN_REG(x2); KF_IN_REG(x3);                                      \
    KF_ROW(0, x0, w0, w1, w2, w3); KF_ROW(1, x1, w0, w1, w2, w3);                                     \
    KF_ROW(2, x2, w0, w1, w2, w3); KF_ROW(3, x3, w0, w1, w2, w3);                                     \
  } while (0)
  size_t k = 0;
#define KF_LOADU(p) _mm512_loadu_ps(p)
  for (; k + 16 <= K; k += 16) {
    if (PF) {
      for (int ni = 0; ni < NR; ni++) _mm_prefetch((const char *)(w + ni * K + k) + pfd, _MM_HINT_T0);
    }
    KF_STEP(KF_LOADU);
  }
  if (k < K) {
    const __mmask16 m = kf_tail_mask(K - k);
#define KF_LOADM(p) _mm512_maskz_loadu_ps(m, p)
    KF_STEP(KF_LOADM);
#undef KF_LOADM
  }
#undef KF_LOADU
#undef KF_STEP
#undef KF_ROW
  __m512 s = kf_reduce16(c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33);
  const __mmask8 cm = (__mmask8)((1u << NR) - 1u);
  if (bias) s = _mm512_add_ps(s, _mm512_broadcast_f32x4(_mm_maskz_loadu_ps(cm, bias)));
  _mm_mask_storeu_ps(out, cm, _mm512_extractf32x4_ps(s, 0));
  if (MR > 1) _mm_mask_storeu_ps(out + N, cm, _mm512_extractf32x4_ps(s, 1));
  if (MR > 2) _mm_mask_storeu_ps(out + 2 * N, cm, _mm512_extractf32x4_ps(s, 2));
  if (MR > 3) _mm_mask_storeu_ps(out + 3 * N, cm, _mm512_extractf32x4_ps(s, 3));
}

#define NR_MAX 4
#define MR_T 4
#define DEF_TILE(NR, MR)                                                                                     \
  static void tile_##NR##_##MR##_pf(const float *x, const float *w, const float *b, float *o, size_t K,     \
                                    size_t N, size_t pfd) {                                                   \
    tile(NR, MR, 1, x, w, b, o, K, N, pfd);                                                                  \
  }                                                                                                          \
  static void tile_##NR##_##MR(const float *x, const float *w, const float *b, float *o, size_t K, size_t N, \
                               size_t pfd) {                                                                  \
    tile(NR, MR, 0, x, w, b, o, K, N, pfd);                                                                  \
  }
DEF_TILE(1, 1) DEF_TILE(1, 2) DEF_TILE(1, 3) DEF_TILE(1, 4)
DEF_TILE(2, 1) DEF_TILE(2, 2) DEF_TILE(2, 3) DEF_TILE(2, 4)
DEF_TILE(3, 1) DEF_TILE(3, 2) DEF_TILE(3, 3) DEF_TILE(3, 4)
DEF_TILE(4, 1) DEF_TILE(4, 2) DEF_TILE(4, 3) DEF_TILE(4, 4)

typedef void (*tile_fn)(const float *, const float *, const float *, float *, size_t, size_t, size_t);
static const tile_fn tiles_pf[NR_MAX][MR_T] = {
  {tile_1_1_pf, tile_1_2_pf, tile_1_3_pf, tile_1_4_pf}, {tile_2_1_pf, tile_2_2_pf, tile_2_3_pf, tile_2_4_pf},
  {tile_3_1_pf, tile_3_2_pf, tile_3_3_pf, tile_3_4_pf}, {tile_4_1_pf, tile_4_2_pf, tile_4_3_pf, tile_4_4_pf},
};
static const tile_fn tiles_nopf[NR_MAX][MR_T] = {
  {tile_1_1, tile_1_2, tile_1_3, tile_1_4}, {tile_2_1, tile_2_2, tile_2_3, tile_2_4},
  {tile_3_1, tile_3_2, tile_3_3, tile_3_4}, {tile_4_1, tile_4_2, tile_4_3, tile_4_4},
};

static void lin_block(const lin_job *j, size_t n0, size_t n1) {
  const size_t K = j->K, N = j->N;
  size_t pfd = pf_bytes ? pf_bytes : 4 * K * sizeof(float);
  for (size_t m0 = 0; m0 < j->M; m0 += MR_T) {
    size_t mr = j->M - m0 < MR_T ? j->M - m0 : MR_T;
    const float *x = j->x + m0 * K;
    float *o = j->out + m0 * N;
    const tile_fn(*t)[MR_T] = m0 == 0 ? tiles_pf : tiles_nopf;
    for (size_t n = n0; n < n1; n += NR_MAX) {
      size_t nr = n1 - n < NR_MAX ? n1 - n : NR_MAX;
      t[nr - 1][mr - 1](x, j->w + n * K, j->bias ? j->bias + n : NULL, o + n, K, N, pfd);
    }
  }
}

#else // portable path: same arithmetic with explicit lane arrays, tiles of 1 weight row x up to 4 x rows

static void lin_tile_c(const float *x, const float *w, const float *bias, float *out, size_t K, size_t N, int mr) {
  float acc[4][16];
  memset(acc, 0, sizeof acc);
  size_t k = 0;
  for (; k + 16 <= K; k += 16)
    for (int mi = 0; mi < mr; mi++)
      for (int l = 0; l < 16; l++) acc[mi][l] = fmaf(x[mi * K + k + l], w[k + l], acc[mi][l]);
  if (k < K)
    for (int mi = 0; mi < mr; mi++)
      for (int l = 0; l < 16; l++)
        acc[mi][l] = fmaf(k + l < K ? x[mi * K + k + l] : 0.0f, k + l < K ? w[k + l] : 0.0f, acc[mi][l]);
  for (int mi = 0; mi < mr; mi++) {
    float s = kf_tree16(acc[mi]);
    out[mi * N] = bias ? s + bias[0] : s;
  }
}

static void lin_block(const lin_job *j, size_t n0, size_t n1) {
  const size_t K = j->K, N = j->N;
  for (size_t m0 = 0; m0 < j->M; m0 += 4) {
    int mr = j->M - m0 < 4 ? (int)(j->M - m0) : 4;
    for (size_t n = n0; n < n1; n++)
      lin_tile_c(j->x + m0 * K, j->w + n * K, j->bias ? j->bias + n : NULL, j->out + m0 * N + n, K, N, mr);
  }
}
#endif

static void lin_task(void *p, int tid, int nt) {
  (void)tid;
  (void)nt;
  lin_job *j = p;
  for (;;) {
    size_t b = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
    if (b >= j->nblocks) break;
    size_t n0 = b * j->nb, n1 = n0 + j->nb < j->N ? n0 + j->nb : j->N;
    lin_block(j, n0, n1);
  }
}

void kf_linear(float *out, const float *x, const float *w, const float *bias, size_t M, size_t K, size_t N) {
  if (!pf_init) {
    const char *s = getenv("KFORCE_PF_BYTES");
    if (s && *s) pf_bytes = (size_t)strtoull(s, NULL, 10);
    pf_init = 1;
  }
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (size_t m = 0; m < M; m++)
      for (size_t n = 0; n < N; n++) out[m * N + n] = bias ? 0.0f + bias[n] : 0.0f;
    return;
  }
  lin_job j;
  j.out = out; j.x = x; j.w = w; j.bias = bias; j.M = M; j.K = K; j.N = N;
  // Few rows: blocks of ~96 KB of weights balance the two threads without hurting streaming. Many rows: the
  // block is reused by every x tile, so size it to sit in the 1 MB L2 next to the x tiles.
  size_t bytes = M <= MR_MAX ? (96u << 10) : (384u << 10);
  size_t nb = bytes / (K * sizeof(float));
  if (nb < 2) nb = 2;
  nb &= ~(size_t)3;
  if (nb < 4) nb = 4;
  j.nb = nb;
  j.nblocks = (N + nb - 1) / nb;
  atomic_init(&j.next, 0);
  double flops = 2.0 * (double)M * (double)K * (double)N;
  kf_parallel(lin_task, &j, flops >= 2e5 && j.nblocks > 1 ? KF_THREADS : 1);
}
