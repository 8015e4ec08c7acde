// Softmax cross-entropy, sum of squares, AdamW and the memory-bandwidth probe.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "kf.h"
#include "simd.h"

// ---- cross-entropy ------------------------------------------------------------------------------------------------
typedef struct {
  float *losses, *dlogits;
  const float *logits, *rowScale;
  const int32_t *targets;
  size_t rows, V;
  int32_t ignoreIndex;
} ce_job;

static float row_max(const float *x, size_t V) {
#ifdef __AVX512F__
  __m512 mv = _mm512_set1_ps(-INFINITY);
  for (size_t k = 0; k < V; k += 16) {
    __mmask16 m = kf_tail_mask(V - k);
    mv = _mm512_mask_max_ps(mv, m, mv, _mm512_maskz_loadu_ps(m, x + k));
  }
  return _mm512_reduce_max_ps(mv);
#else
  float mx = -INFINITY;
  for (size_t k = 0; k < V; k++) mx = x[k] > mx ? x[k] : mx;
  return mx;
#endif
}

// sum_k exp(x_k - mx), exponentials in float, accumulated in float64.
static double row_sumexp(const float *x, size_t V, float mx) {
#ifdef __AVX512F__
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  const __m512 mv = _mm512_set1_ps(mx);
  for (size_t k = 0; k < V; k += 16) {
    __mmask16 m = kf_tail_mask(V - k);
    __m512 e = _mm512_maskz_mov_ps(m, kf_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + k), mv)));
    s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castsi256_ps(_mm512_extracti64x4_epi64(_mm512_castps_si512(e), 1))));
  }
  return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
#else
  double s = 0.0;
  for (size_t k = 0; k < V; k++) s += (double)expf(x[k] - mx);
  return s;
#endif
}

// d[k] = exp(x_k - mx) * inv * scale (the onehot is subtracted by the caller).
static void row_probs(float *d, const float *x, size_t V, float mx, float inv, float scale) {
#ifdef __AVX512F__
  const __m512 mv = _mm512_set1_ps(mx), iv = _mm512_set1_ps(inv), sv = _mm512_set1_ps(scale);
  for (size_t k = 0; k < V; k += 16) {
    __mmask16 m = kf_tail_mask(V - k);
    __m512 e = kf_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + k), mv));
    _mm512_mask_storeu_ps(d + k, m, _mm512_mul_ps(_mm512_mul_ps(e, iv), sv));
  }
#else
  for (size_t k = 0; k < V; k++) d[k] = expf(x[k] - mx) * inv * scale;
#endif
}

static void ce_task(void *p, int tid, int nt) {
  ce_job *j = p;
  const size_t V = j->V;
  size_t r0 = j->rows * (size_t)tid / (size_t)nt, r1 = j->rows * (size_t)(tid + 1) / (size_t)nt;
  for (size_t r = r0; r < r1; r++) {
    const float *x = j->logits + r * V;
    float *d = j->dlogits ? j->dlogits + r * V : NULL;
    const int32_t t = j->targets[r];
    if (t == j->ignoreIndex) {
      j->losses[r] = 0.0f;
      if (d) memset(d, 0, V * sizeof(float));
      continue;
    }
    const float mx = row_max(x, V);
    const double sum = row_sumexp(x, V, mx);
    j->losses[r] = (float)(log(sum) + (double)mx - (double)x[t]);
    if (d) {
      const float scale = j->rowScale ? j->rowScale[r] : 1.0f;
      const float inv = (float)(1.0 / sum);
      row_probs(d, x, V, mx, inv, scale);
      // The target entry uses the same exp as its neighbours.
#ifdef __AVX512F__
      const float et = _mm512_cvtss_f32(kf_exp512(_mm512_set1_ps(x[t] - mx)));
#else
      const float et = expf(x[t] - mx);
#endif
      d[t] = (et * inv - 1.0f) * scale;
    }
  }
}

void kf_cross_entropy(float *losses, float *dlogits, const float *logits, const int32_t *targets, size_t rows,
                      size_t V, int32_t ignoreIndex, const float *rowScale) {
  ce_job j = {losses, dlogits, logits, rowScale, targets, rows, V, ignoreIndex};
  kf_parallel(ce_task, &j, rows * V >= 65536 && rows > 1 ? KF_THREADS : 1);
}

// ---- sum of squares -------------------------------------------------------------------------------------------------
typedef struct {
  const float *g;
  size_t n;
  int parts;
  double part[KF_THREADS];
} ss_job;

static double ss_range(const float *g, size_t n) {
  double acc[8] = {0};
  size_t k = 0;
  for (; k + 8 <= n; k += 8)
    for (int l = 0; l < 8; l++) acc[l] += (double)g[k + l] * (double)g[k + l];
  for (; k < n; k++) acc[k & 7] += (double)g[k] * (double)g[k];
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

static void ss_task(void *p, int tid, int nt) {
  ss_job *j = p;
  for (int part = tid; part < j->parts; part += nt) {
    // Part boundaries at multiples of 8 keep the lane assignment of every element fixed.
    size_t b = j->n / 8;
    size_t i0 = b * (size_t)part / (size_t)j->parts * 8;
    size_t i1 = part == j->parts - 1 ? j->n : b * (size_t)(part + 1) / (size_t)j->parts * 8;
    j->part[part] = ss_range(j->g + i0, i1 - i0);
  }
}

double kf_sum_squares(const float *g, size_t n) {
  ss_job j;
  j.g = g;
  j.n = n;
  j.parts = n >= (1u << 18) ? KF_THREADS : 1;
  kf_parallel(ss_task, &j, j.parts);
  double s = 0.0;
  for (int i = 0; i < j.parts; i++) s += j.part[i];
  return s;
}

// ---- AdamW (PyTorch's formulation: decay first, then the bias-corrected Adam step) --------------------------------------
typedef struct {
  float *p, *m, *v;
  const float *g;
  const uint8_t *mask;
  size_t n;
  float decay, b1, b2, omb1, omb2, stepSize, invSqrtBc2, eps, gs;
} adam_job;

static void adam_task(void *arg, int tid, int nt) {
  adam_job *j = arg;
  size_t i0 = j->n * (size_t)tid / (size_t)nt, i1 = j->n * (size_t)(tid + 1) / (size_t)nt;
  for (size_t i = i0; i < i1; i++) {
    float g = j->g[i] * j->gs;
    float p = j->p[i];
    if (!j->mask || j->mask[i]) p *= j->decay;
    float m = j->b1 * j->m[i] + j->omb1 * g;
    float v = j->b2 * j->v[i] + j->omb2 * g * g;
    j->m[i] = m;
    j->v[i] = v;
    j->p[i] = p - j->stepSize * m / (sqrtf(v) * j->invSqrtBc2 + j->eps);
  }
}

void kf_adamw(float *p, const float *g, float *m, float *v, const uint8_t *decayMask, size_t n,
              const kf_adamw_opts *o) {
  const double bc1 = 1.0 - pow((double)o->beta1, o->step), bc2 = 1.0 - pow((double)o->beta2, o->step);
  adam_job j = {p, m, v, g, decayMask, n,
                (float)(1.0 - (double)o->lr * (double)o->weightDecay), o->beta1, o->beta2,
                (float)(1.0 - (double)o->beta1), (float)(1.0 - (double)o->beta2),
                (float)((double)o->lr / bc1), (float)(1.0 / sqrt(bc2)), o->eps, o->gradScale};
  kf_parallel(adam_task, &j, n >= 65536 ? KF_THREADS : 1);
}

// ---- read bandwidth ---------------------------------------------------------------------------------------------------
typedef struct {
  const float *buf;
  size_t n;
  float sums[KF_THREADS];
} bw_job;

static void bw_task(void *p, int tid, int nt) {
  bw_job *j = p;
  size_t i0 = j->n * (size_t)tid / (size_t)nt, i1 = j->n * (size_t)(tid + 1) / (size_t)nt;
  const float *b = j->buf;
  float s = 0.0f;
#ifdef __AVX512F__
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = i0;
  for (; i + 64 <= i1; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_loadu_ps(b + i));
    a1 = _mm512_add_ps(a1, _mm512_loadu_ps(b + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_loadu_ps(b + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_loadu_ps(b + i + 48));
  }
  s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  for (; i < i1; i++) s += b[i];
#else
  float acc[16] = {0};
  size_t i = i0;
  for (; i + 16 <= i1; i += 16)
    for (int l = 0; l < 16; l++) acc[l] += b[i + l];
  for (; i < i1; i++) s += b[i];
  s += kf_tree16(acc);
#endif
  j->sums[nt == 1 ? 0 : tid] = s;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

volatile float kf_bw_sink;

double kf_read_bandwidth(const float *buf, size_t n, int reps) {
  double best = 0.0;
  for (int r = 0; r < reps; r++) {
    bw_job j = {buf, n, {0}};
    double t0 = now_s();
    kf_parallel(bw_task, &j, KF_THREADS);
    double dt = now_s() - t0;
    kf_bw_sink = j.sums[0] + j.sums[KF_THREADS - 1];
    double gbs = (double)n * sizeof(float) / dt / 1e9;
    if (gbs > best) best = gbs;
  }
  return best;
}

// ---- FMA peak probe -------------------------------------------------------------------------------------------------
// Independent FMA chains on every pool thread for about `ms` milliseconds; returns GFLOP/s for the whole pool, so the
// benchmarks can state efficiency against this machine's measured peak (which also reflects any co-tenant load).
typedef struct {
  double ms;
  double iters[KF_THREADS];
  float sink[KF_THREADS];
} fp_job;

#define FP_CHAINS 12
static void fp_task(void *p, int tid, int nt) {
  fp_job *j = p;
  double t0 = now_s(), iters = 0;
#ifdef __AVX512F__
  __m512 a[FP_CHAINS];
  for (int c = 0; c < FP_CHAINS; c++) a[c] = _mm512_set1_ps(0.001f * (float)(c + tid));
  const __m512 b = _mm512_set1_ps(0.9999f), d = _mm512_set1_ps(1e-4f);
  do {
    for (int i = 0; i < 4096; i++)
#pragma GCC unroll 12
      for (int c = 0; c < FP_CHAINS; c++) a[c] = _mm512_fmadd_ps(a[c], b, d);
    iters += 4096.0 * FP_CHAINS * 16;
  } while (now_s() - t0 < j->ms * 1e-3);
  __m512 s = a[0];
  for (int c = 1; c < FP_CHAINS; c++) s = _mm512_add_ps(s, a[c]);
  j->sink[nt == 1 ? 0 : tid] = _mm512_reduce_add_ps(s);
#else
  float a[FP_CHAINS][16];
  for (int c = 0; c < FP_CHAINS; c++)
    for (int l = 0; l < 16; l++) a[c][l] = 0.001f * (float)(c + tid + l);
  do {
    for (int i = 0; i < 4096; i++)
      for (int c = 0; c < FP_CHAINS; c++)
        for (int l = 0; l < 16; l++) a[c][l] = fmaf(a[c][l], 0.9999f, 1e-4f);
    iters += 4096.0 * FP_CHAINS * 16;
  } while (now_s() - t0 < j->ms * 1e-3);
  j->sink[nt == 1 ? 0 : tid] = a[0][0] + a[FP_CHAINS - 1][15];
#endif
  j->iters[nt == 1 ? 0 : tid] += iters;
}

double kf_fma_peak(double ms) {
  fp_job j;
  memset(&j, 0, sizeof j);
  j.ms = ms;
  double t0 = now_s();
  kf_parallel(fp_task, &j, KF_THREADS);
  double dt = now_s() - t0, total = 0;
  for (int i = 0; i < KF_THREADS; i++) total += j.iters[i];
  kf_bw_sink = j.sink[0];
  return 2.0 * total / dt / 1e9;
}
