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

#define MR_MAX 8

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

// One register tile: NR weight rows x MR x rows, NR*MR <= 16 accumulators, all reduced by a single tree.
// PF: prefetch the weight stream ahead (only worth it on the first pass over a block, which comes from DRAM).
KF_INLINE void tile(const int NR, const int MR, const int PF, const float *x, const float *w, const float *bias,
                    float *out, size_t K, size_t N, size_t pfd) {
  __m512 acc[16];
  for (int i = 0; i < NR * MR; i++) acc[i] = _mm512_setzero_ps();
  size_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 wv[2];
    for (int ni = 0; ni < NR; ni++) {
      wv[ni] = _mm512_loadu_ps(w + ni * K + k);
      if (PF) _mm_prefetch((const char *)(w + ni * K + k) + pfd, _MM_HINT_T0);
    }
    for (int mi = 0; mi < MR; mi++) {
      __m512 xv = _mm512_loadu_ps(x + mi * K + k);
      for (int ni = 0; ni < NR; ni++) acc[mi * NR + ni] = _mm512_fmadd_ps(xv, wv[ni], acc[mi * NR + ni]);
    }
  }
  if (k < K) {
    __mmask16 m = kf_tail_mask(K - k);
    __m512 wv[2];
    for (int ni = 0; ni < NR; ni++) wv[ni] = _mm512_maskz_loadu_ps(m, w + ni * K + k);
    for (int mi = 0; mi < MR; mi++) {
      __m512 xv = _mm512_maskz_loadu_ps(m, x + mi * K + k);
      for (int ni = 0; ni < NR; ni++) acc[mi * NR + ni] = _mm512_fmadd_ps(xv, wv[ni], acc[mi * NR + ni]);
    }
  }
  float t[16];
  _mm512_storeu_ps(t, kf_reduce(acc, NR * MR));
  for (int mi = 0; mi < MR; mi++)
    for (int ni = 0; ni < NR; ni++)
      out[mi * N + ni] = bias ? t[mi * NR + ni] + bias[ni] : t[mi * NR + ni];
}

#define DEF_TILE(NR, MR)                                                                                     \
  static void tile_##NR##_##MR##_pf(const float *x, const float *w, const float *b, float *o, size_t K,     \
                                    size_t N, size_t pfd) {                                                   \
    tile(NR, MR, 1, x, w, b, o, K, N, pfd);                                                                  \
  }                                                                                                          \
  static void tile_##NR##_##MR(const float *x, const float *w, const float *b, float *o, size_t K, size_t N, \
                               size_t pfd) {                                                                  \
    tile(NR, MR, 0, x, w, b, o, K, N, pfd);                                                                  \
  }
DEF_TILE(2, 1) DEF_TILE(2, 2) DEF_TILE(2, 3) DEF_TILE(2, 4) DEF_TILE(2, 5) DEF_TILE(2, 6) DEF_TILE(2, 7)
DEF_TILE(2, 8)
DEF_TILE(1, 1) DEF_TILE(1, 2) DEF_TILE(1, 3) DEF_TILE(1, 4) DEF_TILE(1, 5) DEF_TILE(1, 6) DEF_TILE(1, 7)
DEF_TILE(1, 8)

typedef void (*tile_fn)(const float *, const float *, const float *, float *, size_t, size_t, size_t);
static const tile_fn tiles_pf[2][MR_MAX] = {
  {tile_1_1_pf, tile_1_2_pf, tile_1_3_pf, tile_1_4_pf, tile_1_5_pf, tile_1_6_pf, tile_1_7_pf, tile_1_8_pf},
  {tile_2_1_pf, tile_2_2_pf, tile_2_3_pf, tile_2_4_pf, tile_2_5_pf, tile_2_6_pf, tile_2_7_pf, tile_2_8_pf},
};
static const tile_fn tiles_nopf[2][MR_MAX] = {
  {tile_1_1, tile_1_2, tile_1_3, tile_1_4, tile_1_5, tile_1_6, tile_1_7, tile_1_8},
  {tile_2_1, tile_2_2, tile_2_3, tile_2_4, tile_2_5, tile_2_6, tile_2_7, tile_2_8},
};

static void lin_block(const lin_job *j, size_t n0, size_t n1) {
  const size_t K = j->K, N = j->N;
  size_t pfd = pf_bytes ? pf_bytes : 2 * K * sizeof(float);
  for (size_t m0 = 0; m0 < j->M; m0 += MR_MAX) {
    size_t mr = j->M - m0 < MR_MAX ? j->M - m0 : MR_MAX;
    const tile_fn *t2 = m0 == 0 ? tiles_pf[1] : tiles_nopf[1];
    const tile_fn *t1 = m0 == 0 ? tiles_pf[0] : tiles_nopf[0];
    const float *x = j->x + m0 * K;
    float *o = j->out + m0 * N;
    size_t n = n0;
    for (; n + 2 <= n1; n += 2) t2[mr - 1](x, j->w + n * K, j->bias ? j->bias + n : NULL, o + n, K, N, pfd);
    if (n < n1) t1[mr - 1](x, j->w + n * K, j->bias ? j->bias + n : NULL, o + n, K, N, pfd);
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
  nb &= ~(size_t)1;
  j.nb = nb;
  j.nblocks = (N + nb - 1) / nb;
  atomic_init(&j.next, 0);
  double flops = 2.0 * (double)M * (double)K * (double)N;
  kf_parallel(lin_task, &j, flops >= 2e5 && j.nblocks > 1 ? KF_THREADS : 1);
}
