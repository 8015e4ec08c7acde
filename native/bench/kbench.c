// Stand-alone C driver of the native kernels (no Node): the same measurements as src/eval/bench-kernels.ts, for
// tuning on machines without Node or on quiet hosts. Build: see native/bench/build.sh. Not part of the addon.
//   kbench [shapes|decode|all] [rows,...] | kbench screen [rows,...] | kbench ab ... | kbench abdecode ... | kbench peak
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
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
static int abdecode(int argc, char **argv) {
  if (argc < 5) return fprintf(stderr, "usage: kbench abdecode rows knob v1,v2,...\n"), 2;
  size_t rows = atoi(argv[2]);
  long vals[16];
  int nv = 0;
  for (char *p = strtok(argv[4], ","); p && nv < 16; p = strtok(NULL, ",")) vals[nv++] = atol(p);
  mat ms[5] = {{2304, 768, 0, 12}, {768, 768, 0, 12}, {3072, 768, 1, 12}, {768, 3072, 1, 12}, {50258, 768, 1, 1}};
  float *W[64], *B[64], *WH[64];
  size_t NN[64], KK[64];
  int nw = 0;
  double bytes = 0;
  const int hk = !strcmp(argv[3], "thp"); // pseudo knob: 0 weights on 4 KB pages, 1 on huge pages
  for (int m = 0; m < 5; m++)
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
  const int reps = 12;
  static double t[16][64], bwv[64];
  for (int r = -1; r < reps; r++) {
    bwv[r < 0 ? 0 : r] = kf_read_bandwidth(big, bwn, 1);
    for (int v = 0; v < nv; v++) {
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
  float *meta = malloc(4 * N * sizeof(float));
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
    printf("screen rows %2zu: median %.3f ms best %.3f (int8 weights %.1f MB)\n", M, t[7], t[0], kf_screen_bytes(N, K) / 1e6);
    for (size_t i = 0; i < nseq; i++) free(counts[i]);
    free(h); free(isum); free(out);
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "all";
  if (!strcmp(mode, "ab")) return ab(argc, argv);
  if (!strcmp(mode, "abdecode")) return abdecode(argc, argv);
  if (!strcmp(mode, "screen")) return screen(argc, argv);
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
