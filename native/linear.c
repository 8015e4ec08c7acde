// out[M,N] = x[M,K] @ w[N,K]^T (+ bias): the hot kernel of every forward pass.
//
// Arithmetic contract (what makes it row-invariant): every output element is one dot product computed with 16 lane
// accumulators walked over k in ascending order (masked, zero-filled tail), reduced by the fixed pairwise tree of
// kf_tree16, then bias added. Tiles of any shape and K chunking (accumulators parked in memory between chunks) only
// decide which dot products share loads and when; they never change an output's operations, so a row gives the same
// bits whatever M is, where it sits, and which tile it lands in.
//
// Work split: both threads pull blocks of weight rows (N) from a shared counter; K is never split between threads.
// Decode sizes (M <= 64): the grouped path below: rows in groups of <= 8, each group one register tile of up to 24
// accumulators (8 weight rows x 1-2 x rows ... 3 x 7-8), K chunked so that the group's x stays in L1, every weight
// row streamed from DRAM once per call with software prefetch in consumption order.
// 9-64 rows from a packed copy of the weights (kf_linear_vpacked, below; the caller keeps the copy and chooses with
// kf_linear_vpacked_use): x rows across the vector lanes, every weight read once for all rows.
// More than 64 rows (4x4 register tiles; also 3-4 rows with KFORCE_LIN_TILES34=1): the block is sized to stay in L2
// and every x tile (kept in L1) walks it; for long K the work is cut into K chunks so that x tile and weight chunk
// both fit, and the 16 accumulators of every (x tile, weight quad) pair are parked in a small per-thread buffer
// between chunks.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "kf.h"
#include "simd.h"


typedef struct {
  float *out;
  const float *x, *w, *bias;
  size_t M, K, N;
  size_t nb;       // many-row path: weight rows per block (the grouped path's blocks are in split)
  size_t nblocks;
  kf_row_blocks split; // grouped path: its blocks (kf_split_rows)
  atomic_size_t next;
  int act;         // KF_ACT_*: applied to each finished block of outputs while it is hot (kf_linear_act)
} lin_job;

// Tuning knobs (kf_linear_knob; also read once from KFORCE_LIN_<NAME> environment variables).
static long knob_pf_bytes = 0;     // many rows: prefetch distance in bytes along the weight stream; 0: one tile ahead
static long knob_block_few = 1536; // KiB of weights per block with one group of rows (even count of equal blocks)
static long knob_block_grp = 384;  // KiB of weights per block with several groups (kept in L2 for all of them)
static long knob_block_many = 384; // KiB of weights (per K chunk) per block with many rows
static long knob_kc = 768;         // K chunk with many rows (multiple of 16); 0: never chunk
static long knob_mb = 32;          // x rows per block when K is chunked
static long knob_grp_max = 64;     // up to this many rows (at most GROUPS_MAX * GMAX): the grouped streaming path
                                   // (0: always 4x4 tiles); 64 rows measured 8% faster grouped than in 4x4 tiles
static long knob_tiles34 = 0;      // 3 or 4 rows: 1 = the 4x4 register tiles, 0 = the grouped path (measured 3%
                                   // faster per decode pass, 7% on the output layer, with cache-line-aligned weights)
static long knob_pf_few = 8192;    // grouped path: prefetch distance (bytes of group-0 consumption)
static long knob_pf_rows = 3;      // grouped path: software prefetch only for groups of at least this many rows (the
                                   // hardware prefetchers alone stream 1-2 rows faster, measured)
static long knob_hint0 = 0;        // grouped path, group 0 prefetch: 0 T0, 1 T1, 2 NTA
static long knob_hint1 = 3;        // grouped path, next-block prefetch by groups 1..: 0 T0, 1 T1, 2 NTA, 3 none
                                   // (3 since session 14: the prefetches stall the groups' compute more than they
                                   // save; kbench abdecode 16 hint1 1,3: 12.49 vs 11.01 ms, 10-32 rows 4-12% faster)
static long knob_xbudget = 24;     // grouped path: KiB of L1 for one group's x chunk
static long knob_huge = 0;         // 1: weights and large buffers on transparent huge pages (see kf_huge_collapse)
static long knob_pf_back = 64;     // grouped path, group 0: prefetch the next tile this many floats behind the same k
                                   // (the tile's own rows at the start); 0: the next tile at the same k, D tiles ahead
                                   // (pf_few); 32-96 measured alike, 16 and 128 a little slower
static long knob_tail = 4;         // grouped path: the last block of each thread is cut into this many pieces (1: not)
static long knob_vp = 1;           // 0: kf_linear_vpacked_use says no for every shape (the packed path off)
static long knob_vpd = 1024;       // packed path: software prefetch this many floats ahead on the weight stream
                                   // (measured, 32 rows over the block matrices: 0 27.9 ms, 512 18.3, 1024 17.2,
                                   // 2048 17.8, 4096 18.2)
static int knobs_read = 0;

static const struct { const char *name; long *v; } knobs[] = {
  {"pf_bytes", &knob_pf_bytes}, {"block_few", &knob_block_few}, {"block_grp", &knob_block_grp},
  {"block_many", &knob_block_many}, {"kc", &knob_kc}, {"mb", &knob_mb}, {"grp_max", &knob_grp_max}, {"tiles34", &knob_tiles34},
  {"pf_few", &knob_pf_few}, {"pf_rows", &knob_pf_rows}, {"hint0", &knob_hint0}, {"hint1", &knob_hint1}, {"xbudget", &knob_xbudget},
  {"huge", &knob_huge}, {"tail", &knob_tail}, {"pf_back", &knob_pf_back}, {"vp", &knob_vp}, {"vpd", &knob_vpd},
};

static void read_knobs(void) {
  for (size_t i = 0; i < sizeof knobs / sizeof knobs[0]; i++) {
    char env[64] = "KFORCE_LIN_";
    for (size_t c = 0; knobs[i].name[c] && c < 40; c++) {
      char ch = knobs[i].name[c];
      env[11 + c] = (char)(ch >= 'a' && ch <= 'z' ? ch - 'a' + 'A' : ch);
      env[12 + c] = 0;
    }
    const char *s = getenv(env);
    if (s && *s) *knobs[i].v = strtol(s, NULL, 10);
  }
  knobs_read = 1;
}

int kf_linear_knob(const char *name, long value) {
  if (!knobs_read) read_knobs();
  for (size_t i = 0; i < sizeof knobs / sizeof knobs[0]; i++)
    if (!strcmp(name, knobs[i].name)) {
      *knobs[i].v = value;
      return 1;
    }
  return 0;
}

#ifdef __AVX512F__

// Accumulator hand-over for K chunks: FIRST starts from zero (else loads acc), LAST reduces and stores the outputs
// (else parks the accumulators in acc).
enum { T_FIRST = 1, T_LAST = 2 };

// The activation of finished outputs: rows [m, m + mr) x columns [n0, n1) of out, by the thread that just stored
// them (a block's worth, so that they are still in its cache and the vectors are full). Lane-wise, so a value gets
// the bits kf_gelu would give it.
static void act_rows(const lin_job *j, size_t m, size_t mr, size_t n0, size_t n1) {
  if (j->act != KF_ACT_GELU_TANH) return;
  for (size_t i = 0; i < mr; i++) {
    float *o = j->out + (m + i) * j->N;
    for (size_t n = n0; n < n1; n += 16) {
      const __mmask16 cm = kf_tail_mask(n1 - n);
      _mm512_mask_storeu_ps(o + n, cm, kf_gelu_tanh512(_mm512_maskz_loadu_ps(cm, o + n)));
    }
  }
}

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

// ---- few rows (decode): groups of up to 8 x rows streamed against the weights ------------------------------------
//
// Rows are cut into G balanced groups of <= 8 (G = 1 for M <= 8). Every group walks a block of weight rows with an
// NR x MR register tile (NR*MR <= 24 accumulators: w loaded once per MR x rows, x once per NR weight rows), K cut into
// chunks so that the group's x chunk stays in L1 (the MLP down-projection has K = 3072: 8 x rows are 96 KB). Group 0
// streams the block from DRAM with software prefetch in its own consumption order (continuing into the thread's next
// block): by default the next tile a little behind the k being read (KFORCE_LIN_PF_BACK floats; during a tile's first
// few k steps, its own rows further on). Exactly the same k of the next tile, as until session 14, ran the 8-row
// pass over the block matrices 27% slower (kbench abdecode 8 pf_back 0,64: 8.99 vs 6.55 ms), a cliff between 47 and
// 48 k steps ahead whose cause is not known (the distance alone, 46 vs 48 steps, does not explain it). Groups 1..
// find the block in L2. They can also spread prefetches of the thread's next block over their passes (KFORCE_LIN_HINT1
// 0-2), meant to run the DRAM stream under their compute, but their passes stall on them more than group 0 gains
// (timed per group with rdtsc, 16 rows over the block matrices, session 14: without them group 0 8.1 ms and group 1
// 4.8; with them 6.2 and 8.9; our guess: software prefetches that miss hold L1 miss buffers), so they are off by
// default since session 14. With two or more groups the weight stream therefore idles during groups 1..

#define GMAX 8        // x rows per group
#define GROUPS_MAX 8  // groups per call: the grouped path takes at most GROUPS_MAX * GMAX rows
enum { H_T0 = 0, H_T1 = 1, H_NTA = 2, H_COUNT = 3 };

// One group tile: NR weight rows x MR x rows over k in [k0, k1). Accumulator slot a = mi * NR + ni. Prefetch: at
// step s, lines pf + s * pj + i * ps for i < np (np <= NR). With lead > 0 (floats) the step at k prefetches its own
// rows at k + lead while that is below k1, then the tile at pf (rows ps apart) at k + lead - k1 from its start.
KF_INLINE void gtile(const int NR, const int MR, const int HINT, const float *x, const float *w, const float *bias,
                     float *out, size_t K, size_t N, size_t k0, size_t k1, const char *pf, size_t ps, size_t pj,
                     int np, __m512 *park, int mode, size_t lead) {
  __m512 acc[32];
  if (mode & T_FIRST) {
#pragma GCC unroll 32
    for (int a = 0; a < NR * MR; a++) acc[a] = _mm512_setzero_ps();
  } else {
#pragma GCC unroll 32
    for (int a = 0; a < NR * MR; a++) acc[a] = park[a];
  }
  size_t k = k0;
  for (; k + 16 <= k1; k += 16) {
    __m512 wv[8];
#pragma GCC unroll 16
    for (int ni = 0; ni < NR; ni++) wv[ni] = _mm512_loadu_ps(w + ni * K + k);
    const char *pa = pf;
    size_t pst = ps;
    int pn = np;
    if (lead) {
      if (k + lead < k1) {
        pa = (const char *)(w + k + lead);
        pst = K * sizeof(float);
        pn = NR;
      } else {
        pa = pf + (k + lead - k1) / 16 * pj;
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < NR; i++)
      if (i < pn) {
        if (HINT == H_T0) _mm_prefetch(pa + i * pst, _MM_HINT_T0);
        else if (HINT == H_T1) _mm_prefetch(pa + i * pst, _MM_HINT_T1);
        else _mm_prefetch(pa + i * pst, _MM_HINT_NTA);
      }
    if (!lead) pf += pj;
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
  if (k < k1) {
    const __mmask16 m = kf_tail_mask(k1 - k);
    __m512 wv[8];
#pragma GCC unroll 16
    for (int ni = 0; ni < NR; ni++) wv[ni] = _mm512_maskz_loadu_ps(m, w + ni * K + k);
#pragma GCC unroll 8
    for (int mi = 0; mi < MR; mi++) {
      __m512 xv = _mm512_maskz_loadu_ps(m, x + mi * K + k);
#pragma GCC unroll 16
      for (int ni = 0; ni < NR; ni++) acc[mi * NR + ni] = _mm512_fmadd_ps(xv, wv[ni], acc[mi * NR + ni]);
    }
  }
  if (!(mode & T_LAST)) {
#pragma GCC unroll 32
    for (int a = 0; a < NR * MR; a++) park[a] = acc[a];
    return;
  }
  // The 16-value tree per group of 16 slots (a short group is padded with copies of its first slot: the tree never
  // mixes slots, so the padding only fills lanes nobody reads). Lane a of s0:s1 is slot a.
#define KF_A(g, i) acc[(g) + (i) < NR * MR ? (g) + (i) : (g)]
#define KF_RED(g)                                                                                                   \
  kf_reduce16(KF_A(g, 0), KF_A(g, 1), KF_A(g, 2), KF_A(g, 3), KF_A(g, 4), KF_A(g, 5), KF_A(g, 6), KF_A(g, 7),         \
              KF_A(g, 8), KF_A(g, 9), KF_A(g, 10), KF_A(g, 11), KF_A(g, 12), KF_A(g, 13), KF_A(g, 14), KF_A(g, 15))
  const __m512 s0 = KF_RED(0), s1 = NR * MR > 16 ? KF_RED(16) : s0;
#undef KF_RED
#undef KF_A
  // Row mi's NR sums are slots mi * NR .. mi * NR + NR - 1: one two-source permute and one masked store per x row.
  const __mmask16 om = (__mmask16)((1u << NR) - 1u);
  const __m512 bv = bias ? _mm512_maskz_loadu_ps(om, bias) : _mm512_setzero_ps();
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
#pragma GCC unroll 8
  for (int mi = 0; mi < MR; mi++) {
    __m512 v = _mm512_permutex2var_ps(s0, _mm512_add_epi32(lane, _mm512_set1_epi32(mi * NR)), s1);
    if (bias) v = _mm512_add_ps(v, bv);
    _mm512_mask_storeu_ps(out + mi * N, om, v);
  }
}

typedef void (*gtile_fn)(const float *, const float *, const float *, float *, size_t, size_t, size_t, size_t,
                         const char *, size_t, size_t, int, __m512 *, int, size_t);
#define DEF_GTILE_H(NR, MR, H)                                                                                      \
  static void gtile_##NR##_##MR##_##H(const float *x, const float *w, const float *b, float *o, size_t K, size_t N, \
                                      size_t k0, size_t k1, const char *pf, size_t ps, size_t pj, int np,           \
                                      __m512 *park, int mode, size_t lead) {                                        \
    gtile(NR, MR, H, x, w, b, o, K, N, k0, k1, pf, ps, pj, np, park, mode, lead);                                   \
  }
#define DEF_GTILE(NR, MR) DEF_GTILE_H(NR, MR, 0) DEF_GTILE_H(NR, MR, 1) DEF_GTILE_H(NR, MR, 2)
#define GT_ROW(NR, MR) {gtile_##NR##_##MR##_0, gtile_##NR##_##MR##_1, gtile_##NR##_##MR##_2}
// Main shapes by group size (weight rows per tile NR: as many as the 32 vector registers allow, and a divisor of 24,
// the multiple that blocks are cut in, so that no block ends in 1-row tail tiles; 4 rows with NR = 5 ran the output
// layer 25% slower than with NR = 4 for that reason) and 1-row tails.
#ifndef KF_GNR
#define KF_GNR 8, 8, 6, 4, 4, 4, 3, 3
#endif
static const int g_nr[GMAX] = {KF_GNR};
DEF_GTILE(8, 1) DEF_GTILE(8, 2) DEF_GTILE(6, 3) DEF_GTILE(5, 4) DEF_GTILE(4, 5) DEF_GTILE(4, 6) DEF_GTILE(3, 7)
DEF_GTILE(3, 8) DEF_GTILE(4, 4) DEF_GTILE(6, 4) DEF_GTILE(2, 8) DEF_GTILE(4, 3)
DEF_GTILE(1, 1) DEF_GTILE(1, 2) DEF_GTILE(1, 3) DEF_GTILE(1, 4) DEF_GTILE(1, 5) DEF_GTILE(1, 6) DEF_GTILE(1, 7)
DEF_GTILE(1, 8)
static gtile_fn gt_main[GMAX][H_COUNT];
static const gtile_fn gt_tail[GMAX][H_COUNT] = {GT_ROW(1, 1), GT_ROW(1, 2), GT_ROW(1, 3), GT_ROW(1, 4),
                                                GT_ROW(1, 5), GT_ROW(1, 6), GT_ROW(1, 7), GT_ROW(1, 8)};
static void gt_init(void) {
  static const struct { int nr, mr; gtile_fn f[H_COUNT]; } all[] = {
    {8, 1, GT_ROW(8, 1)}, {8, 2, GT_ROW(8, 2)}, {6, 3, GT_ROW(6, 3)}, {5, 4, GT_ROW(5, 4)}, {4, 5, GT_ROW(4, 5)},
    {4, 6, GT_ROW(4, 6)}, {3, 7, GT_ROW(3, 7)}, {3, 8, GT_ROW(3, 8)}, {4, 4, GT_ROW(4, 4)}, {6, 4, GT_ROW(6, 4)},
    {2, 8, GT_ROW(2, 8)}, {4, 3, GT_ROW(4, 3)},
  };
  for (int mr = 1; mr <= GMAX; mr++) {
    gt_main[mr - 1][0] = NULL;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
      if (all[i].mr == mr && all[i].nr == g_nr[mr - 1])
        for (int h = 0; h < H_COUNT; h++) gt_main[mr - 1][h] = all[i].f[h];
    if (!gt_main[mr - 1][0]) abort(); // KF_GNR names a shape without an instance
  }
}

// *buf holding at least `bytes` (64-byte aligned, grown on demand; contents not kept when it grows).
static void *grow_buffer(void **buf, size_t *have, size_t bytes) {
  if (*have < bytes) {
    free(*buf);
    *buf = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!*buf) abort();
    *have = bytes;
  }
  return *buf;
}

// Per-thread parking space for the accumulators of K-chunked group tiles and of the packed path's tiles (grown on
// demand, kept for the thread's life; one linear call at a time uses it).
static __thread void *g_park;
static __thread size_t g_park_bytes;

static __m512 *park_space(size_t n) { return grow_buffer(&g_park, &g_park_bytes, n * sizeof(__m512)); }

// K chunk for a group of mr rows: the group's x chunk fits the knob's L1 budget (multiple of 16; K when it fits).
static size_t group_kc(size_t K, size_t mr) {
  size_t kc = ((size_t)(knob_xbudget > 0 ? knob_xbudget : 24) << 10) / (mr * sizeof(float)) / 16 * 16;
  if (kc < 64) kc = 64;
  return kc >= K ? K : kc;
}

#define NO_BLOCK ((size_t)-1)

typedef struct {
  size_t G, gm0[GROUPS_MAX + 1];
} groups_t;

static void make_groups(size_t M, groups_t *g) {
  g->G = (M + GMAX - 1) / GMAX;
  size_t base = M / g->G, extra = M % g->G, m = 0;
  for (size_t i = 0; i < g->G; i++) {
    g->gm0[i] = m;
    m += base + (i < extra ? 1 : 0);
  }
  g->gm0[g->G] = M;
}

// One block [n0, n1) for all groups. *nxt is the thread's next block (claimed here when the prefetch reaches it).
static void group_block(lin_job *j, const groups_t *gs, size_t n0, size_t n1, size_t *nxt) {
  const size_t K = j->K, N = j->N, G = gs->G;
  const int h0 = (int)(knob_hint0 >= 0 && knob_hint0 < H_COUNT ? knob_hint0 : 0);
  const int h1 = (int)(knob_hint1 >= 0 && knob_hint1 < H_COUNT ? knob_hint1 : 0);
  // Linear prefetch of the next block by groups 1..G-1: cursor and lines per k step.
  const char *lcur = NULL, *lend = NULL;
  size_t lper = 0;
  for (size_t g = 0; g < G; g++) {
    const size_t m0 = gs->gm0[g], mr = gs->gm0[g + 1] - m0;
    const size_t nr = (size_t)g_nr[mr - 1];
    const size_t kc = group_kc(K, mr), C = (K + kc - 1) / kc;
    const size_t T = (n1 - n0 + nr - 1) / nr;
    const gtile_fn fm = gt_main[mr - 1][g == 0 ? h0 : h1], ft = gt_tail[mr - 1][g == 0 ? h0 : h1];
    __m512 *park = C > 1 ? park_space(T * nr * mr) : NULL;
    size_t D = 1;
    if (g == 0) {
      const size_t pfb = knob_pf_few > 0 ? (size_t)knob_pf_few : 1; // <= 0: no software prefetch
      D = knob_pf_back > 0 ? 1 : (pfb + nr * kc * sizeof(float) - 1) / (nr * kc * sizeof(float));
    } else if (g == 1 && knob_hint1 < H_COUNT) {
      if (*nxt == NO_BLOCK) *nxt = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
      if (*nxt < j->nblocks) {
        size_t x0, x1;
        kf_block_rows(&j->split, *nxt, &x0, &x1);
        lcur = (const char *)(j->w + x0 * K);
        lend = (const char *)(j->w + x1 * K);
        // k steps left in groups 1..G-1 (about T * K/16 each) against the lines of the next block.
        size_t steps = 0;
        for (size_t h = 1; h < G; h++) {
          const size_t r = (size_t)g_nr[gs->gm0[h + 1] - gs->gm0[h] - 1];
          steps += (n1 - n0 + r - 1) / r * (K / 16 ? K / 16 : 1);
        }
        lper = ((size_t)(lend - lcur) / 64 + steps - 1) / steps;
      }
    }
    const float *x = j->x + m0 * K;
    float *o = j->out + m0 * N;
    size_t pc = D / T, pt = D % T;
    for (size_t c = 0; c < C; c++) {
      const size_t k0 = c * kc, k1 = k0 + kc < K ? k0 + kc : K;
      const int mode = (c == 0 ? T_FIRST : 0) | (c == C - 1 ? T_LAST : 0);
      // Group 0's prefetch lead along this chunk (gtile): knob_pf_back floats short of the next tile's same k.
      const size_t span = k1 - k0, back = (size_t)knob_pf_back;
      const size_t lead = g == 0 && knob_pf_back > 0 && knob_pf_few > 0 && (long)mr >= knob_pf_rows
                              ? (span > back + 16 ? span - back : 16) : 0;
      for (size_t t = 0; t < T; t++) {
        const size_t n = n0 + t * nr, rows = n1 - n < nr ? n1 - n : nr;
        const char *pf = NULL;
        size_t ps = K * sizeof(float), pj = 64;
        int np = 0;
        if (g == 0) {
          // (pc, pt): chunk and tile D tiles ahead in this group's consumption order.
          if (knob_pf_few <= 0 || (long)mr < knob_pf_rows) {
          } else if (pc < C) {
            pf = (const char *)(j->w + (n0 + pt * nr) * K + pc * kc);
            np = (int)nr;
          } else if (G == 1) {
            if (*nxt == NO_BLOCK) *nxt = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
            if (*nxt < j->nblocks) {
              size_t x0, x1;
              kf_block_rows(&j->split, *nxt, &x0, &x1);
              const size_t e = (pc - C) * T + pt;
              if (e * nr < x1 - x0) {
                pf = (const char *)(j->w + (x0 + e * nr) * K);
                np = (int)nr;
              }
            }
          }
          if (++pt == T) {
            pt = 0;
            pc++;
          }
        } else if (lcur && lcur < lend) {
          pf = lcur;
          ps = 64;
          np = (int)(lper < nr ? lper : nr);
          pj = (size_t)np * 64;
          lcur += (k1 - k0) / 16 * pj;
        }
        __m512 *pk = park ? park + t * nr * mr : NULL;
        const float *b = j->bias ? j->bias + n : NULL;
        if (rows == nr) {
          fm(x, j->w + n * K, b, o + n, K, N, k0, k1, pf ? pf : (const char *)j->w, ps, pj, pf ? np : 0, pk, mode, lead);
        } else {
          for (size_t i = 0; i < rows; i++)
            ft(x, j->w + (n + i) * K, b ? b + i : NULL, o + n + i, K, N, k0, k1, (const char *)j->w, 64, 0, 0,
               pk ? pk + i * mr : NULL, mode, 0);
        }
      }
    }
    act_rows(j, m0, mr, n0, n1);
  }
}

static void group_task(void *p, int tid, int nt) {
  (void)tid;
  (void)nt;
  lin_job *j = p;
  groups_t gs;
  make_groups(j->M, &gs);
  size_t cur = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
  while (cur < j->nblocks) {
    size_t nxt = NO_BLOCK;
    size_t n0, n1;
    kf_block_rows(&j->split, cur, &n0, &n1);
    group_block(j, &gs, n0, n1, &nxt);
    cur = nxt != NO_BLOCK ? nxt : atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
  }
}


// ---- 9 to 64 rows from a lane-major packed copy of the weights (kf_vpack, kf_linear_vpacked) ----------------------
//
// The grouped path reads each weight block from DRAM once but computes it once per group of 8 rows, so with several
// groups the DRAM stream idles while groups 1.. compute from L2 (a 32-row pass costs about the 8-row pass plus three
// 8-row passes in cache). Here the x rows lie across the vector lanes instead (xT, 16 V rows, zero-padded) and each
// weight is broadcast to all of them: every weight is read once per call for all rows, and the stream runs under
// the compute. The arithmetic contract is kept, so the bits are the dot form's: for each output, the 16 lane
// accumulators of the dot form (k = 16 j + l) become 16 passes over a tile (pass l walks j in ascending order for
// lane l), combined pass by pass by the same tree, then bias.
// A pass uses one float of each 64-byte line of a weight row, so on the row-major weights a tile's rows had to stay
// in L1 across its 16 passes, and rows K floats apart crowd a few L1 sets: that version ran slower than the grouped
// path (RESULTS.md, session 15; docs/experiments/vertical-linear.patch). The packed copy puts each pass's weights in
// one sequential stream: tile t of 12 weight rows, lane l, step j, row ni at
// packed[((t * 16 + vp_order[l]) * K / 16 + j) * 12 + ni], each float read once, prefetched VPD floats ahead; xT uses
// the same lane-major row order.
#define VP_NN 12

// The 16 passes run in the order that completes kf_reduce16's tree soonest: passes l and l + 8 back to back give its
// first-level sum p[l], then p[l] + p[l + 4], and so on, each level combined at the end of the pass that completes it
// (vp_order is a 4-bit reversal, its own inverse: the packed copy stores pass l at position vp_order[l], so the passes
// still stream in memory order). Every add has the tree's operands (a + b is b + a in IEEE arithmetic), so the bits
// are the dot form's. Why: parking all 16 lane results and reducing them after the tile read 24 KB that the tile's own
// stream had pushed out of L1 by then: at K = 768 13-18% of a tile's time (session 17, a harness over
// six 768x3072 matrices at 32 rows, one thread: tiles alone 4.3-4.8 ms, with that finish 4.9-5.6, the finish alone on
// a hot park 0.32; with the combined tree 4.66-4.86).
static const unsigned char vp_order[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};

size_t kf_vpack_floats(size_t N, size_t K) { return (N + VP_NN - 1) / VP_NN * VP_NN * K; }

// 16x16 transpose in registers: r[i] lane j <- r[j] lane i.
KF_INLINE void vtrans16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
  }
  for (int i = 0; i < 4; i++) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
  }
  for (int i = 0; i < 4; i++) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
    r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xDD);
  }
}

int kf_vpack(const float *w, size_t N, size_t K, float *packed) {
  if (K % 16) return 0;
  const size_t J = K / 16, T = (N + VP_NN - 1) / VP_NN;
  for (size_t t = 0; t < T; t++)
    for (size_t jj = 0; jj < J; jj++) {
      __m512 r[16];
      for (size_t ni = 0; ni < 16; ni++) {
        const size_t n = t * VP_NN + ni;
        r[ni] = ni < VP_NN && n < N ? _mm512_loadu_ps(w + n * K + 16 * jj) : _mm512_setzero_ps();
      }
      vtrans16(r); // r[l] lane ni = w[t * 12 + ni][16 jj + l]
      for (size_t l = 0; l < 16; l++)
        _mm512_mask_storeu_ps(packed + ((t * 16 + vp_order[l]) * J + jj) * VP_NN, (__mmask16)0x0FFF, r[l]);
    }
  return 1;
}

#define VP_LEVELS 5 // park levels: a pair's first pass, p, q, r, and the finished sums

// V row vectors (16 V rows) x one packed tile, all 16 passes; the finished sums to park level 4, [12][V]. V = 3 and 4
// run each pass in two halves of 6 weight rows (18 and 24 accumulators), the second reading the pass's weights from L1.
KF_INLINE void vp_tile(const int V, const float *xT, size_t xs, const float *pk, size_t J, __m512 *park, size_t pd) {
  const int NH = V >= 3 ? 6 : VP_NN;
  const size_t lv = (size_t)VP_NN * V; // vectors per park level
  for (int s = 0; s < 16; s++) {
    const size_t l = vp_order[s];
    for (int h0 = 0; h0 < VP_NN; h0 += NH) {
      const float *p = pk + (size_t)s * J * VP_NN + h0; // the packed copy stores the passes in this order
      const float *xr = xT + l * J * xs;
      __m512 acc[24];
#pragma GCC unroll 24
      for (int a = 0; a < V * NH; a++) acc[a] = _mm512_setzero_ps();
      for (size_t jj = 0; jj < J; jj++) {
        if (pd && h0 == 0) _mm_prefetch((const char *)(p + pd), _MM_HINT_T0);
        __m512 xv[4];
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) {
          xv[v] = _mm512_load_ps(xr + 16 * v);
          KF_IN_REG(xv[v]);
        }
#pragma GCC unroll 12
        for (int ni = 0; ni < NH; ni++) {
          const __m512 wb = _mm512_set1_ps(p[ni]);
#pragma GCC unroll 4
          for (int v = 0; v < V; v++) acc[ni * V + v] = _mm512_fmadd_ps(xv[v], wb, acc[ni * V + v]);
        }
        p += VP_NN;
        xr += xs;
      }
      __m512 *pl = park + (size_t)h0 * V; // level 0 of this half; level i at pl + i * lv
      const int c = (s + 1) / 2;          // pairs complete after this pass
#pragma GCC unroll 24
      for (int a = 0; a < V * NH; a++) {
        if (!(s & 1)) {
          pl[a] = acc[a];
          continue;
        }
        __m512 t = _mm512_add_ps(pl[a], acc[a]); // p
        if (c & 1) {
          pl[lv + a] = t;
          continue;
        }
        t = _mm512_add_ps(pl[lv + a], t); // q
        if (c & 2) {
          pl[2 * lv + a] = t;
          continue;
        }
        t = _mm512_add_ps(pl[2 * lv + a], t); // r
        if (c == 4) pl[3 * lv + a] = t;
        else pl[4 * lv + a] = _mm512_add_ps(pl[3 * lv + a], t);
      }
    }
  }
}
typedef void (*vp_tile_fn)(const float *, size_t, const float *, size_t, __m512 *, size_t);
#define DEF_VP_TILE(V)                                                                                       \
  static void vp_tile_##V(const float *xT, size_t xs, const float *pk, size_t J, __m512 *park, size_t pd) { \
    vp_tile(V, xT, xs, pk, J, park, pd);                                                                     \
  }
DEF_VP_TILE(1) DEF_VP_TILE(2) DEF_VP_TILE(3) DEF_VP_TILE(4)
static const vp_tile_fn vp_tiles[4] = {vp_tile_1, vp_tile_2, vp_tile_3, vp_tile_4};

// The finished sums (park level 4) plus bias, through the activation act, rows [0, M) of out at columns [n, n + nn).
// The activation runs here on the registers about to be stored (lane-wise, so kf_gelu's bits): applied to the block
// afterwards (act_rows), it took 60 us of a 32-row 768x3072 call of ~430 (session 17, 12 calls: 5.05-5.23 ms without
// the GELU, 5.85-5.92 with it).
static void vp_finish(int V, const __m512 *park, const float *bias, int act, float *out, size_t M, size_t N, size_t n,
                      int nn) {
  const __m512 *sums = park + 4 * (size_t)VP_NN * V;
  for (int v = 0; v < V; v++) {
    __m512 col[16];
    for (int ni = 0; ni < 16; ni++) col[ni] = _mm512_setzero_ps();
    for (int ni = 0; ni < nn; ni++) {
      __m512 sum = sums[ni * V + v];
      if (bias) sum = _mm512_add_ps(sum, _mm512_set1_ps(bias[n + ni]));
      col[ni] = sum;
    }
    vtrans16(col); // col[m] = row 16 v + m, its outputs in lanes 0..nn-1
    const __mmask16 om = (__mmask16)((1u << nn) - 1u);
    for (int m = 0; m < 16 && (size_t)(16 * v + m) < M; m++)
      _mm512_mask_storeu_ps(out + (16 * v + m) * N + n, om, act == KF_ACT_GELU_TANH ? kf_gelu_tanh512(col[m]) : col[m]);
  }
}

// Each thread's own xT, [K][Mp] in lane-major row order (x row k at (k % 16) * K / 16 + k / 16), grown on demand.
// Every thread transposes all of x for itself: with one shared copy, each made half and read both halves, and the
// lines the other core had written moved between the cores on every call (kept in session 16, runs/vp-one.ts with
// per-phase timers: the shared transpose took 8 us per thread at K = 768 and 34 at K = 3072 for its half, a thread's
// own whole copy 3 and 17, and the tiles ran faster from a local copy: 32-row calls 4-15% shorter).
static __thread void *vp_xt;
static __thread size_t vp_xt_bytes;

typedef struct {
  lin_job *j;
  const float *packed;
  size_t Mp; // rows rounded up to 16
} vp_job;

// x into xT, 16x16 blocks in registers.
static void vp_transpose(const lin_job *j, size_t Mp, float *xT) {
  const size_t K = j->K, M = j->M, J = K / 16;
  for (size_t kb = 0; kb < K; kb += 16)
    for (size_t m0 = 0; m0 < Mp; m0 += 16) {
      __m512 r[16];
      for (size_t i = 0; i < 16; i++) r[i] = m0 + i < M ? _mm512_loadu_ps(j->x + (m0 + i) * K + kb) : _mm512_setzero_ps();
      vtrans16(r);
      for (size_t c = 0; c < 16; c++) _mm512_store_ps(xT + (c * J + kb / 16) * Mp + m0, r[c]);
    }
}

static void vp_task(void *p, int tid, int nt) {
  (void)tid;
  (void)nt;
  vp_job *vp = p;
  lin_job *j = vp->j;
  float *xT = grow_buffer(&vp_xt, &vp_xt_bytes, j->K * vp->Mp * sizeof(float));
  vp_transpose(j, vp->Mp, xT);
  const size_t K = j->K, N = j->N, M = j->M, J = K / 16, V = vp->Mp / 16;
  const size_t pd = knob_vpd > 0 ? (size_t)knob_vpd : 0;
  __m512 *park = park_space(VP_LEVELS * VP_NN * V);
  for (;;) {
    size_t b = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
    if (b >= j->nblocks) break;
    size_t n0, n1;
    kf_block_rows(&j->split, b, &n0, &n1); // multiples of 24 rows: tiles never straddle blocks
    for (size_t n = n0; n < n1; n += VP_NN) {
      vp_tiles[V - 1](xT, vp->Mp, vp->packed + (n / VP_NN) * 16 * J * VP_NN, J, park, pd);
      vp_finish((int)V, park, j->bias, j->act, j->out, M, N, n, n1 - n < VP_NN ? (int)(n1 - n) : VP_NN);
    }
  }
}

int kf_vpack_supported(void) { return 1; }

int kf_linear_vpacked_use(size_t M, size_t K) {
  if (!knobs_read) read_knobs();
  // Measured (kbench abpacked: the 48 block matrices streamed, 2 threads, against the grouped path). Session 17, with
  // the tree combined as the passes go: at K = 3072 faster or equal for every count from 9 to 64 (9 rows 3.14 against
  // 3.39 ms, 15: 3.21 / 3.79, 20: 4.81 / 4.77, 52: 10.08 / 10.62); at K = 768 faster at exactly 16 rows (768x768
  // 0.94-0.99 against 1.10-1.16 ms, 768x3072 3.64-3.76 / 3.97-4.07) and where the rows fill their vectors (28-32,
  // 42-48, 56-64), slower where the padding costs more than the grouped path's extra passes (9-15 rows: 15 rows
  // 768x2304 2.54 / 2.39; 20 rows 17%, 36 rows 5%).
  const size_t Mp = (M + 15) / 16 * 16;
  const int fills = M == 16 || (M > 16 && 8 * (Mp - M) <= Mp);
  return knob_vp != 0 && M >= 9 && M <= 64 && K > 0 && K % 16 == 0 &&
         (K >= 2048 || fills);
}

void kf_linear_vpacked(float *out, const float *x, const float *packed, const float *bias, size_t M, size_t K, size_t N,
                       int act) {
  if (!knobs_read) read_knobs();
  if (M == 0 || N == 0) return;
  lin_job j;
  j.out = out; j.x = x; j.w = NULL; j.bias = bias; j.M = M; j.K = K; j.N = N; j.act = act;
  const size_t Mp = (M + 15) / 16 * 16;
  j.split = kf_split_rows(N, K * sizeof(float), (size_t)(knob_block_grp > 0 ? knob_block_grp : 1) << 10, 24,
                          knob_tail > 1 ? (size_t)knob_tail : 1);
  j.nblocks = j.split.nblocks;
  atomic_init(&j.next, 0);
  vp_job vp = {&j, packed, Mp};
  kf_parallel(vp_task, &vp, j.nblocks > 1 ? KF_THREADS : 1);
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
    if (mode & T_LAST) act_rows(j, m, mr, n0, n1);
  }
}

static void lin_block(const lin_job *j, size_t n0, size_t n1, __m512 **scratch, size_t *scratch_n) {
  const size_t K = j->K, M = j->M;
  const size_t kc = knob_kc >= 16 ? (size_t)knob_kc / 16 * 16 : 0;
  // Up to 8 rows (3-4 rows, or the grouped path switched off) x stays in L1/L2 anyway: one unchunked streaming pass.
  if (M <= GMAX || kc == 0 || K <= kc) {
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

// No packed path without AVX-512: kf_vpack says so, and kf_linear_vpacked_use never picks it.
int kf_vpack_supported(void) { return 0; }
size_t kf_vpack_floats(size_t N, size_t K) { return (N + 11) / 12 * 12 * K; }
int kf_vpack(const float *w, size_t N, size_t K, float *packed) {
  (void)w; (void)N; (void)K; (void)packed;
  return 0;
}
int kf_linear_vpacked_use(size_t M, size_t K) {
  (void)M;
  (void)K;
  return 0;
}
void kf_linear_vpacked(float *out, const float *x, const float *packed, const float *bias, size_t M, size_t K, size_t N,
                       int act) {
  (void)out; (void)x; (void)packed; (void)bias; (void)M; (void)K; (void)N; (void)act;
  abort(); // unreachable: the addon checks kf_vpack_supported first
}

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

// Transparent huge pages (knob `huge`, KFORCE_LIN_HUGE=1, or kf_huge_pages; off by default, and the CLI's decoding
// commands turn it on). Weight streams cross a 4 KB page every 64 cache lines, where the hardware prefetchers stop and
// a TLB walk is due, so with the knob on the first time a large weight matrix comes through here the 2 MB-aligned
// interior of its whole allocation is collapsed into huge pages (contents unchanged; a no-op where the kernel lacks
// MADV_COLLAPSE or THP is off; allocations already seen are remembered by address), and alignedFloat32 advises large
// fresh buffers (KV caches, workspaces). Measured on the development VM (docs/RESULTS.md): on 2026-11-28 slower for
// decoding; on 2026-11-29 (session 13, alternating processes) decoding faster, AR +6-35% and PFLM k=4 -1 to +33%
// (batch 1 to 64), while a small model's training step ran 4-34% slower. Both entry points do nothing while the knob
// is 0.
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#define HUGE_SEEN 1024
static pthread_mutex_t huge_mu = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t huge_seen[HUGE_SEEN];
static size_t huge_count;

// The 2 MB-aligned interior [*a, *e) of [p, p + bytes); 0 if empty or huge pages are off.
static int huge_interior(const void *p, size_t bytes, uintptr_t *a, uintptr_t *e) {
  if (!knobs_read) read_knobs();
  const uintptr_t H = (uintptr_t)2 << 20;
  *a = ((uintptr_t)p + H - 1) & ~(H - 1);
  *e = ((uintptr_t)p + bytes) & ~(H - 1);
  return knob_huge && *e > *a;
}

void kf_huge_collapse(const void *p, size_t bytes) {
#ifdef __linux__
  uintptr_t a, e;
  if (!huge_interior(p, bytes, &a, &e) || pthread_mutex_trylock(&huge_mu) != 0) return;
  size_t i = (size_t)((a >> 21) * 0x9E3779B97F4A7C15ull >> 54) % HUGE_SEEN;
  while (huge_seen[i] && huge_seen[i] != a) i = (i + 1) % HUGE_SEEN;
  if (!huge_seen[i] && huge_count < HUGE_SEEN / 2) {
    huge_seen[i] = a;
    huge_count++;
    madvise((void *)a, e - a, MADV_HUGEPAGE);
    madvise((void *)a, e - a, MADV_COLLAPSE);
  }
  pthread_mutex_unlock(&huge_mu);
#else
  (void)p;
  (void)bytes;
#endif
}

int kf_huge_pages(int on) {
  if (!knobs_read) read_knobs();
  if (on >= 0) knob_huge = on ? 1 : 0;
  return (int)knob_huge;
}

void kf_huge_advise(const void *p, size_t bytes) {
#ifdef __linux__
  uintptr_t a, e;
  if (huge_interior(p, bytes, &a, &e)) madvise((void *)a, e - a, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

void kf_linear(float *out, const float *x, const float *w, const float *bias, size_t M, size_t K, size_t N) {
  kf_linear_act(out, x, w, bias, M, K, N, KF_ACT_NONE);
}

void kf_linear_act(float *out, const float *x, const float *w, const float *bias, size_t M, size_t K, size_t N,
                   int act) {
  if (!knobs_read) read_knobs();
  if (M == 0 || N == 0) return;
#ifdef __AVX512F__
  const int fused = K > 0;
#else
  const int fused = 0;
#endif
  if (act != KF_ACT_NONE && !fused) {
    // No block epilogue here (portable build, or no products at all): the same values through the separate pass.
    kf_linear_act(out, x, w, bias, M, K, N, KF_ACT_NONE);
    if (act == KF_ACT_GELU_TANH) kf_gelu(out, out, M * N, 0);
    return;
  }
  if (K == 0) {
    for (size_t m = 0; m < M; m++)
      for (size_t n = 0; n < N; n++) out[m * N + n] = bias ? 0.0f + bias[n] : 0.0f;
    return;
  }
  if (N * K * sizeof(float) >= ((size_t)2 << 20)) kf_huge_collapse(w, N * K * sizeof(float));
  lin_job j;
  j.out = out; j.x = x; j.w = w; j.bias = bias; j.M = M; j.K = K; j.N = N; j.act = act;
  const double flops = 2.0 * (double)M * (double)K * (double)N;
#ifdef __AVX512F__
  const size_t grp_max = knob_grp_max > 0 ? (size_t)knob_grp_max : 0;
  if (M <= (grp_max < GROUPS_MAX * GMAX ? grp_max : GROUPS_MAX * GMAX) && !(knob_tiles34 && (M == 3 || M == 4))) {
    static int inited = 0;
    if (!inited) {
      gt_init();
      inited = 1;
    }
    // Long runs per thread matter (each block start costs a prefetch ramp), and so does balance: equal blocks of about
    // the knob's size, in rows that are a multiple of every tile height, the last one of each thread in `tail` pieces
    // (knob; 1: none).
    const long kib = M <= GMAX ? knob_block_few : knob_block_grp;
    j.split = kf_split_rows(N, K * sizeof(float), (size_t)(kib > 0 ? kib : 1) << 10, 24,
                            knob_tail > 1 ? (size_t)knob_tail : 1);
    j.nblocks = j.split.nblocks;
    atomic_init(&j.next, 0);
    kf_parallel(group_task, &j, flops >= 2e5 && j.nblocks > 1 ? KF_THREADS : 1);
    return;
  }
#endif
  // Many rows: the block (its current K chunk) is reused by every x tile, so it should sit in the 1 MB L2 next to
  // the x tiles.
  const size_t kc = knob_kc >= 16 ? (size_t)knob_kc / 16 * 16 : 0;
  const size_t kspan = M > 8 && kc && K > kc ? kc : K; // lin_block never chunks K for up to 8 rows
  size_t nb = ((size_t)knob_block_many << 10) / (kspan * sizeof(float));
  nb &= ~(size_t)3;
  if (nb < 4) nb = 4;
  j.nb = nb;
  j.nblocks = (N + nb - 1) / nb;
  atomic_init(&j.next, 0);
  kf_parallel(lin_task, &j, flops >= 2e5 && j.nblocks > 1 ? KF_THREADS : 1);
}
