// Stand-alone C driver of the native kernels (no Node): the same measurements as src/eval/bench-kernels.ts, for
// tuning on machines without Node or on quiet hosts. Build: see native/bench/build.sh. Not part of the addon.
//   kbench [shapes|decode|all] [rows,...] | kbench screen [rows,...] | kbench ab ... | kbench abdecode ... |
//   kbench overlap [MB] [prefetch bytes] [hint] | kbench peak | kbench abpacked rows [reps] | kbench ridge [MB] |
//   kbench attn B C k
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <immintrin.h>
#include "../kf.h"

// KB_CPUTIME=1 times with the calling thread's CPU clock: with KFORCE_THREADS=1 that measures the kernel itself,
// unaffected by other processes taking the core (shared machines).
static int use_cputime = -1;
static double now_ms(void) {
  struct timespec t;
  if (use_cputime < 0) use_cputime = getenv("KB_CPUTIME") && !strcmp(getenv("KB_CPUTIME"), "1");
  clock_gettime(use_cputime ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}
static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
// KB_HUGE=1: back every buffer with transparent huge pages (2 MB aligned, madvised before first touch).
static int huge = -1;
static float *fill(size_t n, unsigned seed) {
  if (huge < 0) huge = getenv("KB_HUGE") && !strcmp(getenv("KB_HUGE"), "1");
  size_t bytes = (n * 4 + 63) / 64 * 64;
  float *a;
  if (huge && bytes >= (1u << 20)) {
    bytes = (bytes + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
    a = aligned_alloc(2u << 20, bytes);
    madvise(a, bytes, MADV_HUGEPAGE);
  } else {
    a = aligned_alloc(64, bytes);
  }
  unsigned s = seed ? seed : 1;
  for (size_t i = 0; i < n; i++) { s = s * 1664525u + 1013904223u; a[i] = s / 4294967296.0f - 0.5f; }
  return a;
}
typedef struct { size_t N, K; int bias, count; } mat;

// kbench ab M K N knob v1,v2,...: alternates the knob values rep after rep and reports each one's best and median.
static int ab(int argc, char **argv) {
  if (argc < 7) return fprintf(stderr, "usage: kbench ab M K N knob v1,v2,...\n"), 2;
  size_t M = atoi(argv[2]), K = atoi(argv[3]), N = atoi(argv[4]);
  long vals[16];
  int nv = 0;
  for (char *p = strtok(argv[6], ","); p && nv < 16; p = strtok(NULL, ",")) vals[nv++] = atol(p);
  float *x = fill(M * K, 2), *w = fill(N * K, 3), *o = fill(M * N, 4);
  double fl = 2.0 * M * K * N;
  int reps = fl > 1e9 ? 30 : fl > 1e8 ? 100 : 400;
  static double t[16][400];
  for (int r = -2; r < reps; r++)
    for (int v = 0; v < nv; v++) {
      if (!kf_linear_knob(argv[5], vals[v])) return fprintf(stderr, "unknown knob %s\n", argv[5]), 2;
      double t0 = now_ms();
      kf_linear(o, x, w, NULL, M, K, N);
      if (r >= 0) t[v][r] = now_ms() - t0;
    }
  for (int v = 0; v < nv; v++) {
    qsort(t[v], reps, sizeof(double), cmp);
    printf("[%zu,%zu]x[%zu,%zu] %s=%ld: best %.1f GF/s  median %.1f GF/s\n", M, K, K, N, argv[5], vals[v],
           fl / t[v][0] / 1e6, fl / t[v][reps / 2] / 1e6);
  }
  return 0;
}

// kbench abdecode rows knob v1,v2,...: decode passes over the official weights, alternating knob values.
// Environment: KB_SHAPES=n / KB_FIRST=f: the shapes [f, n) of QKV, attention output, MLP up, MLP down, output layer
// (KB_SHAPES=4: the blocks only; KB_FIRST=3 KB_SHAPES=4: MLP down only); KB_ONE=N: one K = 768 matrix of N rows
// instead (110592: the blocks' bytes; KB_ONE_K=K: of K columns instead of 768); KB_REPS=n: n alternations (default
// 12, at most 64).
static int abdecode(int argc, char **argv) {
  if (argc < 5) return fprintf(stderr, "usage: kbench abdecode rows knob v1,v2,...\n"), 2;
  size_t rows = atoi(argv[2]);
  long vals[16];
  int nv = 0;
  for (char *p = strtok(argv[4], ","); p && nv < 16; p = strtok(NULL, ",")) vals[nv++] = atol(p);
  mat ms[5] = {{2304, 768, 0, 12}, {768, 768, 0, 12}, {3072, 768, 1, 12}, {768, 3072, 1, 12}, {50258, 768, 1, 1}};
  if (getenv("KB_ONE") && atol(getenv("KB_ONE")) > 0) {
    const long ok = getenv("KB_ONE_K") ? atol(getenv("KB_ONE_K")) : 768;
    if (ok < 16 || ok > 3072) return fprintf(stderr, "kbench abdecode: KB_ONE_K must be in [16, 3072], got %ld\n", ok), 2;
    ms[0] = (mat){(size_t)atol(getenv("KB_ONE")), (size_t)ok, 0, 1};
    ms[1].count = ms[2].count = ms[3].count = ms[4].count = 0;
  }
  float *W[64], *B[64], *WH[64];
  size_t NN[64], KK[64];
  int nw = 0;
  double bytes = 0;
  const int hk = !strcmp(argv[3], "thp"); // pseudo knob: 0 weights on 4 KB pages, 1 on huge pages
  const int nm = getenv("KB_SHAPES") ? atoi(getenv("KB_SHAPES")) : 5;
  const int first = getenv("KB_FIRST") ? atoi(getenv("KB_FIRST")) : 0;
  if (nm < 1 || nm > 5 || first < 0 || first >= nm)
    return fprintf(stderr, "kbench abdecode: need 0 <= KB_FIRST < KB_SHAPES <= 5, got %d and %d\n", first, nm), 2;
  for (int m = first; m < nm; m++)
    for (int c = 0; c < ms[m].count; c++) {
      if (hk) {
        huge = 1;
        WH[nw] = fill(ms[m].N * ms[m].K, 100 + nw);
        huge = 0;
      }
      W[nw] = fill(ms[m].N * ms[m].K, 100 + nw);
      B[nw] = ms[m].bias ? fill(ms[m].N, 7) : NULL;
      NN[nw] = ms[m].N; KK[nw] = ms[m].K;
      bytes += ms[m].N * ms[m].K * 4.0;
      nw++;
    }
  float *x = fill(512 * 3072, 5), *y = fill(512 * 50258, 6);
  size_t bwn = (512u << 20) / 4;
  float *big = fill(bwn, 1);
  const int reps = getenv("KB_REPS") ? atoi(getenv("KB_REPS")) : 12;
  if (reps < 1 || reps > 64) return fprintf(stderr, "kbench abdecode: KB_REPS must be in [1, 64], got %d\n", reps), 2;
  static double t[16][64], bwv[64];
  for (int r = -1; r < reps; r++) {
    bwv[r < 0 ? 0 : r] = kf_read_bandwidth(big, bwn, 1);
    // The first pass after the bandwidth reading runs slower (the same variant first and third: 2.19 vs 1.82 ms on the
    // twelve QKV matrices, 0.92 vs 0.57 on the twelve 768 x 768 ones), so the variant that goes first rotates.
    for (int vi = 0; vi < nv; vi++) {
      const int v = (vi + (r < 0 ? 0 : r)) % nv;
      if (!hk) kf_linear_knob(argv[3], vals[v]);
      float **ws = hk && vals[v] ? WH : W;
      double t0 = now_ms();
      for (int k = 0; k < nw; k++) kf_linear(y, x, ws[k], B[k], rows, KK[k], NN[k]);
      if (r >= 0) t[v][r] = now_ms() - t0;
    }
  }
  qsort(bwv, reps, sizeof(double), cmp);
  double bound = bytes / (bwv[reps - 1] * 1e9) * 1e3;
  printf("rows %zu: bandwidth best %.1f median %.1f GB/s, bound %.2f ms\n", rows, bwv[reps - 1], bwv[reps / 2], bound);
  for (int v = 0; v < nv; v++) {
    qsort(t[v], reps, sizeof(double), cmp);
    printf("  %s=%ld: best %.2f ms (%.0f%% of bound)  median %.2f ms\n", argv[3], vals[v], t[v][0], 100 * bound / t[v][0],
           t[v][reps / 2]);
  }
  return 0;
}

// kbench screen rows,...: the screened selection (native/screen.c) on the official output layer (50258 x 768, weights
// drawn like the random models', std 0.02; h standard normal), one sequence per 4 rows without penalty (KB_LAMBDA=x:
// every sequence with penalty x, its slots decided in order), the int8 weights cold (a 96 MB buffer read between
// calls), median of 15 calls.
static int screen(int argc, char **argv) {
  if (!kf_screen_supported()) return fprintf(stderr, "kbench screen: this build has no AVX512-VNNI screen\n"), 2;
  size_t rowsv[16] = {1, 2, 4, 8};
  int nrows = 4;
  if (argc > 2) {
    nrows = 0;
    for (char *p = strtok(argv[2], ","); p && nrows < 16; p = strtok(NULL, ",")) rowsv[nrows++] = atoi(p);
  }
  const size_t N = 50258, K = 768;
  float *w = fill(N * K, 21), *bias = fill(N, 22);
  for (size_t i = 0; i < N * K; i++) w[i] *= 0.04f * 1.7320508f; // uniform with std 0.02
  for (size_t i = 0; i < N; i++) bias[i] = 0;
  int8_t *wq = aligned_alloc(64, kf_screen_bytes(N, K));
  float *meta = malloc(KF_SCREEN_META * N * sizeof(float));
  if (!wq || !meta || !kf_screen_prepare(w, N, K, wq, meta)) return fprintf(stderr, "kbench screen: prepare failed\n"), 2;
  const double lambda = getenv("KB_LAMBDA") ? atof(getenv("KB_LAMBDA")) : 0;
  if (!(lambda >= 0)) return fprintf(stderr, "kbench screen: KB_LAMBDA must be >= 0\n"), 2;
  const size_t flushn = (96u << 20) / 4;
  float *flush = fill(flushn, 23);
  volatile float sink = 0;
  for (int r = 0; r < nrows; r++)
    if (rowsv[r] < 1 || rowsv[r] > 64) return fprintf(stderr, "kbench screen: rows must be 1-64, got %zu\n", rowsv[r]), 2;
  for (int r = 0; r < nrows; r++) {
    const size_t M = rowsv[r], nseq = (M + 3) / 4;
    float *h = fill(M * K, 24);
    for (size_t i = 0; i < M * K; i++) h[i] *= 3.4641016f; // std 1
    int32_t *isum = malloc(M * N * sizeof(int32_t)), *out = malloc(nseq * 4 * sizeof(int32_t));
    int32_t rowStart[16], takes[16], *counts[16];
    double lambdas[16];
    for (size_t i = 0; i < nseq; i++) {
      rowStart[i] = (int32_t)(4 * i);
      takes[i] = (int32_t)(M - 4 * i < 4 ? M - 4 * i : 4);
      counts[i] = calloc(N, sizeof(int32_t));
      lambdas[i] = lambda;
    }
    double t[16];
    for (int i = -1; i < 15; i++) {
      for (size_t k = 0; k < flushn; k += 16) sink += flush[k];
      double t0 = now_ms();
      kf_screen_select(h, M, K, N, wq, meta, w, bias, isum, rowStart, takes, counts, lambdas, nseq, (int32_t)N - 1, 4,
                       out);
      if (i >= 0) t[i] = now_ms() - t0;
    }
    qsort(t, 15, sizeof(double), cmp);
    printf("screen rows %2zu: median %.3f ms best %.3f (int8 copies %.1f MB)\n", M, t[7], t[0], kf_screen_bytes(N, K) / 1e6);
    for (size_t i = 0; i < nseq; i++) free(counts[i]);
    free(h); free(isum); free(out);
  }
  return 0;
}


// kbench overlap [MB] [prefetch bytes] [hint 0=T0 2=NTA]: can this core hide the FMAs of an 8-row decode pass under
// the DRAM stream of its weights? Both threads stream their half of MB (default 340: the official blocks) with 24
// FMAs per three 64-byte weight lines (8 x rows x 3 weight rows, as the kernel's 8-row tile), in five forms,
// alternating: the stream alone (one add per line); x in registers (no x loads: the FMAs alone on top of the
// stream); weights packed three rows per 16-float step (one sequential stream) with x loaded from L1 once per row and
// step, as the kernel does; row-major weights in 3-row tiles of K = 768 (three row streams, the kernel's layout) with
// the same x loads; and the packed loop over 256 KB that stays in L2 (the compute alone).
#define OV_K 768
typedef struct {
  const float *w, *hot[2], *x[2];
  size_t lines; // per thread, a multiple of 144 (whole 3-row tiles)
  int form, hint;
  size_t pfd;
  float sink[2][16];
} ov_job;
#define OV_PF(p) do { if (j->hint == 2) _mm_prefetch((const char *)(p), _MM_HINT_NTA); else _mm_prefetch((const char *)(p), _MM_HINT_T0); } while (0)
#define OV_STEP(W0, W1, W2, XLOAD)                                                                                  \
  for (int i = 0; i < 8; i++) {                                                                                     \
    __m512 xv = XLOAD;                                                                                              \
    __asm__("" : "+v"(xv)); /* one load per x row and step, kept in a register, as the kernel's KF_IN_REG */        \
    a[3 * i] = _mm512_fmadd_ps(xv, W0, a[3 * i]);                                                                  \
    a[3 * i + 1] = _mm512_fmadd_ps(xv, W1, a[3 * i + 1]);                                                          \
    a[3 * i + 2] = _mm512_fmadd_ps(xv, W2, a[3 * i + 2]);                                                          \
  }
static void ov_task(void *p, int tid, int nt) {
  (void)nt;
  ov_job *j = p;
  const size_t n = j->lines;
  const float *w = j->form == 4 ? j->hot[tid] : j->w + (size_t)tid * n * 16, *x = j->x[tid];
  __m512 a[24];
  for (int i = 0; i < 24; i++) a[i] = _mm512_setzero_ps();
  const size_t pf = j->pfd;
  if (j->form == 0) {
    for (size_t l = 0; l < n; l++) {
      if (pf) OV_PF((const char *)(w + l * 16) + pf);
      a[l & 7] = _mm512_add_ps(a[l & 7], _mm512_load_ps(w + l * 16));
    }
  } else if (j->form == 1 || j->form == 2 || j->form == 4) {
    __m512 xr[8];
    for (int i = 0; i < 8; i++) xr[i] = _mm512_set1_ps(1e-3f * (float)(i + 1));
    const size_t hot = (256u << 10) / 64; // lines of the L2-resident buffer
    size_t kk = 0;
    for (size_t l = 0; l < n; l += 3) {
      const float *wl = j->form == 4 ? w + (l % hot) * 16 : w + l * 16;
      if (pf && j->form != 4) { OV_PF((const char *)wl + pf); OV_PF((const char *)wl + pf + 64); OV_PF((const char *)wl + pf + 128); }
      const __m512 w0 = _mm512_load_ps(wl), w1 = _mm512_load_ps(wl + 16), w2 = _mm512_load_ps(wl + 32);
      if (j->form == 1) {
        OV_STEP(w0, w1, w2, xr[i])
      } else {
        OV_STEP(w0, w1, w2, _mm512_load_ps(x + i * OV_K + kk))
      }
      kk = kk + 16 == OV_K ? 0 : kk + 16;
    }
  } else {
    const size_t tiles = n / 144;
    for (size_t t = 0; t < tiles; t++) {
      const float *b = w + t * 3 * OV_K;
      for (size_t kk = 0; kk < OV_K; kk += 16) {
        if (pf) { // the same distance in consumption order: pf / 192 steps ahead
          const size_t s = kk / 16 + pf / 192, t2 = t + s / 48, k2 = s % 48 * 16;
          if (t2 < tiles) { const float *q = w + t2 * 3 * OV_K + k2; OV_PF(q); OV_PF(q + OV_K); OV_PF(q + 2 * OV_K); }
        }
        const __m512 w0 = _mm512_load_ps(b + kk), w1 = _mm512_load_ps(b + OV_K + kk), w2 = _mm512_load_ps(b + 2 * OV_K + kk);
        OV_STEP(w0, w1, w2, _mm512_load_ps(x + i * OV_K + kk))
      }
    }
  }
  __m512 s = a[0];
  for (int i = 1; i < 24; i++) s = _mm512_add_ps(s, a[i]);
  _mm512_storeu_ps(j->sink[tid], s);
}
static int overlap(int argc, char **argv) {
  size_t mb = argc > 2 ? (size_t)atoi(argv[2]) : 340;
  ov_job j = {0};
  const long pfd = argc > 3 ? atol(argv[3]) : 8192;
  j.hint = argc > 4 ? atoi(argv[4]) : 2;
  if (mb < 8 || mb > 4096) return fprintf(stderr, "kbench overlap: MB must be in [8, 4096]\n"), 2;
  if (pfd < 0 || pfd > (1 << 20)) return fprintf(stderr, "kbench overlap: prefetch bytes must be in [0, 1 MiB]\n"), 2;
  if (j.hint != 0 && j.hint != 2) return fprintf(stderr, "kbench overlap: hint is 0 (T0) or 2 (NTA)\n"), 2;
  j.pfd = (size_t)pfd;
  j.lines = (mb << 20) / 64 / 2 / 144 * 144;
  j.w = fill(j.lines * 2 * 16, 11);
  for (int t = 0; t < 2; t++) { j.x[t] = fill(8 * OV_K, 12 + t); j.hot[t] = fill((256u << 10) / 4, 14 + t); }
  const char *names[5] = {"stream alone", "+ FMAs, x in registers", "packed, x from L1 (kernel's loads)",
                          "row-major 3-row tiles, x from L1", "compute alone (packed, L2-resident)"};
  const int reps = 15;
  static double t[5][15];
  for (int r = -2; r < reps; r++)
    for (int f = 0; f < 5; f++) {
      j.form = f;
      const double t0 = now_ms();
      kf_parallel(ov_task, &j, 2);
      if (r >= 0) t[f][r] = now_ms() - t0;
    }
  printf("overlap: %zu MB over 2 threads, prefetch %zu B ahead (%s)\n", j.lines * 2 * 64 >> 20, j.pfd, j.hint == 2 ? "NTA" : "T0");
  for (int f = 0; f < 5; f++) {
    qsort(t[f], reps, sizeof(double), cmp);
    printf("  %-38s best %6.2f ms  median %6.2f ms (%.1f GB/s of weights)\n", names[f], t[f][0], t[f][reps / 2],
           j.lines * 2 * 64 / t[f][reps / 2] / 1e6);
  }
  return 0;
}


// kbench ridge [MB]: the packed path's arithmetic at 16 and 32 rows (x rows across the lanes, one or two row vectors
// held in registers, 12 weights broadcast per step as the 12-row tiles do) over MB of weights (default 340: the
// official blocks) streamed by both threads, against the stream alone and the FMAs alone over a 192 KB L2-resident
// buffer; alternating, medians. No lane passes, parking, reductions or x loads: what a perfect kernel would get.
typedef struct {
  const float *w, *hot[2];
  size_t n; // floats per thread, a multiple of 48 * 1024
  int form; // 0 stream alone, 1/2: V = 1 streamed / hot, 3/4: V = 2 streamed / hot
  float sink[2][16];
} ridge_job;

typedef struct {
  ridge_job *j;
  int tid;
} ridge_arg;

static void *ridge_task(void *p) {
  ridge_job *j = ((ridge_arg *)p)->j;
  const int tid = ((ridge_arg *)p)->tid;
  const int V = j->form >= 3 ? 2 : 1, hot = j->form == 2 || j->form == 4;
  const size_t n = j->n;
  __m512 a[24];
  for (int i = 0; i < 24; i++) a[i] = _mm512_setzero_ps();
  const __m512 x0 = _mm512_set1_ps(1.0001f), x1 = _mm512_set1_ps(0.9999f);
  if (j->form == 0) {
    const float *w = j->w + tid * n;
    for (size_t i = 0; i < n; i += 64) {
      _mm_prefetch((const char *)(w + i) + 4096, _MM_HINT_T0);
      _mm_prefetch((const char *)(w + i) + 4160, _MM_HINT_T0);
      _mm_prefetch((const char *)(w + i) + 4224, _MM_HINT_T0);
      _mm_prefetch((const char *)(w + i) + 4288, _MM_HINT_T0);
      a[0] = _mm512_add_ps(a[0], _mm512_load_ps(w + i));
      a[1] = _mm512_add_ps(a[1], _mm512_load_ps(w + i + 16));
      a[2] = _mm512_add_ps(a[2], _mm512_load_ps(w + i + 32));
      a[3] = _mm512_add_ps(a[3], _mm512_load_ps(w + i + 48));
    }
  } else {
    const size_t chunk = hot ? 48 * 1024 : n; // floats walked before starting over (192 KB when hot)
    for (size_t c0 = 0; c0 < n; c0 += chunk) {
      const float *w = hot ? j->hot[tid] : j->w + tid * n;
      if (V == 1)
        for (size_t i = 0; i < chunk; i += 12) {
          if (!hot) _mm_prefetch((const char *)(w + i) + 4096, _MM_HINT_T0);
#pragma GCC unroll 12
          for (int k = 0; k < 12; k++) a[k] = _mm512_fmadd_ps(x0, _mm512_set1_ps(w[i + k]), a[k]);
        }
      else
        for (size_t i = 0; i < chunk; i += 12) {
          if (!hot) _mm_prefetch((const char *)(w + i) + 4096, _MM_HINT_T0);
#pragma GCC unroll 12
          for (int k = 0; k < 12; k++) {
            const __m512 b = _mm512_set1_ps(w[i + k]);
            a[2 * k] = _mm512_fmadd_ps(x0, b, a[2 * k]);
            a[2 * k + 1] = _mm512_fmadd_ps(x1, b, a[2 * k + 1]);
          }
        }
    }
  }
  __m512 s = a[0];
  for (int i = 1; i < 24; i++) s = _mm512_add_ps(s, a[i]);
  _mm512_storeu_ps(j->sink[tid], s);
  return NULL;
}

static int ridge(int argc, char **argv) {
  const size_t mb = argc > 2 ? (size_t)atoi(argv[2]) : 340;
  if (mb < 8 || mb > 4096) return fprintf(stderr, "kbench ridge: MB must be in [8, 4096]\n"), 2;
  ridge_job j = {0};
  j.n = (mb << 20) / 4 / 2 / (48 * 1024) * (48 * 1024);
  huge = 1;
  j.w = fill(2 * j.n, 21);
  huge = 0;
  for (int t = 0; t < 2; t++) j.hot[t] = fill(48 * 1024, 22 + t);
  const char *names[5] = {"stream alone", "16 rows: stream + FMAs", "16 rows: FMAs alone (L2)",
                          "32 rows: stream + FMAs", "32 rows: FMAs alone (L2)"};
  const int reps = 11;
  static double t[5][11];
  for (int r = -1; r < reps; r++)
    for (int f = 0; f < 5; f++) {
      j.form = f;
      const double t0 = now_ms();
      // two threads of its own, started per run (~0.1 ms against 10+ ms runs)
      pthread_t th[2];
      ridge_arg ra[2] = {{&j, 0}, {&j, 1}};
      for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, ridge_task, &ra[i]);
      for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
      if (r >= 0) t[f][r] = now_ms() - t0;
    }
  const double bytes = 2.0 * j.n * 4;
  printf("ridge: %.0f MB over 2 threads (huge pages), medians of %d\n", bytes / 1e6, reps);
  for (int f = 0; f < 5; f++) {
    qsort(t[f], reps, sizeof(double), cmp);
    const double ms = t[f][reps / 2], flops = f == 0 ? 0 : 2.0 * 2 * j.n * 16 * (f >= 3 ? 2 : 1);
    printf("  %-26s %7.2f ms  %5.1f GB/s of weights  %6.1f GFLOP/s\n", names[f], ms, f == 2 || f == 4 ? 0 : bytes / ms / 1e6,
           flops / ms / 1e6);
  }
  return 0;
}

// kbench abpacked rows [reps]: the 48 block matrices streamed at `rows` rows, alternating kf_linear and
// kf_linear_vpacked (the packed copies made first; the plain path must give the same bits, checked once): medians per
// shape and in all.
static int abpacked(int argc, char **argv) {
  if (argc < 3) return fprintf(stderr, "usage: kbench abpacked rows [reps]\n"), 2;
  const size_t M = (size_t)atol(argv[2]);
  const int reps = argc > 3 ? atoi(argv[3]) : 8;
  if (M < 1 || M > 64 || reps < 1 || reps > 64) return fprintf(stderr, "kbench abpacked: rows in [1, 64], reps in [1, 64]\n"), 2;
  if (!kf_vpack_supported()) return fprintf(stderr, "kbench abpacked: no packed path in this build\n"), 2;
  const size_t sh[4][2] = {{768, 2304}, {768, 768}, {768, 3072}, {3072, 768}}; // K, N
  float *W[48], *P[48], *B[48];
  size_t KK[48], NN[48];
  int nw = 0;
  for (int s = 0; s < 4; s++)
    for (int c = 0; c < 12; c++, nw++) {
      KK[nw] = sh[s][0];
      NN[nw] = sh[s][1];
      W[nw] = fill(KK[nw] * NN[nw], 100 + nw);
      B[nw] = fill(NN[nw], 7);
      P[nw] = fill(kf_vpack_floats(NN[nw], KK[nw]), 1);
      kf_vpack(W[nw], NN[nw], KK[nw], P[nw]);
    }
  float *x = fill(64 * 3072, 5), *y = fill(64 * 3072, 6), *z = fill(64 * 3072, 6);
  for (int k = 0; k < nw; k++) {
    kf_linear(y, x, W[k], B[k], M, KK[k], NN[k]);
    kf_linear_vpacked(z, x, P[k], B[k], M, KK[k], NN[k], KF_ACT_NONE);
    if (memcmp(y, z, M * NN[k] * sizeof(float))) return fprintf(stderr, "kbench abpacked: matrix %d differs\n", k), 1;
  }
  static double t[2][64], ts[2][4][64];
  for (int r = -1; r < reps; r++)
    for (int vi = 0; vi < 2; vi++) {
      const int v = (vi + (r < 0 ? 0 : r)) % 2; // the variant that goes first rotates
      double t0 = now_ms();
      for (int k = 0; k < nw; k++) {
        double t1 = now_ms();
        if (v) kf_linear_vpacked(y, x, P[k], B[k], M, KK[k], NN[k], KF_ACT_NONE);
        else kf_linear(y, x, W[k], B[k], M, KK[k], NN[k]);
        if (r >= 0) ts[v][k / 12][r] += now_ms() - t1;
      }
      if (r >= 0) t[v][r] = now_ms() - t0;
    }
  printf("rows %zu, the 48 block matrices (QKV, attention output, MLP up, MLP down), medians of %d:\n", M, reps);
  for (int v = 0; v < 2; v++) {
    qsort(t[v], reps, sizeof(double), cmp);
    printf("  %s: %.2f ms (best %.2f) |", v ? "packed" : "plain ", t[v][reps / 2], t[v][0]);
    for (int s = 0; s < 4; s++) {
      qsort(ts[v][s], reps, sizeof(double), cmp);
      printf(" %zux%zu %.2f", sh[s][0], sh[s][1], ts[v][s][reps / 2]);
    }
    printf("\n");
  }
  return 0;
}

// kbench attn B C k: attention of a PFLM decode step (B sequences, 2k queries each over C cached keys plus their own
// block, 12 heads of 64, 12 layers) in three settings, median ms for the 12 layers: cold (before each layer, three
// decode-shaped linears stream 28 MB of weights, as in a step, and the layer's own cache is read cold), a plain
// 2-thread read of the same K/V rows, and warm (one cache reused by every layer, no linears between: L2/L3).
static int attn(int argc, char **argv) {
  if (argc < 5) return fprintf(stderr, "usage: kbench attn B C k\n"), 2;
  const size_t H = 12, Dh = 64, D = H * Dh, L = 12, B = atoi(argv[2]), C = atoi(argv[3]), k = atoi(argv[4]);
  if (B < 1 || k < 1) return fprintf(stderr, "kbench attn: B and k must be >= 1\n"), 2;
  if (B * 2 * k > 4096 || C > 65536) return fprintf(stderr, "kbench attn: at most 4096 queries and 65536 keys\n"), 2;
  const size_t per = C + 2 * k, rows = B * per, nq = B * 2 * k, M = nq < 8 ? 8 : nq;
  float *kv[12];
  for (size_t l = 0; l < L; l++) kv[l] = fill(rows * 2 * D, 7 + (unsigned)l);
  float *q = fill(nq * D, 3), *out = fill(nq * D, 4), *lse = fill(nq * H, 5);
  float *w = fill(3 * 3072 * 768, 9), *x = fill(M * 3072, 10), *y = fill(M * 3072, 11);
  int32_t *rowPtr = malloc((nq + 1) * sizeof(int32_t)), *ranges = malloc(2 * nq * sizeof(int32_t));
  for (size_t i = 0; i <= nq; i++) rowPtr[i] = (int32_t)i;
  for (size_t s = 0; s < B; s++) // context rows of all sequences first, then the noise rows, as a step packs them
    for (size_t i = 0; i < k; i++) {
      const size_t r = s * k + i, n = B * k + s * k + i;
      ranges[2 * r] = ranges[2 * n] = (int32_t)(s * per);
      ranges[2 * r + 1] = (int32_t)(s * per + C + i + 1);
      ranges[2 * n + 1] = (int32_t)(s * per + C + k + i + 1);
    }
  enum { REPS = 15 };
  const char *names[3] = {"cold", "read", "warm"};
  for (int mode = 0; mode < 3; mode++) {
    double t[REPS];
    for (int r = -2; r < REPS; r++) {
      double tt = 0;
      for (size_t l = 0; l < L; l++) {
        if (mode < 2) {
          kf_linear(y, x, w, NULL, M, 768, 3072);
          kf_linear(y, x, w + 3072 * 768, NULL, M, 3072, 768);
          kf_linear(y, x, w + 2 * 3072 * 768, NULL, M, 768, 3072);
        }
        const float *c = kv[mode == 2 ? 0 : l];
        const double t0 = now_ms();
        if (mode == 1) {
          kf_read_bandwidth(c, rows * 2 * D, 1); // the K/V rows are one block: read by both threads
        } else {
          kf_attn_args a;
          memset(&a, 0, sizeof a);
          a.nq = nq; a.nHeads = H; a.headDim = Dh; a.q = q; a.qStride = D; a.k = c; a.kStride = 2 * D;
          a.v = c + D; a.vStride = 2 * D; a.out = out; a.outStride = D; a.lse = lse; a.rowPtr = rowPtr;
          a.ranges = ranges; a.scale = 0.125f;
          kf_attention(&a);
        }
        tt += now_ms() - t0;
      }
      if (r >= 0) t[r] = tt;
    }
    qsort(t, REPS, sizeof(double), cmp);
    printf("attn B=%zu C=%zu k=%zu %s: median %.3f ms, best %.3f for %zu layers (%.1f MB of K/V)\n", B, C, k,
           names[mode], t[REPS / 2], t[0], L, (double)L * rows * 2 * D * 4 / 1e6);
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "all";
  if (!strcmp(mode, "ab")) return ab(argc, argv);
  if (!strcmp(mode, "abdecode")) return abdecode(argc, argv);
  if (!strcmp(mode, "abpacked")) return abpacked(argc, argv);
  if (!strcmp(mode, "screen")) return screen(argc, argv);
  if (!strcmp(mode, "ridge")) return ridge(argc, argv);
  if (!strcmp(mode, "overlap")) return overlap(argc, argv);
  if (!strcmp(mode, "attn")) return attn(argc, argv);
  if (!strcmp(mode, "peak")) {
    kf_fma_peak(50);
    printf("FMA peak: %.1f GFLOP/s (2 threads)\n", kf_fma_peak(200));
    return 0;
  }
  kf_blas_init();
  printf("blas: %s\n", kf_blas_name());
  size_t bwn = (512u << 20) / 4;
  float *big = fill(bwn, 1);
  kf_read_bandwidth(big, bwn, 1);
  double bw = kf_read_bandwidth(big, bwn, 5);
  printf("DRAM read: %.1f GB/s\n", bw);
  free(big);
  if (!strcmp(mode, "shapes") || !strcmp(mode, "all")) {
    size_t shapes[][3] = {{1, 768, 3072}, {8, 768, 3072}, {64, 768, 3072}, {512, 768, 3072}, {512, 3072, 768}};
    for (int s = 0; s < 5; s++) {
      size_t M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
      float *x = fill(M * K, 2), *w = fill(N * K, 3), *o = fill(M * N, 4);
      double fl = 2.0 * M * K * N, t[400];
      int reps = fl > 1e9 ? 15 : 200;
      for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 3; i++) pass ? (void)kf_blas_linear(o, x, w, M, K, N) : kf_linear(o, x, w, NULL, M, K, N);
        for (int i = 0; i < reps; i++) {
          double t0 = now_ms();
          if (pass) kf_blas_linear(o, x, w, M, K, N); else kf_linear(o, x, w, NULL, M, K, N);
          t[i] = now_ms() - t0;
        }
        qsort(t, reps, sizeof(double), cmp);
        printf("%s [%zu,%zu]x[%zu,%zu]: median %.3f ms %.1f GF/s (best %.1f)\n", pass ? "blas  " : "kforce", M, K, K, N,
               t[reps / 2], fl / t[reps / 2] / 1e6, fl / t[0] / 1e6);
      }
      free(x); free(w); free(o);
    }
  }
  if (!strcmp(mode, "decode") || !strcmp(mode, "all")) {
    size_t rowsv[16] = {1, 2, 4, 8, 16, 32, 64, 128, 512};
    int nrows = 9;
    if (argc > 2) {
      nrows = 0;
      for (char *p = strtok(argv[2], ","); p && nrows < 16; p = strtok(NULL, ",")) rowsv[nrows++] = atoi(p);
    }
    mat ms[5] = {{2304, 768, 0, 12}, {768, 768, 0, 12}, {3072, 768, 1, 12}, {768, 3072, 1, 12}, {50258, 768, 1, 1}};
    float *W[64], *B[64];
    size_t NN[64], KK[64];
    int nw = 0;
    double bytes = 0, flops = 0;
    for (int m = 0; m < 5; m++)
      for (int c = 0; c < ms[m].count; c++) {
        W[nw] = fill(ms[m].N * ms[m].K, 100 + nw);
        B[nw] = ms[m].bias ? fill(ms[m].N, 7) : NULL;
        NN[nw] = ms[m].N; KK[nw] = ms[m].K;
        bytes += ms[m].N * ms[m].K * 4.0 + (ms[m].bias ? ms[m].N * 4.0 : 0);
        flops += 2.0 * ms[m].N * ms[m].K;
        nw++;
      }
    float *x = fill(512 * 3072, 5), *y = fill(512 * 50258, 6);
    double bound = bytes / (bw * 1e9) * 1e3;
    printf("decode: %.0f MB, bound %.2f ms\n", bytes / 1e6, bound);
    for (int r = 0; r < nrows; r++) {
      size_t rows = rowsv[r];
      double t[20];
      int reps = rows >= 128 ? 3 : 7;
      for (int pass = 0; pass < 2; pass++) {
        if (pass && rows > 64) break;
        for (int i = -1; i < reps; i++) {
          double t0 = now_ms();
          for (int k = 0; k < nw; k++)
            if (pass) kf_blas_linear(y, x, W[k], rows, KK[k], NN[k]);
            else kf_linear(y, x, W[k], B[k], rows, KK[k], NN[k]);
          if (i >= 0) t[i] = now_ms() - t0;
        }
        qsort(t, reps, sizeof(double), cmp);
        printf("%s rows %4zu: median %7.2f ms best %7.2f  %3.0f%% of bound  %6.1f GF/s\n", pass ? "blas  " : "kforce", rows,
               t[reps / 2], t[0], 100 * bound / t[reps / 2], flops * rows / t[reps / 2] / 1e6);
      }
    }
  }
  return 0;
}
