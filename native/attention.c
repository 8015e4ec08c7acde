// Masked multi-head attention over a CSR list of allowed key ranges, flash style (online softmax, no score matrix).
//
// Determinism: a query's allowed keys are visited in ascending order and cut into chunks of 16 by their ordinal in
// that key set (not by key index or range), and each chunk updates the running max / sum / output in one fixed
// sequence of operations. A query's result therefore depends only on its own key set and the q/k/v values, which
// makes cached decoding (one query against a KV cache) bit-identical to the same query inside a full forward.
//
// Forward splits (query, head) items between the threads by key count; backward gives each thread whole heads, so
// every dk/dv element is written by exactly one thread in a fixed order.
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "kf.h"
#include "simd.h"

#define CH 16

// Scores s[c] = scale * dot(q, k_c) for c < cnt (keys at kp[c]); same order as kf_dot16.
static void chunk_dots(const float *q, const float *const *kp, int cnt, size_t Dh, float scale, float *s) {
#ifdef __AVX512F__
  const float *p[CH];
  for (int c = 0; c < CH; c++) p[c] = kp[c < cnt ? c : 0];
  __m512 acc[CH];
  for (int c = 0; c < CH; c++) acc[c] = _mm512_setzero_ps();
  for (size_t d = 0; d < Dh; d += 16) {
    __mmask16 m = kf_tail_mask(Dh - d);
    __m512 qv = _mm512_maskz_loadu_ps(m, q + d);
    for (int c = 0; c < CH; c++) acc[c] = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, p[c] + d), acc[c]);
  }
  _mm512_storeu_ps(s, _mm512_mul_ps(kf_reduce(acc, CH), _mm512_set1_ps(scale)));
#else
  for (int c = 0; c < cnt; c++) s[c] = scale * kf_dot16(q, kp[c], Dh);
#endif
}

// e[c] = exp(x[c]) for c < cnt, 0 beyond.
static void chunk_exp(const float *x, int cnt, float *e) {
#ifdef __AVX512F__
  __mmask16 m = kf_tail_mask((size_t)cnt);
  _mm512_storeu_ps(e, _mm512_maskz_mov_ps(m, kf_exp512(_mm512_maskz_loadu_ps(m, x))));
#else
  for (int c = 0; c < CH; c++) e[c] = c < cnt ? expf(x[c]) : 0.0f;
#endif
}

// o[d] = o[d] * alpha + sum_c p[c] * v_c[d], c ascending.
static void chunk_axpy(float *o, float alpha, const float *p, const float *const *vp, int cnt, size_t Dh) {
  size_t d = 0;
#ifdef __AVX512F__
  for (; d < Dh; d += 16) {
    __mmask16 m = kf_tail_mask(Dh - d);
    __m512 ov = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, o + d), _mm512_set1_ps(alpha));
    for (int c = 0; c < cnt; c++) ov = _mm512_fmadd_ps(_mm512_set1_ps(p[c]), _mm512_maskz_loadu_ps(m, vp[c] + d), ov);
    _mm512_mask_storeu_ps(o + d, m, ov);
  }
#else
  for (; d < Dh; d++) {
    float acc = o[d] * alpha;
    for (int c = 0; c < cnt; c++) acc = fmaf(p[c], vp[c][d], acc);
    o[d] = acc;
  }
#endif
}

typedef struct {
  const kf_attn_args *a;
  const int64_t *cost;  // prefix sums of keys per query, [nq + 1]
} fwd_job;

static void attend_one(const kf_attn_args *a, size_t i, size_t h, float *o) {
  const size_t Dh = a->headDim;
  const float *q = a->q + i * a->qStride + h * Dh;
  const float *kp[CH], *vp[CH];
  float s[CH], p[CH], e[CH];
  float m = -INFINITY, l = 0.0f;
  int cnt = 0;
  memset(o, 0, Dh * sizeof(float));
  const int32_t r0 = a->rowPtr[i], r1 = a->rowPtr[i + 1];
  for (int32_t r = r0; r <= r1; r++) {
    int32_t j0 = 0, j1 = 0;
    if (r < r1) { j0 = a->ranges[2 * r]; j1 = a->ranges[2 * r + 1]; }
    for (int32_t j = j0; j < j1 || (r == r1 && cnt > 0); j++) {
      if (r < r1) {
        kp[cnt] = a->k + (size_t)j * a->kStride + h * Dh;
        vp[cnt] = a->v + (size_t)j * a->vStride + h * Dh;
        cnt++;
        if (cnt < CH) continue;
      }
      // Flush a full chunk, or the final partial one.
      chunk_dots(q, kp, cnt, Dh, a->scale, s);
      float mc = m;
      for (int c = 0; c < cnt; c++) mc = s[c] > mc ? s[c] : mc;
      if (mc != -INFINITY) {
        for (int c = 0; c < cnt; c++) p[c] = s[c] - mc;
        for (int c = cnt; c < CH; c++) p[c] = 0.0f;
        chunk_exp(p, cnt, e);
        float alpha = m == -INFINITY ? 0.0f : expf(m - mc);
        float sum = 0.0f;
        for (int c = 0; c < cnt; c++) sum += e[c];
        l = l * alpha + sum;
        chunk_axpy(o, alpha, e, vp, cnt, Dh);
        m = mc;
      }
      cnt = 0;
      if (r == r1) break;
    }
  }
  float *out = a->out + i * a->outStride + h * Dh;
  if (l > 0.0f) {
    const float inv = 1.0f / l;
    for (size_t d = 0; d < Dh; d++) out[d] = o[d] * inv;
    a->lse[i * a->nHeads + h] = m + logf(l);
  } else {
    memset(out, 0, Dh * sizeof(float));
    a->lse[i * a->nHeads + h] = -INFINITY;
  }
}

static void fwd_task(void *p, int tid, int nt) {
  fwd_job *j = p;
  const kf_attn_args *a = j->a;
  const int64_t H = (int64_t)a->nHeads;
  const size_t items = a->nq * a->nHeads;
  // Item t = (query t / H, head t % H) costs keys(query) + 1 (so empty queries still count). Items are laid out
  // on a line by cumulative cost; a thread takes the items that start inside its equal share of that line.
  const int64_t total = H * (j->cost[a->nq] + (int64_t)a->nq);
  const int64_t lo = total * tid / nt, hi = total * (tid + 1) / nt;
  size_t qlo = 0, qhi = a->nq;
  while (qlo < qhi) {
    size_t mid = (qlo + qhi) / 2;
    if (H * (j->cost[mid + 1] + (int64_t)mid + 1) <= lo) qlo = mid + 1;
    else qhi = mid;
  }
  float *o = malloc(a->headDim * sizeof(float) + 64);
  if (!o) abort();
  for (size_t t = qlo * a->nHeads; t < items; t++) {
    size_t i = t / a->nHeads, h = t % a->nHeads;
    const int64_t start = H * (j->cost[i] + (int64_t)i) + (int64_t)h * (j->cost[i + 1] - j->cost[i] + 1);
    if (start < lo) continue;
    if (start >= hi) break;
    attend_one(a, i, h, o);
  }
  free(o);
}

void kf_attention(const kf_attn_args *a) {
  int64_t *cost = malloc((a->nq + 1) * sizeof(int64_t));
  if (!cost) abort();
  cost[0] = 0;
  for (size_t i = 0; i < a->nq; i++) {
    int64_t c = 0;
    for (int32_t r = a->rowPtr[i]; r < a->rowPtr[i + 1]; r++) c += a->ranges[2 * r + 1] - a->ranges[2 * r];
    cost[i + 1] = cost[i] + c;
  }
  fwd_job j = {a, cost};
  double work = (double)cost[a->nq] * (double)a->nHeads * (double)a->headDim;
  kf_parallel(fwd_task, &j, work >= 65536 && a->nq * a->nHeads > 1 ? KF_THREADS : 1);
  free(cost);
}

// ---- backward ---------------------------------------------------------------------------------------------------
typedef struct {
  const kf_attn_args *a;
  atomic_size_t next_head;
} bwd_job;

static void backward_head(const kf_attn_args *a, size_t h, float *dqi) {
  const size_t Dh = a->headDim;
  const float *kp[CH], *vp[CH];
  float *dkp[CH], *dvp[CH];
  float s[CH], dp[CH], p[CH], x[CH];
  for (size_t i = 0; i < a->nq; i++) {
    const float lse = a->lse[i * a->nHeads + h];
    if (lse == -INFINITY) continue;
    const float *q = a->q + i * a->qStride + h * Dh;
    const float *go = a->dout + i * a->outStride + h * Dh;
    const float *out = a->out + i * a->outStride + h * Dh;
    const float Di = kf_dot16(go, out, Dh);
    memset(dqi, 0, Dh * sizeof(float));
    const int32_t r0 = a->rowPtr[i], r1 = a->rowPtr[i + 1];
    int cnt = 0;
    for (int32_t r = r0; r <= r1; r++) {
      int32_t j0 = 0, j1 = 0;
      if (r < r1) { j0 = a->ranges[2 * r]; j1 = a->ranges[2 * r + 1]; }
      for (int32_t j = j0; j < j1 || (r == r1 && cnt > 0); j++) {
        if (r < r1) {
          kp[cnt] = a->k + (size_t)j * a->kStride + h * Dh;
          vp[cnt] = a->v + (size_t)j * a->vStride + h * Dh;
          dkp[cnt] = a->dk + (size_t)j * a->kStride + h * Dh;
          dvp[cnt] = a->dv + (size_t)j * a->vStride + h * Dh;
          cnt++;
          if (cnt < CH) continue;
        }
        chunk_dots(q, kp, cnt, Dh, a->scale, s);
        chunk_dots(go, vp, cnt, Dh, 1.0f, dp);
        for (int c = 0; c < CH; c++) x[c] = c < cnt ? s[c] - lse : 0.0f;
        chunk_exp(x, cnt, p);
        for (int c = 0; c < cnt; c++) {
          const float ds = p[c] * (dp[c] - Di) * a->scale;
          float *dk = dkp[c], *dv = dvp[c];
          const float *kc = kp[c];
          const float pc = p[c];
          for (size_t d = 0; d < Dh; d++) {
            dv[d] += pc * go[d];
            dk[d] += ds * q[d];
            dqi[d] += ds * kc[d];
          }
        }
        cnt = 0;
        if (r == r1) break;
      }
    }
    float *dq = a->dq + i * a->qStride + h * Dh;
    for (size_t d = 0; d < Dh; d++) dq[d] += dqi[d];
  }
}

static void bwd_task(void *p, int tid, int nt) {
  (void)tid;
  (void)nt;
  bwd_job *j = p;
  float *dqi = malloc(j->a->headDim * sizeof(float) + 64);
  if (!dqi) abort();
  for (;;) {
    size_t h = atomic_fetch_add(&j->next_head, 1);
    if (h >= j->a->nHeads) break;
    backward_head(j->a, h, dqi);
  }
  free(dqi);
}

void kf_attention_backward(const kf_attn_args *a) {
  bwd_job j;
  j.a = a;
  atomic_init(&j.next_head, 0);
  int64_t pairs = 0;
  for (size_t i = 0; i < a->nq; i++)
    for (int32_t r = a->rowPtr[i]; r < a->rowPtr[i + 1]; r++) pairs += a->ranges[2 * r + 1] - a->ranges[2 * r];
  double work = (double)pairs * (double)a->nHeads * (double)a->headDim;
  kf_parallel(bwd_task, &j, work >= 65536 && a->nHeads > 1 ? KF_THREADS : 1);
}
