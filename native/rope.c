// Rotary embedding, non-interleaved halves. The angle is position * inv_freq in float64 (the TypeScript backend's
// definition; PyTorch rounds the angle to float32 first, a difference below 1e-4 rad at position 1000), its cos/sin
// evaluated in float64 and rounded once to float32. cos/sin rows are cached per position for the current
// inv_freq: training and decoding revisit the same positions on every call, and the trig dominates otherwise.
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "kf.h"

#define CACHE_MAX_POS 65536

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static float *cache_inv = NULL;  // copy of inv_freq the table was built for
static size_t cache_half = 0;
static float *cache_cs = NULL;   // [pos][half][2] = cos, sin
static size_t cache_cap = 0;     // positions [0, cache_cap) are filled

static void angle_cs(int32_t pos, const float *invFreq, size_t half, float *cs) {
  for (size_t j = 0; j < half; j++) {
    double ang = (double)pos * (double)invFreq[j];
    cs[2 * j] = (float)cos(ang);
    cs[2 * j + 1] = (float)sin(ang);
  }
}

// Makes sure positions [0, need) are in the table; returns 0 when the table cannot be used (then compute directly).
static int cache_prepare(const float *invFreq, size_t half, size_t need) {
  if (need > CACHE_MAX_POS) return 0;
  if (!cache_inv || cache_half != half || memcmp(cache_inv, invFreq, half * sizeof(float)) != 0) {
    free(cache_inv);
    free(cache_cs);
    cache_cs = NULL;
    cache_cap = 0;
    cache_half = half;
    cache_inv = malloc(half * sizeof(float));
    if (!cache_inv) return 0;
    memcpy(cache_inv, invFreq, half * sizeof(float));
  }
  if (need <= cache_cap) return 1;
  size_t cap = cache_cap ? cache_cap : 256;
  while (cap < need) cap *= 2;
  if (cap > CACHE_MAX_POS) cap = CACHE_MAX_POS;
  float *cs = realloc(cache_cs, cap * half * 2 * sizeof(float));
  if (!cs) return 0;
  cache_cs = cs;
  for (size_t p = cache_cap; p < cap; p++) angle_cs((int32_t)p, invFreq, half, cs + p * half * 2);
  cache_cap = cap;
  return 1;
}

typedef struct {
  float *x;
  size_t stride, rows, nHeads, headDim;
  const int32_t *positions;
  const float *invFreq;
  int inverse, cached;
} rope_job;

static void rope_task(void *p, int tid, int nt) {
  rope_job *j = p;
  const size_t half = j->headDim / 2;
  size_t r0 = j->rows * (size_t)tid / (size_t)nt, r1 = j->rows * (size_t)(tid + 1) / (size_t)nt;
  float *tmp = j->cached ? NULL : malloc(half * 2 * sizeof(float));
  const float sgn = j->inverse ? -1.0f : 1.0f;
  for (size_t r = r0; r < r1; r++) {
    const float *cs;
    if (j->cached) cs = cache_cs + (size_t)j->positions[r] * half * 2;
    else {
      if (!tmp) abort();
      angle_cs(j->positions[r], j->invFreq, half, tmp);
      cs = tmp;
    }
    float *row = j->x + r * j->stride;
    for (size_t h = 0; h < j->nHeads; h++) {
      float *a = row + h * j->headDim, *b = a + half;
      for (size_t i = 0; i < half; i++) {
        float c = cs[2 * i], s = sgn * cs[2 * i + 1];
        float x1 = a[i], x2 = b[i];
        a[i] = x1 * c - x2 * s;
        b[i] = x2 * c + x1 * s;
      }
    }
  }
  free(tmp);
}

void kf_rope(float *x, size_t stride, size_t rows, size_t nHeads, size_t headDim, const int32_t *positions,
             const float *invFreq, int inverse) {
  const size_t half = headDim / 2;
  if (rows == 0 || half == 0) return;
  int32_t lo = positions[0], hi = positions[0];
  for (size_t r = 1; r < rows; r++) {
    if (positions[r] < lo) lo = positions[r];
    if (positions[r] > hi) hi = positions[r];
  }
  pthread_mutex_lock(&cache_mu);
  int cached = lo >= 0 && cache_prepare(invFreq, half, (size_t)hi + 1);
  rope_job j = {x, stride, rows, nHeads, headDim, positions, invFreq, inverse, cached};
  kf_parallel(rope_task, &j, rows * nHeads * headDim >= KF_ROW_OPS_PAR_MIN && rows > 1 ? KF_THREADS : 1);
  pthread_mutex_unlock(&cache_mu);
}
