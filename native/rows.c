// Row glue of the decode forward that was plain JS: the residual add (a += b) and the scatter of new K/V rows into
// the paged cache. Both are pure data movement plus one float add per element, so the results equal the JS loops
// bit for bit (a float32 sum rounded from double, as JS does, is the float32 sum).
#include <string.h>
#include "kf.h"
#ifdef __AVX512F__
#include <immintrin.h>
#endif

typedef struct {
  float *a;
  const float *b;
  size_t n;
} add_job;

static void add_range(float *a, const float *b, size_t n) {
  size_t i = 0;
#ifdef __AVX512F__
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(a + i, _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
#endif
  for (; i < n; i++) a[i] += b[i];
}

static void add_task(void *arg, int tid, int nt) {
  add_job *j = arg;
  // split on 16-float boundaries so both halves stay vector-aligned relative to the start
  size_t blocks = (j->n + 15) / 16, lo = blocks * tid / nt * 16, hi = blocks * (tid + 1) / nt * 16;
  if (hi > j->n) hi = j->n;
  if (lo < hi) add_range(j->a + lo, j->b + lo, hi - lo);
}

void kf_add_inplace(float *a, const float *b, size_t n) {
  add_job j = {a, b, n};
  kf_parallel(add_task, &j, n >= KF_ROW_OPS_PAR_MIN ? KF_THREADS : 1);
}

typedef struct {
  float *dst;
  const float *src;
  size_t dstStride, srcStride, width, rows;
  const int32_t *rowIndex;
} scatter_job;

static void scatter_task(void *arg, int tid, int nt) {
  const scatter_job *j = arg;
  const size_t r0 = j->rows * (size_t)tid / (size_t)nt, r1 = j->rows * (size_t)(tid + 1) / (size_t)nt;
  for (size_t r = r0; r < r1; r++)
    memcpy(j->dst + (size_t)j->rowIndex[r] * j->dstStride, j->src + r * j->srcStride, j->width * sizeof(float));
}

// Both threads copy: the source rows were just written by both (the QKV projection splits its output columns between
// them) and the destination rows are usually not in any cache, so a copy waits on line transfers; two threads keep
// twice as many in flight.
void kf_scatter_rows(float *dst, size_t dstStride, const float *src, size_t srcStride, size_t width,
                     const int32_t *rowIndex, size_t rows) {
  scatter_job j = {dst, src, dstStride, srcStride, width, rows, rowIndex};
  kf_parallel(scatter_task, &j, rows >= 2 && rows * width >= 4096 ? KF_THREADS : 1);
}
