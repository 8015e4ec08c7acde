// LayerNorm and GELU, forward and backward. Row statistics use float64 accumulation in a fixed order per row.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "kf.h"
#include "simd.h"

// Fixed-order float64 sums over one row: 8 lane accumulators, then a pairwise tree.
static double tree8(const double *a) { return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])); }

static void row_stats(const float *x, size_t D, float eps, float *mean_out, float *rstd_out) {
  double acc[8] = {0};
  size_t k = 0;
  for (; k + 8 <= D; k += 8)
    for (int l = 0; l < 8; l++) acc[l] += (double)x[k + l];
  for (; k < D; k++) acc[k & 7] += (double)x[k];
  double mean = tree8(acc) / (double)D;
  double v[8] = {0};
  for (k = 0; k + 8 <= D; k += 8)
    for (int l = 0; l < 8; l++) {
      double d = (double)x[k + l] - mean;
      v[l] += d * d;
    }
  for (; k < D; k++) {
    double d = (double)x[k] - mean;
    v[k & 7] += d * d;
  }
  double var = tree8(v) / (double)D;
  *mean_out = (float)mean;
  *rstd_out = (float)(1.0 / sqrt(var + (double)eps));
}

typedef struct {
  float *out, *mean, *rstd;
  const float *x, *w, *b;
  size_t rows, D;
  float eps;
} ln_job;

static void ln_task(void *p, int tid, int nt) {
  ln_job *j = p;
  size_t r0 = j->rows * (size_t)tid / (size_t)nt, r1 = j->rows * (size_t)(tid + 1) / (size_t)nt;
  const size_t D = j->D;
  for (size_t r = r0; r < r1; r++) {
    const float *x = j->x + r * D;
    float *o = j->out + r * D;
    float mean, rstd;
    row_stats(x, D, j->eps, &mean, &rstd);
    j->mean[r] = mean;
    j->rstd[r] = rstd;
    if (j->b)
      for (size_t k = 0; k < D; k++) o[k] = (x[k] - mean) * rstd * j->w[k] + j->b[k];
    else
      for (size_t k = 0; k < D; k++) o[k] = (x[k] - mean) * rstd * j->w[k];
  }
}

void kf_layernorm(float *out, float *mean, float *rstd, const float *x, const float *weight, const float *bias,
                  size_t rows, size_t D, float eps) {
  ln_job j = {out, mean, rstd, x, weight, bias, rows, D, eps};
  kf_parallel(ln_task, &j, rows * D >= KF_ROW_OPS_PAR_MIN && rows > 1 ? KF_THREADS : 1);
}

typedef struct {
  float *dx;
  const float *dout, *x, *mean, *rstd, *w;
  size_t rows, D;
  int parts;
  float *partial; // [parts][2][D]: dweight and dbias partial sums of each part
} lnb_job;

static void lnb_task(void *p, int tid, int nt) {
  lnb_job *j = p;
  const size_t D = j->D;
  // Rows are cut into a fixed number of parts (independent of how many threads run), so the partial sums and
  // their combination order are the same on every run.
  for (int part = tid; part < j->parts; part += nt) {
    size_t r0 = j->rows * (size_t)part / (size_t)j->parts, r1 = j->rows * (size_t)(part + 1) / (size_t)j->parts;
    float *dw = j->partial + (size_t)part * 2 * D, *db = dw + D;
    memset(dw, 0, 2 * D * sizeof(float));
    for (size_t r = r0; r < r1; r++) {
      const float *restrict x = j->x + r * D, *restrict g = j->dout + r * D, *restrict w = j->w;
      float *restrict dx = j->dx + r * D;
      float *restrict dwp = dw, *restrict dbp = db;
      const float mean = j->mean[r], rstd = j->rstd[r];
      // 16 independent float lanes (vectorisable); backward sums need no fixed order beyond being repeatable.
      float sg[16] = {0}, sgx[16] = {0};
      size_t k = 0;
      for (; k + 16 <= D; k += 16)
        for (int l = 0; l < 16; l++) {
          const float xh = (x[k + l] - mean) * rstd, gk = g[k + l] * w[k + l];
          sg[l] += gk;
          sgx[l] += gk * xh;
          dwp[k + l] += g[k + l] * xh;
          dbp[k + l] += g[k + l];
        }
      for (; k < D; k++) {
        const float xh = (x[k] - mean) * rstd, gk = g[k] * w[k];
        sg[k & 15] += gk;
        sgx[k & 15] += gk * xh;
        dwp[k] += g[k] * xh;
        dbp[k] += g[k];
      }
      const float mg = kf_tree16(sg) / (float)D, mgx = kf_tree16(sgx) / (float)D;
      for (k = 0; k < D; k++) {
        const float xh = (x[k] - mean) * rstd;
        dx[k] += rstd * (g[k] * w[k] - mg - xh * mgx);
      }
    }
  }
}

void kf_layernorm_backward(float *dx, float *dweight, float *dbias, const float *dout, const float *x,
                           const float *mean, const float *rstd, const float *weight, size_t rows, size_t D) {
  int parts = rows * D >= KF_ROW_OPS_PAR_MIN && rows > 1 ? 2 : 1;
  float *partial = malloc((size_t)parts * 2 * D * sizeof(float));
  if (!partial) abort();
  lnb_job j = {dx, dout, x, mean, rstd, weight, rows, D, parts, partial};
  kf_parallel(lnb_task, &j, parts);
  for (int part = 0; part < parts; part++) {
    const float *dw = partial + (size_t)part * 2 * D, *db = dw + D;
    for (size_t k = 0; k < D; k++) dweight[k] += dw[k];
    if (dbias)
      for (size_t k = 0; k < D; k++) dbias[k] += db[k];
  }
  free(partial);
}

// ---- GELU -------------------------------------------------------------------------------------------------------
// tanh form: 0.5 x (1 + tanh(u)) == x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3). The sigmoid form keeps full
// relative accuracy for large negative x, where 1 + tanh(u) would cancel.
#define GELU_C 0.7978845608028654f
#define GELU_A 0.044715f
#define INV_SQRT2 0.7071067811865476f
#define INV_SQRT2PI 0.3989422804014327f

typedef struct {
  float *out;
  const float *x, *dout;
  size_t n;
  int exact, backward;
} gelu_job;

static inline float gelu_tanh1(float x) {
  float u = GELU_C * (x + GELU_A * x * x * x);
  return x / (1.0f + expf(-2.0f * u));
}
static inline float gelu_tanh_grad1(float x) {
  float u = GELU_C * (x + GELU_A * x * x * x);
  float s = 1.0f / (1.0f + expf(-2.0f * u));
  float du = GELU_C * (1.0f + 3.0f * GELU_A * x * x);
  // d/dx [x s(2u)] = s + x * 2 s (1 - s) u'
  return s + 2.0f * x * s * (1.0f - s) * du;
}
static inline float gelu_exact1(float x) { return 0.5f * x * (1.0f + erff(x * INV_SQRT2)); }
static inline float gelu_exact_grad1(float x) {
  return 0.5f * (1.0f + erff(x * INV_SQRT2)) + x * INV_SQRT2PI * expf(-0.5f * x * x);
}

static void gelu_range(const gelu_job *j, size_t i0, size_t i1) {
  size_t i = i0;
  if (j->exact) {
    if (j->backward)
      for (; i < i1; i++) j->out[i] += j->dout[i] * gelu_exact_grad1(j->x[i]);
    else
      for (; i < i1; i++) j->out[i] = gelu_exact1(j->x[i]);
    return;
  }
#ifdef __AVX512F__
  // The tail goes through the same vector arithmetic (masked), so an element's bits never depend on where it sits.
  const __m512 c = _mm512_set1_ps(GELU_C), a = _mm512_set1_ps(GELU_A), one = _mm512_set1_ps(1.0f);
  const __m512 m2 = _mm512_set1_ps(-2.0f), two = _mm512_set1_ps(2.0f), a3 = _mm512_set1_ps(3.0f * GELU_A);
  for (; i < i1; i += 16) {
    __mmask16 m = kf_tail_mask(i1 - i);
    __m512 x = _mm512_maskz_loadu_ps(m, j->x + i);
    if (!j->backward) {
      _mm512_mask_storeu_ps(j->out + i, m, kf_gelu_tanh512(x));
      continue;
    }
    // The backward repeats kf_gelu_tanh512's operations for s and reuses them for the derivative.
    __m512 x2 = _mm512_mul_ps(x, x);
    __m512 u = _mm512_mul_ps(c, _mm512_fmadd_ps(_mm512_mul_ps(a, x2), x, x));
    __m512 e = kf_exp512(_mm512_mul_ps(m2, u));
    // sigmoid(2u) = 1 / (1 + e): reciprocal estimate (14 bits) plus one Newton step (~23 bits) instead of a
    // division, several times cheaper; the result is still a fixed function of x.
    const __m512 den = _mm512_add_ps(one, e);
    __m512 s = _mm512_rcp14_ps(den);
    s = _mm512_mul_ps(s, _mm512_fnmadd_ps(den, s, two));
    s = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(den, _mm512_set1_ps(INFINITY), _CMP_LT_OQ), s); // 1/inf = 0
    {
      __m512 du = _mm512_mul_ps(c, _mm512_fmadd_ps(a3, x2, one));
      __m512 g = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_mul_ps(two, x), _mm512_mul_ps(s, _mm512_sub_ps(one, s))), du, s);
      __m512 d = _mm512_maskz_loadu_ps(m, j->out + i);
      _mm512_mask_storeu_ps(j->out + i, m, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, j->dout + i), g, d));
    }
  }
  return;
#endif
  if (j->backward)
    for (; i < i1; i++) j->out[i] += j->dout[i] * gelu_tanh_grad1(j->x[i]);
  else
    for (; i < i1; i++) j->out[i] = gelu_tanh1(j->x[i]);
}

static void gelu_task(void *p, int tid, int nt) {
  gelu_job *j = p;
  size_t blocks = j->n / 16;
  size_t i0 = blocks * (size_t)tid / (size_t)nt * 16, i1 = blocks * (size_t)(tid + 1) / (size_t)nt * 16;
  if (tid == nt - 1) i1 = j->n;
  gelu_range(j, i0, i1);
}

void kf_gelu(float *out, const float *x, size_t n, int exact) {
  gelu_job j = {out, x, NULL, n, exact, 0};
  kf_parallel(gelu_task, &j, n >= KF_ROW_OPS_PAR_MIN ? KF_THREADS : 1);
}

void kf_gelu_backward(float *dx, const float *dout, const float *x, size_t n, int exact) {
  gelu_job j = {dx, x, dout, n, exact, 1};
  kf_parallel(gelu_task, &j, n >= KF_ROW_OPS_PAR_MIN ? KF_THREADS : 1);
}
