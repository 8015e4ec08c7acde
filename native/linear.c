// out[M,N] = x[M,K] @ w[N,K]^T (+ bias): the hot kernel of every forward pass.
//
// Arithmetic contract (what makes it row-invariant): every output element is one dot product computed with 16 lane
// accumulators walked over k in ascending order (masked, zero-filled tail), reduced by the fixed pairwise tree of
// kf_tree16, then bias added. Tiles of any shape and K chunking (accumulators parked in memory between chunks) only
// decide which dot products share loads and when; they never change an output's operations, so a row gives the same
// bits whatever M is, where it sits, and which tile it lands in.
//
// Work split: both threads pull blocks of weight rows (N) from a shared counter; K is never split between threads.
// Few rows (decode, M <= 8): one pass over the block with all rows in one register tile (8 weight rows x 1-2 x rows,
// 4 x 3-4, 2 x 5-8), so every weight row is streamed from DRAM exactly once, with software prefetch ahead.
// Many rows (4x4 register tiles): the block is sized to stay in L2 and every x tile (kept in L1) walks it; for long K the work is cut into
// K chunks so that x tile and weight chunk both fit, and the 16 accumulators of every (x tile, weight quad) pair are
// parked in a small per-thread buffer between chunks.
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "kf.h"
#include "simd.h"

#define FEW_ROWS 8 // up to this many rows the weights are streamed from DRAM once per call

typedef struct {
  float *out;
  const float *x, *w, *bias;
  size_t M, K, N;
  size_t nb;       // weight rows per block
  size_t nblocks;
  atomic_size_t next;
} lin_job;

// Tuning knobs (kf_linear_knob; also read once from KFORCE_LIN_<NAME> environment variables).
static long knob_pf_bytes = 0;     // prefetch distance in bytes along the weight stream; 0: one tile of rows ahead
static long knob_block_few = 1536; // KiB of weights per block with few rows (even count of equal blocks)
static long knob_block_many = 384; // KiB of weights (per K chunk) per block with many rows
static long knob_kc = 768;         // K chunk with many rows (multiple of 16); 0: never chunk
static long knob_mb = 32;          // x rows per block when K is chunked
static long knob_stream = 1;       // few rows: one streaming pass with all rows (else 4x4 tiles, two passes)
static int knobs_read = 0;

static void read_knobs(void) {
  const struct { const char *env; long *v; } ks[] = {
    {"KFORCE_LIN_PF_BYTES", &knob_pf_bytes},
    {"KFORCE_LIN_BLOCK_FEW", &knob_block_few}, {"KFORCE_LIN_BLOCK_MANY", &knob_block_many},
    {"KFORCE_LIN_KC", &knob_kc}, {"KFORCE_LIN_MB", &knob_mb},
    {"KFORCE_LIN_STREAM", &knob_stream},
  };
  for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
    const char *s = getenv(ks[i].env);
    if (s && *s) *ks[i].v = strtol(s, NULL, 10);
  }
  knobs_read = 1;
}

int kf_linear_knob(const char *name, long value) {
  if (!knobs_read) read_knobs();
  long *v = !strcmp(name, "pf_bytes") ? &knob_pf_bytes
          : !strcmp(name, "block_few") ? &knob_block_few : !strcmp(name, "block_many") ? &knob_block_many
          : !strcmp(name, "kc") ? &knob_kc : !strcmp(name, "mb") ? &knob_mb
          : !strcmp(name, "stream") ? &knob_stream : NULL;
  if (!v) return 0;
  *v = value;
  return 1;
}

#ifdef __AVX512F__

// Accumulator hand-over for K chunks: FIRST starts from zero (else loads acc), LAST reduces and stores the outputs
// (else parks the accumulators in acc).
enum { T_FIRST = 1, T_LAST = 2 };

// One register tile: NR (<= 4) weight rows x MR (<= 4) x rows over k in [k0, k1); x and w point at row starts,
// K is their row stride. PF: prefetch the weight stream pfd bytes ahead.
KF_INLINE void tile(const int NR, const int MR, const int PF, const float *x, const float *w, const float *bias,
                    float *out, size_t K, size_t N, size_t k0, size_t k1, size_t pfd, __m512 *acc, int mode) {
  // Slot a = mi * 4 + ni, padded to the full 4x4 numbering so that the reduced vector holds row mi in 128-bit lane
  // mi. Unused slots stay zero; the tree never mixes slots, so they cost time but cannot change a result.
  __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
  __m512 c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
  if (!(mode & T_FIRST)) {
    c00 = acc[0]; c01 = acc[1]; c02 = acc[2]; c03 = acc[3]; c10 = acc[4]; c11 = acc[5]; c12 = acc[6];
    c13 = acc[7]; c20 = acc[8]; c21 = acc[9]; c22 = acc[10]; c23 = acc[11]; c30 = acc[12]; c31 = acc[13];
    c32 = acc[14]; c33 = acc[15];
  }
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
  size_t k = k0;
#define KF_LOADU(p) _mm512_loadu_ps(p)
  for (; k + 16 <= k1; k += 16) {
    if (PF) {
      for (int ni = 0; ni < NR; ni++) _mm_prefetch((const char *)(w + ni * K + k) + pfd, _MM_HINT_T0);
    }
    KF_STEP(KF_LOADU);
  }
  if (k < k1) {
    const __mmask16 m = kf_tail_mask(k1 - k);
#define KF_LOADM(p) _mm512_maskz_loadu_ps(m, p)
    KF_STEP(KF_LOADM);
#undef KF_LOADM
  }
#undef KF_LOADU
#undef KF_STEP
#undef KF_ROW
  if (!(mode & T_LAST)) {
    acc[0] = c00; acc[1] = c01; acc[2] = c02; acc[3] = c03; acc[4] = c10; acc[5] = c11; acc[6] = c12;
    acc[7] = c13; acc[8] = c20; acc[9] = c21; acc[10] = c22; acc[11] = c23; acc[12] = c30; acc[13] = c31;
    acc[14] = c32; acc[15] = c33;
    return;
  }
  __m512 s = kf_reduce16(c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33);
  const __mmask8 cm = (__mmask8)((1u << NR) - 1u);
  if (bias) s = _mm512_add_ps(s, _mm512_broadcast_f32x4(_mm_maskz_loadu_ps(cm, bias)));
  _mm_mask_storeu_ps(out, cm, _mm512_extractf32x4_ps(s, 0));
  if (MR > 1) _mm_mask_storeu_ps(out + N, cm, _mm512_extractf32x4_ps(s, 1));
  if (MR > 2) _mm_mask_storeu_ps(out + 2 * N, cm, _mm512_extractf32x4_ps(s, 2));
  if (MR > 3) _mm_mask_storeu_ps(out + 3 * N, cm, _mm512_extractf32x4_ps(s, 3));
}

#define NR_T 4
#define MR_T 4
typedef void (*tile_fn)(const float *, const float *, const float *, float *, size_t, size_t, size_t, size_t, size_t,
                        __m512 *, int);
#define DEF_TILE(NR, MR)                                                                                          \
  static void tile_##NR##_##MR##_pf(const float *x, const float *w, const float *b, float *o, size_t K, size_t N, \
                                    size_t k0, size_t k1, size_t pfd, __m512 *acc, int mode) {                     \
    tile(NR, MR, 1, x, w, b, o, K, N, k0, k1, pfd, acc, mode);                                                     \
  }                                                                                                               \
  static void tile_##NR##_##MR(const float *x, const float *w, const float *b, float *o, size_t K, size_t N,      \
                               size_t k0, size_t k1, size_t pfd, __m512 *acc, int mode) {                          \
    tile(NR, MR, 0, x, w, b, o, K, N, k0, k1, pfd, acc, mode);                                                     \
  }
DEF_TILE(1, 1) DEF_TILE(1, 2) DEF_TILE(1, 3) DEF_TILE(1, 4)
DEF_TILE(2, 1) DEF_TILE(2, 2) DEF_TILE(2, 3) DEF_TILE(2, 4)
DEF_TILE(3, 1) DEF_TILE(3, 2) DEF_TILE(3, 3) DEF_TILE(3, 4)
DEF_TILE(4, 1) DEF_TILE(4, 2) DEF_TILE(4, 3) DEF_TILE(4, 4)

static const tile_fn tiles_pf[NR_T][MR_T] = {
  {tile_1_1_pf, tile_1_2_pf, tile_1_3_pf, tile_1_4_pf}, {tile_2_1_pf, tile_2_2_pf, tile_2_3_pf, tile_2_4_pf},
  {tile_3_1_pf, tile_3_2_pf, tile_3_3_pf, tile_3_4_pf}, {tile_4_1_pf, tile_4_2_pf, tile_4_3_pf, tile_4_4_pf},
};
static const tile_fn tiles_nopf[NR_T][MR_T] = {
  {tile_1_1, tile_1_2, tile_1_3, tile_1_4}, {tile_2_1, tile_2_2, tile_2_3, tile_2_4},
  {tile_3_1, tile_3_2, tile_3_3, tile_3_4}, {tile_4_1, tile_4_2, tile_4_3, tile_4_4},
};

// Streaming tile for few rows (decode): NR weight rows x all MR (<= 8) x rows in one pass, so that every weight row
// is read from memory once, with software prefetch ahead in the weight stream. Slot a = mi * NR + ni (NR*MR <= 16).
// Per-tile overheads (the reduction, scalar stores) are hidden behind the memory stream here.
KF_INLINE void stile(const int NR, const int MR, const float *x, const float *w, const float *bias, float *out,
                     size_t K, size_t N, size_t pfd) {
  __m512 acc[16];
#pragma GCC unroll 16
  for (int a = 0; a < 16; a++) acc[a] = _mm512_setzero_ps();
  size_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 wv[16];
#pragma GCC unroll 16
    for (int ni = 0; ni < NR; ni++) {
      wv[ni] = _mm512_loadu_ps(w + ni * K + k);
      _mm_prefetch((const char *)(w + ni * K + k) + pfd, _MM_HINT_T0);
    }
#pragma GCC unroll 16
    for (int ni = 0; ni < NR; ni++) KF_IN_REG(wv[ni]);
#pragma GCC unroll 8
    for (int mi = 0; mi < MR; mi++) {
      __m512 xv = _mm512_loadu_ps(x + mi * K + k);
      KF_IN_REG(xv);
#pragma GCC unroll 16
      for (int ni = 0; ni < NR; ni++) acc[mi * NR + ni] = _mm512_fmadd_ps(xv, wv[ni], acc[mi * NR + ni]);
    }
  }
  if (k < K) {
    const __mmask16 m = kf_tail_mask(K - k);
    __m512 wv[16];
#pragma GCC unroll 16
    for (int ni = 0; ni < NR; ni++) wv[ni] = _mm512_maskz_loadu_ps(m, w + ni * K + k);
#pragma GCC unroll 8
    for (int mi = 0; mi < MR; mi++) {
      __m512 xv = _mm512_maskz_loadu_ps(m, x + mi * K + k);
#pragma GCC unroll 16
      for (int ni = 0; ni < NR; ni++) acc[mi * NR + ni] = _mm512_fmadd_ps(xv, wv[ni], acc[mi * NR + ni]);
    }
  }
  float t[16];
  _mm512_storeu_ps(t, kf_reduce16(acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7], acc[8], acc[9],
                                  acc[10], acc[11], acc[12], acc[13], acc[14], acc[15]));
  for (int mi = 0; mi < MR; mi++)
    for (int ni = 0; ni < NR; ni++) out[mi * N + ni] = bias ? t[mi * NR + ni] + bias[ni] : t[mi * NR + ni];
}

typedef void (*stile_fn)(const float *, const float *, const float *, float *, size_t, size_t, size_t);
#define DEF_STILE(NR, MR)                                                                                         \
  static void stile_##NR##_##MR(const float *x, const float *w, const float *b, float *o, size_t K, size_t N,    \
                                size_t pfd) {                                                                    \
    stile(NR, MR, x, w, b, o, K, N, pfd);                                                                        \
  }
// Main shapes (NR = weight rows per tile for MR x rows) and their single-row tails for the end of N.
// (3 and 4 rows use the 4x4 register tiles instead; their slots here are never called.)
DEF_STILE(8, 1) DEF_STILE(8, 2) DEF_STILE(2, 5) DEF_STILE(2, 6) DEF_STILE(2, 7) DEF_STILE(2, 8)
DEF_STILE(1, 1) DEF_STILE(1, 2) DEF_STILE(1, 5) DEF_STILE(1, 6) DEF_STILE(1, 7) DEF_STILE(1, 8)
static const int stile_nr[FEW_ROWS] = {8, 8, 0, 0, 2, 2, 2, 2};
static const stile_fn stiles[FEW_ROWS] = {stile_8_1, stile_8_2, NULL, NULL, stile_2_5, stile_2_6, stile_2_7, stile_2_8};
static const stile_fn stiles_tail[FEW_ROWS] = {stile_1_1, stile_1_2, NULL, NULL,
                                               stile_1_5, stile_1_6, stile_1_7, stile_1_8};

static void lin_stream(const lin_job *j, size_t n0, size_t n1) {
  const size_t K = j->K, N = j->N, M = j->M;
  const size_t nr = (size_t)stile_nr[M - 1];
  const size_t pfd = knob_pf_bytes > 0 ? (size_t)knob_pf_bytes : nr * K * sizeof(float);
  size_t n = n0;
  for (; n + nr <= n1; n += nr) stiles[M - 1](j->x, j->w + n * K, j->bias ? j->bias + n : NULL, j->out + n, K, N, pfd);
  for (; n < n1; n++) stiles_tail[M - 1](j->x, j->w + n * K, j->bias ? j->bias + n : NULL, j->out + n, K, N, pfd);
}

// Rows [m0, m1) of x against weight rows [n0, n1) over k in [k0, k1). acc holds one 16-vector slot per
// (x tile, weight quad) pair of this range when the K range is a chunk.
static void lin_range(const lin_job *j, size_t m0, size_t m1, size_t n0, size_t n1, size_t k0, size_t k1,
                      __m512 *acc, int mode, int prefetch_first) {
  const size_t K = j->K, N = j->N;
  const size_t pfd = knob_pf_bytes > 0 ? (size_t)knob_pf_bytes : NR_T * K * sizeof(float);
  const size_t quads = (n1 - n0 + NR_T - 1) / NR_T;
  for (size_t m = m0; m < m1; m += MR_T) {
    const size_t mr = m1 - m < MR_T ? m1 - m : MR_T;
    const float *x = j->x + m * K;
    float *o = j->out + m * N;
    const tile_fn(*t)[MR_T] = prefetch_first && m == m0 ? tiles_pf : tiles_nopf;
    __m512 *a = acc ? acc + (m - m0) / MR_T * quads * 16 : NULL;
    for (size_t n = n0; n < n1; n += NR_T) {
      const size_t nr = n1 - n < NR_T ? n1 - n : NR_T;
      t[nr - 1][mr - 1](x, j->w + n * K, j->bias ? j->bias + n : NULL, o + n, K, N, k0, k1, pfd, a, mode);
      if (a) a += 16;
    }
  }
}

static void lin_block(const lin_job *j, size_t n0, size_t n1, __m512 **scratch, size_t *scratch_n) {
  const size_t K = j->K, M = j->M;
  const size_t kc = knob_kc >= 16 ? (size_t)knob_kc / 16 * 16 : 0;
  // 3 or 4 rows fit the 4x4 register tile in one pass already; other few-row counts use the streaming tiles.
  if (M <= FEW_ROWS && knob_stream && M != 3 && M != 4) {
    lin_stream(j, n0, n1);
    return;
  }
  if (M <= FEW_ROWS || kc == 0 || K <= kc) {
    lin_range(j, 0, M, n0, n1, 0, K, NULL, T_FIRST | T_LAST, 1);
    return;
  }
  const size_t mb = knob_mb >= MR_T ? (size_t)knob_mb / MR_T * MR_T : MR_T;
  const size_t need = (mb / MR_T) * ((n1 - n0 + NR_T - 1) / NR_T) * 16;
  if (*scratch_n < need) {
    free(*scratch);
    *scratch = aligned_alloc(64, need * sizeof(__m512));
    if (!*scratch) abort();
    *scratch_n = need;
  }
  for (size_t m0 = 0; m0 < M; m0 += mb) {
    const size_t m1 = m0 + mb < M ? m0 + mb : M;
    for (size_t k0 = 0; k0 < K; k0 += kc) {
      const size_t k1 = k0 + kc < K ? k0 + kc : K;
      lin_range(j, m0, m1, n0, n1, k0, k1, *scratch, (k0 == 0 ? T_FIRST : 0) | (k1 == K ? T_LAST : 0), m0 == 0);
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
#ifdef __AVX512F__
  __m512 *scratch = NULL;
  size_t scratch_n = 0;
#endif
  for (;;) {
    size_t b = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
    if (b >= j->nblocks) break;
    size_t n0 = b * j->nb, n1 = n0 + j->nb < j->N ? n0 + j->nb : j->N;
#ifdef __AVX512F__
    lin_block(j, n0, n1, &scratch, &scratch_n);
#else
    lin_block(j, n0, n1);
#endif
  }
#ifdef __AVX512F__
  free(scratch);
#endif
}

void kf_linear(float *out, const float *x, const float *w, const float *bias, size_t M, size_t K, size_t N) {
  if (!knobs_read) read_knobs();
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (size_t m = 0; m < M; m++)
      for (size_t n = 0; n < N; n++) out[m * N + n] = bias ? 0.0f + bias[n] : 0.0f;
    return;
  }
  lin_job j;
  j.out = out; j.x = x; j.w = w; j.bias = bias; j.M = M; j.K = K; j.N = N;
  // Few rows: blocks small enough to balance the two threads, large enough to stream well. Many rows: the block
  // (its current K chunk) is reused by every x tile, so it should sit in the 1 MB L2 next to the x tiles.
  const size_t kc = knob_kc >= 16 ? (size_t)knob_kc / 16 * 16 : 0;
  const size_t kspan = M > FEW_ROWS && kc && K > kc ? kc : K;
  size_t nb;
  if (M <= FEW_ROWS) {
    // Streaming: long runs per thread matter (each block start costs a prefetch ramp), and so does balance, so cut
    // N into an even number of equal blocks of about knob_block_few KiB.
    const size_t target = (size_t)(knob_block_few > 0 ? knob_block_few : 1) << 10;
    const size_t total = N * K * sizeof(float);
    size_t pairs = (total + 2 * target - 1) / (2 * target);
    if (pairs < 1) pairs = 1;
    nb = (N + 2 * pairs - 1) / (2 * pairs);
    nb = (nb + 7) & ~(size_t)7;
  } else {
    nb = ((size_t)knob_block_many << 10) / (kspan * sizeof(float));
    nb &= ~(size_t)3;
  }
  if (nb < 4) nb = 4;
  j.nb = nb;
  j.nblocks = (N + nb - 1) / nb;
  atomic_init(&j.next, 0);
  double flops = 2.0 * (double)M * (double)K * (double)N;
  kf_parallel(lin_task, &j, flops >= 2e5 && j.nblocks > 1 ? KF_THREADS : 1);
}
