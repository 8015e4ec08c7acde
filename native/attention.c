// Masked multi-head attention over a CSR list of allowed key ranges, flash style (online softmax, no score matrix).
//
// Determinism: a query's allowed keys are visited in ascending order and cut into chunks of 16 by their ordinal in
// that key set (not by key index or range), and each chunk updates the running max / sum / output in one fixed
// sequence of operations. A query's result therefore depends only on its own key set and the q/k/v values, which
// makes cached decoding (one query against a KV cache) bit-identical to the same query inside a full forward.
//
// Forward splits (query group, head block) items between the threads by key count; backward gives each thread whole
// heads, so every dk/dv element is written by exactly one thread in a fixed order.
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "kf.h"
#include "simd.h"

#define CH 16

// Walks the allowed keys of query i in ascending order and hands them over in chunks of up to CH (by ordinal in the
// key set). The callback gets the key indices of the chunk.
typedef struct {
  const int32_t *ranges;
  int32_t r, r1, j, j1;
} key_iter;

static void keys_begin(key_iter *it, const kf_attn_args *a, size_t i) {
  it->ranges = a->ranges;
  it->r = a->rowPtr[i];
  it->r1 = a->rowPtr[i + 1];
  it->j = it->j1 = 0;
}

// Fills idx with up to CH next keys; returns how many (0 at the end).
static inline int keys_next(key_iter *it, int32_t *idx) {
  int cnt = 0;
  while (cnt < CH) {
    if (it->j >= it->j1) {
      if (it->r >= it->r1) break;
      it->j = it->ranges[2 * it->r];
      it->j1 = it->ranges[2 * it->r + 1];
      it->r++;
      continue;
    }
    int take = it->j1 - it->j < CH - cnt ? it->j1 - it->j : CH - cnt;
    for (int t = 0; t < take; t++) idx[cnt++] = it->j + t;
    it->j += take;
  }
  return cnt;
}

#ifdef __AVX512F__
// Lane c = dot(q, rows[c]) for c < cnt, in kf_dot16's order (lanes >= cnt are junk). rows[c] = base + idx[c]*stride.
static inline __m512 chunk_dots(const float *q, const float *base, size_t stride, const int32_t *idx, int cnt,
                                size_t Dh) {
  const float *p[CH];
#pragma GCC unroll 16
  for (int c = 0; c < CH; c++) p[c] = base + (size_t)idx[c < cnt ? c : 0] * stride;
  __m512 acc[CH];
#pragma GCC unroll 16
  for (int c = 0; c < CH; c++) acc[c] = _mm512_setzero_ps();
  for (size_t d = 0; d < Dh; d += 16) {
    const __mmask16 m = kf_tail_mask(Dh - d);
    const __m512 qv = _mm512_maskz_loadu_ps(m, q + d);
#pragma GCC unroll 16
    for (int c = 0; c < CH; c++) acc[c] = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, p[c] + d), acc[c]);
  }
  return kf_reduce16(acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7], acc[8], acc[9], acc[10],
                     acc[11], acc[12], acc[13], acc[14], acc[15]);
}
#endif

// One chunk of a query's keys (indices idx[0..cnt)) folded into its online softmax state (m, l, o). DHC: the head
// dimension as a compile-time constant (0: a->headDim), so that the common size runs without masks or loop control
// (7% faster for 8 queries over 1000 cached keys, runs/attn-bench.ts).
KF_INLINE void chunk_update_dh(const size_t DHC, const kf_attn_args *a, const float *q, const float *kb,
                               const float *vb, const int32_t *idx, int cnt, float *mp, float *lp, float *o) {
  const size_t Dh = DHC ? DHC : a->headDim;
  const float m = *mp;
#ifdef __AVX512F__
  const __mmask16 cm = kf_tail_mask((size_t)cnt);
  const __m512 s = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), cm,
                                      _mm512_mul_ps(chunk_dots(q, kb, a->kStride, idx, cnt, Dh),
                                                    _mm512_set1_ps(a->scale)));
  const float smax = _mm512_reduce_max_ps(s);
  const float mc = smax > m ? smax : m;
  if (mc == -INFINITY) return;
  const __m512 e = _mm512_maskz_mov_ps(cm, kf_exp512(_mm512_sub_ps(s, _mm512_set1_ps(mc))));
  const float alpha = m == -INFINITY ? 0.0f : expf(m - mc);
  *lp = *lp * alpha + _mm512_reduce_add_ps(e);
  float ev[CH];
  _mm512_storeu_ps(ev, e);
  const float *vp[CH];
  for (int c = 0; c < cnt; c++) vp[c] = vb + (size_t)idx[c] * a->vStride;
  for (size_t d = 0; d < Dh; d += 16) {
    const __mmask16 dm = kf_tail_mask(Dh - d);
    __m512 ov = _mm512_mul_ps(_mm512_maskz_loadu_ps(dm, o + d), _mm512_set1_ps(alpha));
    for (int c = 0; c < cnt; c++) ov = _mm512_fmadd_ps(_mm512_set1_ps(ev[c]), _mm512_maskz_loadu_ps(dm, vp[c] + d), ov);
    _mm512_mask_storeu_ps(o + d, dm, ov);
  }
  *mp = mc;
#else
  float s[CH], e[CH];
  float mc = m;
  for (int c = 0; c < cnt; c++) {
    s[c] = a->scale * kf_dot16(q, kb + (size_t)idx[c] * a->kStride, Dh);
    mc = s[c] > mc ? s[c] : mc;
  }
  if (mc == -INFINITY) return;
  const float alpha = m == -INFINITY ? 0.0f : expf(m - mc);
  float sum = 0.0f;
  for (int c = 0; c < cnt; c++) {
    e[c] = expf(s[c] - mc);
    sum += e[c];
  }
  *lp = *lp * alpha + sum;
  for (size_t d = 0; d < Dh; d++) {
    float acc = o[d] * alpha;
    for (int c = 0; c < cnt; c++) acc = fmaf(e[c], vb[(size_t)idx[c] * a->vStride + d], acc);
    o[d] = acc;
  }
  *mp = mc;
#endif
}

typedef void (*chunk_fn)(const kf_attn_args *, const float *, const float *, const float *, const int32_t *, int,
                         float *, float *, float *);
static void chunk_update_64(const kf_attn_args *a, const float *q, const float *kb, const float *vb,
                            const int32_t *idx, int cnt, float *mp, float *lp, float *o) {
  chunk_update_dh(64, a, q, kb, vb, idx, cnt, mp, lp, o);
}
static void chunk_update(const kf_attn_args *a, const float *q, const float *kb, const float *vb,
                         const int32_t *idx, int cnt, float *mp, float *lp, float *o) {
  chunk_update_dh(0, a, q, kb, vb, idx, cnt, mp, lp, o);
}

// Cached keys sit a whole K|V row apart, which the hardware prefetchers do not follow: the walk prefetches the K and V
// lines of head h for the keys of its next chunk (idx[0..cnt)) while it works on the current one.
// prefetch_rows covers keys idx[c0..c1) only, so that a chunk's prefetches can be spread over the work.
static inline void prefetch_rows(const kf_attn_args *a, size_t h, const int32_t *idx, int c0, int c1) {
  const size_t Dh = a->headDim;
  const float *kb = a->k + h * Dh, *vb = a->v + h * Dh;
  for (int c = c0; c < c1; c++) {
    const char *kp = (const char *)(kb + (size_t)idx[c] * a->kStride);
    const char *vp = (const char *)(vb + (size_t)idx[c] * a->vStride);
    for (size_t d = 0; d < Dh * sizeof(float); d += 64) {
      __builtin_prefetch(kp + d, 0, 3); // prefetcht0; the builtin also compiles where no x86 intrinsics exist
      __builtin_prefetch(vp + d, 0, 3);
    }
  }
}

static inline void prefetch_chunk(const kf_attn_args *a, size_t h, const int32_t *idx, int cnt) {
  prefetch_rows(a, h, idx, 0, cnt);
}

#define QG 8

// The batched chunk update below (AVX-512 only); KFORCE_ATTENTION_UNITS=0 turns it off (every (query, head) through
// chunk_update_64 alone): the tests compare the two bit for bit.
static int units_on = -1;
static int units_enabled(void) {
#ifdef __AVX512F__
  if (units_on < 0) {
    const char *e = getenv("KFORCE_ATTENTION_UNITS");
    units_on = !(e && !strcmp(e, "0"));
  }
  return units_on;
#else
  return 0;
#endif
}

#ifdef __AVX512F__
// A unit of the batched chunk update at head dim 64: one (query, head) pair. q is the query's head slice, k and v the
// head's base in the cache (a->k + h * Dh), m/l/o its online-softmax state; while it works, it prefetches keys
// nidx[pf0..pf1) of the next chunk for head pfh.
typedef struct {
  const float *q, *k, *v;
  float *m, *l, *o;
  size_t pfh;
  int pf0, pf1;
} unit64;

// PV for NB (<= 4) units of one full chunk: the NB x 4 accumulator chains are independent (one unit's update is a
// 16-long FMA chain per 16 dims, latency-bound alone); SHARED_V (all units of one head): every V row is loaded once
// for all of them. Per unit the operations are chunk_update_dh's: o * alpha, then e[c] * v[c] added for c ascending.
KF_INLINE void units_pv64(const int NB, const int SHARED_V, const unit64 *const *u, const float *alpha,
                          const float (*ev)[CH], const size_t *voff) {
  __m512 acc[4][4];
#pragma GCC unroll 4
  for (int j = 0; j < NB; j++)
#pragma GCC unroll 4
    for (int d = 0; d < 4; d++) acc[j][d] = _mm512_mul_ps(_mm512_loadu_ps(u[j]->o + 16 * d), _mm512_set1_ps(alpha[j]));
  for (int c = 0; c < CH; c++) {
    __m512 v[4];
    if (SHARED_V) {
#pragma GCC unroll 4
      for (int d = 0; d < 4; d++) v[d] = _mm512_loadu_ps(u[0]->v + voff[c] + 16 * d);
    }
#pragma GCC unroll 4
    for (int j = 0; j < NB; j++) {
      const __m512 e = _mm512_set1_ps(ev[j][c]);
#pragma GCC unroll 4
      for (int d = 0; d < 4; d++)
        acc[j][d] = _mm512_fmadd_ps(e, SHARED_V ? v[d] : _mm512_loadu_ps(u[j]->v + voff[c] + 16 * d), acc[j][d]);
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < NB; j++)
#pragma GCC unroll 4
    for (int d = 0; d < 4; d++) _mm512_storeu_ps(u[j]->o + 16 * d, acc[j][d]);
}

// units_pv64 for nb (1-4) units, each shape compiled with its unit count and V sharing fixed.
static void units_pv64_n(size_t nb, int shared_v, const unit64 *const *u, const float *alpha, const float (*ev)[CH],
                         const size_t *voff) {
  switch (nb * 2 + (shared_v != 0)) {
  case 2: units_pv64(1, 0, u, alpha, ev, voff); break;
  case 3: units_pv64(1, 1, u, alpha, ev, voff); break;
  case 4: units_pv64(2, 0, u, alpha, ev, voff); break;
  case 5: units_pv64(2, 1, u, alpha, ev, voff); break;
  case 6: units_pv64(3, 0, u, alpha, ev, voff); break;
  case 7: units_pv64(3, 1, u, alpha, ev, voff); break;
  case 8: units_pv64(4, 0, u, alpha, ev, voff); break;
  case 9: units_pv64(4, 1, u, alpha, ev, voff); break;
  default: abort(); // nb outside 1-4
  }
}

#define UMAX 8 // units per batched update
_Static_assert(QG <= UMAX, "a query group must fit one batched update");

// One full chunk (CH keys idx[]) folded into n <= UMAX units: bit-for-bit chunk_update_64 applied to each unit in
// turn, done in phases over all of them (dots, max, exp, sums, PV) so that their latency chains overlap instead of
// each unit's dots -> max -> exp -> sum -> PV chain waiting on the previous one. Units are either the queries of a
// group at one head (shared_v) or one query's heads. 8 queries over 1000 hot keys: 0.29 -> 0.17 ms per layer
// (runs/attn-bench.ts). The next chunk's prefetches are issued unit by unit: in one burst, 128 prefetches hold up
// the loads behind them (8 queries over 1000 cold keys, 12 layers: 3.45 -> 3.0 ms).
static void units_update64(const kf_attn_args *a, const unit64 *u, size_t n, int shared_v, const int32_t *idx,
                           const int32_t *nidx) {
  size_t koff[CH], voff[CH];
  for (int c = 0; c < CH; c++) {
    koff[c] = (size_t)idx[c] * a->kStride;
    voff[c] = (size_t)idx[c] * a->vStride;
  }
  __m512 sc[UMAX];
  for (size_t t = 0; t < n; t++) {
    prefetch_rows(a, u[t].pfh, nidx, u[t].pf0, u[t].pf1);
    // Key by key (the 4 FMAs of one key's dot in d order, as kf_dot16 adds them): one row pointer live at a time
    // and the query in 4 registers, where walking d outermost kept 16 row offsets live and spilled them.
    const __m512 q0 = _mm512_loadu_ps(u[t].q), q1 = _mm512_loadu_ps(u[t].q + 16);
    const __m512 q2 = _mm512_loadu_ps(u[t].q + 32), q3 = _mm512_loadu_ps(u[t].q + 48);
    __m512 acc[CH];
#pragma GCC unroll 16
    for (int c = 0; c < CH; c++) {
      const float *kr = u[t].k + koff[c];
      __m512 x = _mm512_fmadd_ps(q0, _mm512_loadu_ps(kr), _mm512_setzero_ps());
      x = _mm512_fmadd_ps(q1, _mm512_loadu_ps(kr + 16), x);
      x = _mm512_fmadd_ps(q2, _mm512_loadu_ps(kr + 32), x);
      acc[c] = _mm512_fmadd_ps(q3, _mm512_loadu_ps(kr + 48), x);
    }
    sc[t] = _mm512_mul_ps(kf_reduce16(acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7], acc[8], acc[9],
                                      acc[10], acc[11], acc[12], acc[13], acc[14], acc[15]),
                          _mm512_set1_ps(a->scale));
  }
  float mc[UMAX], alpha[UMAX];
  for (size_t t = 0; t < n; t++) {
    const float mt = *u[t].m, smax = _mm512_reduce_max_ps(sc[t]);
    mc[t] = smax > mt ? smax : mt;
  }
  float ev[UMAX][CH];
  for (size_t t = 0; t < n; t++) _mm512_storeu_ps(ev[t], kf_exp512(_mm512_sub_ps(sc[t], _mm512_set1_ps(mc[t]))));
  for (size_t t = 0; t < n; t++) alpha[t] = *u[t].m == -INFINITY ? 0.0f : expf(*u[t].m - mc[t]);
  // Units with nothing finite so far are left untouched (chunk_update_dh returns early for them); the others are
  // packed to the front (in place: an active unit's slot never lies behind its packed one).
  const unit64 *act[UMAX];
  size_t na = 0;
  for (size_t t = 0; t < n; t++) {
    if (mc[t] == -INFINITY) continue;
    *u[t].l = *u[t].l * alpha[t] + _mm512_reduce_add_ps(_mm512_loadu_ps(ev[t]));
    *u[t].m = mc[t];
    if (na != t) {
      memcpy(ev[na], ev[t], sizeof ev[0]);
      alpha[na] = alpha[t];
    }
    act[na++] = &u[t];
  }
  for (size_t j = 0; j < na; j += 4)
    units_pv64_n(na - j < 4 ? na - j : 4, shared_v, act + j, alpha + j, ev + j, voff);
}
#endif

// Work items are (group of up to QG queries, block of heads). The queries of one decoding sequence (a PFLM step feeds
// 2k of them) or of one causal training window mostly share their leading keys: those chunks are gathered once and
// applied to every query of the group while they sit in L1, instead of being fetched again per query. Groups are
// formed from queries whose key lists start at the same key, in query order: a batched decode step packs the context
// rows of all sequences before the noise rows, so consecutive queries would mix sequences and share nothing. An item
// walks its keys once for all heads of its block (chunk by chunk, every head of the chunk before the next chunk), so
// each cached K|V row is read in long runs rather than once per head. Each (query, head) still sees its own chunks
// (by ordinal in its own key set) in its own order with the same operations, so neither the grouping nor the head
// blocks change a result.

typedef struct {
  const kf_attn_args *a;
  const int64_t *pos;   // pos[t] = cost of the items before item t = (group t / nhb, head block t % nhb), [items + 1]
  const int32_t *order; // queries grouped: group g is order[gstart[g] .. gstart[g + 1])
  const size_t *gstart;
  size_t items, nhb, hb; // groups x head blocks; heads per block
} fwd_job;

// Queries qs[0..n) (n <= QG) at heads [h0, h1); obuf holds QG * (h1 - h0) scratch rows of Dp floats, ml 2 * QG * (h1 -
// h0) floats.
static void attend_item(const kf_attn_args *a, const int32_t *qs, size_t n, size_t h0, size_t h1, float *obuf,
                        size_t Dp, float *ml) {
  const size_t Dh = a->headDim, HB = h1 - h0;
  const chunk_fn update = Dh == 64 ? chunk_update_64 : chunk_update;
  // Leading keys every query of the group has in the same order: the identical leading ranges of their key lists
  // (paged KV caches give several), plus the common part of the next range where those all start at the same key.
  int64_t common = 0;
  if (n > 1) {
    for (int32_t r = 0;; r++) {
      int ok = 1;
      int64_t lo = 0, hi = INT64_MAX;
      for (size_t t = 0; t < n && ok; t++) {
        const size_t i = (size_t)qs[t];
        if (a->rowPtr[i] + r >= a->rowPtr[i + 1]) { ok = 0; break; }
        const int64_t r0 = a->ranges[2 * (a->rowPtr[i] + r)], r1 = a->ranges[2 * (a->rowPtr[i] + r) + 1];
        if (t == 0) lo = r0;
        else if (r0 != lo) ok = 0;
        if (r1 < hi) hi = r1;
      }
      if (!ok) break;
      common += hi - lo;
      // The range continues identically only if every query's range ends at hi.
      int same_end = 1;
      for (size_t t = 0; t < n; t++) same_end &= a->ranges[2 * (a->rowPtr[qs[t]] + r) + 1] == hi;
      if (!same_end) break;
    }
  }
  const size_t shared = (size_t)common / CH;
  // State of (query t, head h0 + b) at slot t * HB + b.
  float *m = ml, *l = ml + QG * HB;
  const float *q[QG];
  for (size_t t = 0; t < n; t++) {
    q[t] = a->q + (size_t)qs[t] * a->qStride;
    for (size_t b = 0; b < HB; b++) {
      m[t * HB + b] = -INFINITY;
      l[t * HB + b] = 0.0f;
      memset(obuf + (t * HB + b) * Dp, 0, Dh * sizeof(float));
    }
  }
  int32_t idx[CH], nidx[CH];
  int ncnt;
  // The shared chunks, walked with the first query's key list; `ahead` runs one chunk in front for the prefetches
  // (2 and 4 chunks measured no faster).
  key_iter lead, ahead;
  keys_begin(&lead, a, (size_t)qs[0]);
  keys_begin(&ahead, a, (size_t)qs[0]);
  ncnt = keys_next(&ahead, nidx);
  if (shared > 0)
    for (size_t h = h0; h < h1; h++) prefetch_chunk(a, h, nidx, ncnt);
  for (size_t c = 0; c < shared; c++) {
    keys_next(&lead, idx); // CH keys: the shared part is at least CH * shared long
    ncnt = keys_next(&ahead, nidx);
    for (size_t h = h0; h < h1; h++) {
      if (Dh != 64 || !units_enabled()) prefetch_chunk(a, h, nidx, ncnt);
      const float *kb = a->k + h * Dh, *vb = a->v + h * Dh;
      const size_t b = h - h0;
#ifdef __AVX512F__
      if (Dh == 64 && units_enabled()) { // n <= QG <= UMAX units
        unit64 u[UMAX];
        for (size_t t = 0; t < n; t++)
          u[t] = (unit64){q[t] + h * Dh, kb, vb, &m[t * HB + b], &l[t * HB + b], obuf + (t * HB + b) * Dp, h,
                          (int)((size_t)ncnt * t / n), (int)((size_t)ncnt * (t + 1) / n)};
        units_update64(a, u, n, 1, idx, nidx);
        continue;
      }
#endif
      for (size_t t = 0; t < n; t++)
        update(a, q[t] + h * Dh, kb, vb, idx, CH, &m[t * HB + b], &l[t * HB + b], obuf + (t * HB + b) * Dp);
    }
  }
  for (size_t t = 0; t < n; t++) {
    const size_t i = (size_t)qs[t];
    key_iter it;
    keys_begin(&it, a, i);
    for (size_t c = 0; c < shared; c++) keys_next(&it, idx); // past the chunks applied above
    key_iter nx = it;
    ncnt = keys_next(&nx, nidx);
    if (shared == 0)
      for (size_t h = h0; h < h1; h++) prefetch_chunk(a, h, nidx, ncnt);
    int cnt;
    while ((cnt = keys_next(&it, idx)) > 0) {
      ncnt = keys_next(&nx, nidx);
#ifdef __AVX512F__
      if (Dh == 64 && cnt == CH && units_enabled()) { // the heads of the block as units, up to UMAX at a time
        for (size_t hb0 = h0; hb0 < h1; hb0 += UMAX) {
          const size_t nu = h1 - hb0 < UMAX ? h1 - hb0 : UMAX;
          unit64 u[UMAX];
          for (size_t x = 0; x < nu; x++) {
            const size_t h = hb0 + x, b = h - h0;
            u[x] = (unit64){q[t] + h * Dh, a->k + h * Dh, a->v + h * Dh, &m[t * HB + b], &l[t * HB + b],
                            obuf + (t * HB + b) * Dp, h, 0, ncnt};
          }
          units_update64(a, u, nu, 0, idx, nidx);
        }
        continue;
      }
#endif
      for (size_t h = h0; h < h1; h++) {
        prefetch_chunk(a, h, nidx, ncnt);
        const size_t b = h - h0;
        update(a, q[t] + h * Dh, a->k + h * Dh, a->v + h * Dh, idx, cnt, &m[t * HB + b], &l[t * HB + b],
               obuf + (t * HB + b) * Dp);
      }
    }
    for (size_t h = h0; h < h1; h++) {
      const size_t b = h - h0;
      const float *o = obuf + (t * HB + b) * Dp;
      float *out = a->out + i * a->outStride + h * Dh;
      if (l[t * HB + b] > 0.0f) {
        const float inv = 1.0f / l[t * HB + b];
        for (size_t d = 0; d < Dh; d++) out[d] = o[d] * inv;
        a->lse[i * a->nHeads + h] = m[t * HB + b] + logf(l[t * HB + b]);
      } else {
        memset(out, 0, Dh * sizeof(float));
        a->lse[i * a->nHeads + h] = -INFINITY;
      }
    }
  }
}

static void fwd_task(void *p, int tid, int nt) {
  fwd_job *j = p;
  const kf_attn_args *a = j->a;
  const size_t H = a->nHeads, items = j->items;
  // Items lie on a line by cumulative cost; a task takes the items that start inside its equal share of that line.
  const int64_t total = j->pos[items];
  const int64_t lo = total * tid / nt, hi = total * (tid + 1) / nt;
  size_t t = 0, t1 = items;
  while (t < t1) {
    size_t mid = (t + t1) / 2;
    if (j->pos[mid] < lo) t = mid + 1;
    else t1 = mid;
  }
  const size_t Dp = (a->headDim + 15) / 16 * 16;
  float *obuf = aligned_alloc(64, QG * j->hb * Dp * sizeof(float) + 2 * QG * j->hb * sizeof(float) + 64);
  if (!obuf) abort();
  float *ml = obuf + QG * j->hb * Dp;
  for (; t < items && j->pos[t] < hi; t++) {
    const size_t g = t / j->nhb, h0 = t % j->nhb * j->hb, h1 = h0 + j->hb < H ? h0 + j->hb : H;
    attend_item(a, j->order + j->gstart[g], j->gstart[g + 1] - j->gstart[g], h0, h1, obuf, Dp, ml);
  }
  free(obuf);
}

// First key of query i (INT64_MAX when it sees none): the grouping key.
static inline int64_t first_key(const kf_attn_args *a, size_t i) {
  return a->rowPtr[i] < a->rowPtr[i + 1] ? (int64_t)a->ranges[2 * a->rowPtr[i]] : INT64_MAX;
}

typedef struct {
  int64_t key;
  int32_t i;
} keyed_query;

static int by_first_key(const void *x, const void *y) {
  const keyed_query *p = x, *q = y;
  if (p->key != q->key) return p->key < q->key ? -1 : 1;
  return (p->i > q->i) - (p->i < q->i); // query order within a key
}

void kf_attention(const kf_attn_args *a) {
  const size_t H = a->nHeads, nq = a->nq;
  int32_t *order = malloc((nq ? nq : 1) * sizeof(int32_t));
  size_t *gstart = malloc((nq + 1) * sizeof(size_t));
  if (!order || !gstart) abort();
  int sorted = 1;
  for (size_t i = 0; i < nq; i++) {
    order[i] = (int32_t)i;
    if (i > 0 && first_key(a, i) < first_key(a, i - 1)) sorted = 0;
  }
  if (!sorted) {
    keyed_query *kq = malloc(nq * sizeof(keyed_query));
    if (!kq) abort();
    for (size_t i = 0; i < nq; i++) kq[i] = (keyed_query){first_key(a, i), (int32_t)i};
    qsort(kq, nq, sizeof(keyed_query), by_first_key);
    for (size_t i = 0; i < nq; i++) order[i] = kq[i].i;
    free(kq);
  }
  // Groups: runs of up to QG queries with the same first key.
  size_t groups = 0;
  for (size_t i = 0; i < nq;) {
    const int64_t key = first_key(a, (size_t)order[i]);
    size_t e = i + 1;
    while (e < nq && e - i < QG && first_key(a, (size_t)order[e]) == key) e++;
    gstart[groups++] = i;
    i = e;
  }
  gstart[groups] = nq;
  // Head blocks: all heads in one item unless there are too few groups to keep the threads balanced.
  const size_t want = 4 * (size_t)KF_THREADS;
  size_t nhb = groups >= want ? 1 : (want + groups - 1) / (groups ? groups : 1);
  if (nhb > H) nhb = H;
  if (nhb < 1) nhb = 1;
  const size_t hb = (H + nhb - 1) / nhb;
  nhb = (H + hb - 1) / hb;
  const size_t items = groups * nhb;
  int64_t *pos = malloc((items + 1) * sizeof(int64_t));
  if (!pos) abort();
  int64_t all = 0;
  pos[0] = 0;
  for (size_t g = 0; g < groups; g++) {
    int64_t cost = 0; // keys + 1 per query, so empty queries still count
    for (size_t t = gstart[g]; t < gstart[g + 1]; t++) {
      const size_t i = (size_t)order[t];
      int64_t c = 0;
      for (int32_t r = a->rowPtr[i]; r < a->rowPtr[i + 1]; r++) c += a->ranges[2 * r + 1] - a->ranges[2 * r];
      all += c;
      cost += c + 1;
    }
    for (size_t b = 0; b < nhb; b++) {
      const size_t heads = (b + 1) * hb < H ? hb : H - b * hb;
      pos[g * nhb + b + 1] = pos[g * nhb + b] + cost * (int64_t)heads;
    }
  }
  fwd_job j = {a, pos, order, gstart, items, nhb, hb};
  double work = (double)all * (double)H * (double)a->headDim;
  kf_parallel(fwd_task, &j, work >= 65536 && items > 1 ? KF_THREADS : 1);
  free(pos);
  free(gstart);
  free(order);
}

// ---- backward ---------------------------------------------------------------------------------------------------
// Per (query, key): p = exp(s - lse), dp = dout . v, ds = p (dp - D) scale with D = dout . out;
// dv += p dout, dk += ds q, dq += ds k. Each thread takes whole heads, so no two threads write the same element,
// and each head runs in one fixed order.
typedef struct {
  const kf_attn_args *a;
  atomic_size_t next_head;
  // Key-chunk-major work list (AVX-512 path): entry e = (query, 16-bit mask of the keys of aligned key chunk c that
  // the query sees), grouped by chunk: entries of chunk c are [chunk_ptr[c], chunk_ptr[c+1]), queries ascending.
  const int32_t *chunk_ptr, *ent_query;
  const uint16_t *ent_mask;
  size_t nchunks;
} bwd_job;

#ifdef __AVX512F__
// One head, walked key chunk by key chunk: the chunk's dk/dv accumulate in a small L1-resident buffer over all the
// queries that see it and are written back once, and dq is updated once per (query, chunk), instead of
// read-modify-writing strided dk/dv rows for every (query, key) pair.
static void backward_head_chunks(const bwd_job *j, size_t h, float *scratch) {
  const kf_attn_args *a = j->a;
  const size_t Dh = a->headDim, Dp = (Dh + 15) / 16 * 16;
  const float *kb = a->k + h * Dh, *vb = a->v + h * Dh;
  float *dkb = a->dk + h * Dh, *dvb = a->dv + h * Dh;
  float *Dq = scratch;              // [nq] dout . out per query
  float *dkl = Dq + (a->nq + 15) / 16 * 16;  // [CH][Dp]
  float *dvl = dkl + CH * Dp;       // [CH][Dp]
  for (size_t i = 0; i < a->nq; i++)
    Dq[i] = kf_dot16(a->dout + i * a->outStride + h * Dh, a->out + i * a->outStride + h * Dh, Dh);
  int32_t idx[CH];
  for (size_t c = 0; c < j->nchunks; c++) {
    const int32_t e0 = j->chunk_ptr[c], e1 = j->chunk_ptr[c + 1];
    if (e0 == e1) continue;
    // Keys of the chunk that no query sees may lie past the end of k/v: point them at one that some query sees.
    uint32_t any = 0;
    for (int32_t e = e0; e < e1; e++) any |= j->ent_mask[e];
    const int32_t first = (int32_t)(c * CH) + __builtin_ctz(any);
    for (int t = 0; t < CH; t++) idx[t] = (any >> t) & 1u ? (int32_t)(c * CH) + t : first;
    memset(dkl, 0, 2 * CH * Dp * sizeof(float));
    for (int32_t e = e0; e < e1; e++) {
      const size_t i = (size_t)j->ent_query[e];
      const float lse = a->lse[i * a->nHeads + h];
      if (lse == -INFINITY) continue;
      const __mmask16 km = j->ent_mask[e];
      const float *q = a->q + i * a->qStride + h * Dh;
      const float *go = a->dout + i * a->outStride + h * Dh;
      const __m512 s = _mm512_mul_ps(chunk_dots(q, kb, a->kStride, idx, CH, Dh), _mm512_set1_ps(a->scale));
      const __m512 dp = chunk_dots(go, vb, a->vStride, idx, CH, Dh);
      const __m512 p = _mm512_maskz_mov_ps(km, kf_exp512(_mm512_sub_ps(s, _mm512_set1_ps(lse))));
      const __m512 ds = _mm512_mul_ps(_mm512_mul_ps(p, _mm512_sub_ps(dp, _mm512_set1_ps(Dq[i]))),
                                      _mm512_set1_ps(a->scale));
      float pv[CH], dsv[CH];
      _mm512_storeu_ps(pv, p);
      _mm512_storeu_ps(dsv, ds);
      float *dq = a->dq + i * a->qStride + h * Dh;
      for (size_t d = 0; d < Dh; d += 16) {
        const __mmask16 dm = kf_tail_mask(Dh - d);
        const __m512 qv = _mm512_maskz_loadu_ps(dm, q + d), gv = _mm512_maskz_loadu_ps(dm, go + d);
        __m512 dqv = _mm512_maskz_loadu_ps(dm, dq + d);
        for (uint32_t bits = km; bits; bits &= bits - 1) {
          const int t = __builtin_ctz(bits);
          const __m512 pc = _mm512_set1_ps(pv[t]), dc = _mm512_set1_ps(dsv[t]);
          float *dvp = dvl + t * Dp + d, *dkp = dkl + t * Dp + d;
          _mm512_store_ps(dvp, _mm512_fmadd_ps(pc, gv, _mm512_load_ps(dvp)));
          _mm512_store_ps(dkp, _mm512_fmadd_ps(dc, qv, _mm512_load_ps(dkp)));
          dqv = _mm512_fmadd_ps(dc, _mm512_maskz_loadu_ps(dm, kb + (size_t)idx[t] * a->kStride + d), dqv);
        }
        _mm512_mask_storeu_ps(dq + d, dm, dqv);
      }
    }
    for (int t = 0; t < CH; t++) {
      if (!((any >> t) & 1u)) continue;
      float *dk = dkb + (size_t)idx[t] * a->kStride, *dv = dvb + (size_t)idx[t] * a->vStride;
      for (size_t d = 0; d < Dh; d += 16) {
        const __mmask16 dm = kf_tail_mask(Dh - d);
        _mm512_mask_storeu_ps(dk + d, dm, _mm512_add_ps(_mm512_maskz_loadu_ps(dm, dk + d), _mm512_load_ps(dkl + t * Dp + d)));
        _mm512_mask_storeu_ps(dv + d, dm, _mm512_add_ps(_mm512_maskz_loadu_ps(dm, dv + d), _mm512_load_ps(dvl + t * Dp + d)));
      }
    }
  }
}

static void bwd_task(void *p, int tid, int nt) {
  (void)tid;
  (void)nt;
  bwd_job *j = p;
  const size_t Dp = (j->a->headDim + 15) / 16 * 16;
  float *scratch = aligned_alloc(64, ((j->a->nq + 15) / 16 * 16 + 2 * CH * Dp) * sizeof(float));
  if (!scratch) abort();
  for (;;) {
    size_t h = atomic_fetch_add(&j->next_head, 1);
    if (h >= j->a->nHeads) break;
    backward_head_chunks(j, h, scratch);
  }
  free(scratch);
}

void kf_attention_backward(const kf_attn_args *a) {
  bwd_job j;
  memset(&j, 0, sizeof j);
  j.a = a;
  atomic_init(&j.next_head, 0);
  // Build the chunk-major work list: count entries per chunk, then fill (queries ascending within a chunk).
  int32_t maxkey = 0;
  int64_t pairs = 0;
  for (size_t i = 0; i < a->nq; i++)
    for (int32_t r = a->rowPtr[i]; r < a->rowPtr[i + 1]; r++) {
      if (a->ranges[2 * r + 1] > maxkey) maxkey = a->ranges[2 * r + 1];
      pairs += a->ranges[2 * r + 1] - a->ranges[2 * r];
    }
  const size_t nchunks = ((size_t)maxkey + CH - 1) / CH;
  int32_t *chunk_ptr = calloc(nchunks + 2, sizeof(int32_t));
  if (!chunk_ptr) abort();
  // Pass 1: count (query, chunk) pairs; a query's ranges are ascending, so a chunk repeats only consecutively.
  for (size_t i = 0; i < a->nq; i++) {
    int64_t last = -1;
    for (int32_t r = a->rowPtr[i]; r < a->rowPtr[i + 1]; r++) {
      const int32_t s0 = a->ranges[2 * r], s1 = a->ranges[2 * r + 1];
      if (s1 <= s0) continue;
      for (int64_t c = s0 / CH; c <= (s1 - 1) / CH; c++)
        if (c != last) { chunk_ptr[c + 1]++; last = c; }
    }
  }
  for (size_t c = 0; c < nchunks; c++) chunk_ptr[c + 1] += chunk_ptr[c];
  const size_t nent = (size_t)chunk_ptr[nchunks];
  int32_t *ent_query = malloc((nent + 1) * sizeof(int32_t)), *fillp = malloc((nchunks + 1) * sizeof(int32_t));
  uint16_t *ent_mask = calloc(nent + 1, sizeof(uint16_t));
  if (!ent_query || !ent_mask || !fillp) abort();
  memcpy(fillp, chunk_ptr, (nchunks + 1) * sizeof(int32_t));
  for (size_t i = 0; i < a->nq; i++) {
    int64_t last = -1;
    for (int32_t r = a->rowPtr[i]; r < a->rowPtr[i + 1]; r++) {
      const int32_t s0 = a->ranges[2 * r], s1 = a->ranges[2 * r + 1];
      for (int32_t k = s0; k < s1;) {
        const int64_t c = k / CH;
        const int32_t end = (int32_t)((c + 1) * CH) < s1 ? (int32_t)((c + 1) * CH) : s1;
        const uint32_t bits = (uint32_t)(((1u << (end - k)) - 1u) << (k - c * CH)) & 0xFFFFu;
        if (c != last) {
          ent_query[fillp[c]] = (int32_t)i;
          ent_mask[fillp[c]] = (uint16_t)bits;
          fillp[c]++;
          last = c;
        } else {
          ent_mask[fillp[c] - 1] |= (uint16_t)bits;
        }
        k = end;
      }
    }
  }
  j.chunk_ptr = chunk_ptr;
  j.ent_query = ent_query;
  j.ent_mask = ent_mask;
  j.nchunks = nchunks;
  double work = (double)pairs * (double)a->nHeads * (double)a->headDim;
  kf_parallel(bwd_task, &j, work >= 65536 && a->nHeads > 1 ? KF_THREADS : 1);
  free(chunk_ptr);
  free(ent_query);
  free(ent_mask);
  free(fillp);
}

#else // portable path: query-major, one head per thread at a time

static void backward_head(const kf_attn_args *a, size_t h, float *dqi) {
  const size_t Dh = a->headDim;
  const float *kb = a->k + h * Dh, *vb = a->v + h * Dh;
  float *dkb = a->dk + h * Dh, *dvb = a->dv + h * Dh;
  int32_t idx[CH];
  for (size_t i = 0; i < a->nq; i++) {
    const float lse = a->lse[i * a->nHeads + h];
    if (lse == -INFINITY) continue;
    const float *q = a->q + i * a->qStride + h * Dh;
    const float *go = a->dout + i * a->outStride + h * Dh;
    const float *out = a->out + i * a->outStride + h * Dh;
    const float Di = kf_dot16(go, out, Dh);
    memset(dqi, 0, Dh * sizeof(float));
    key_iter it;
    keys_begin(&it, a, i);
    int cnt;
    while ((cnt = keys_next(&it, idx)) > 0) {
      float pv[CH], dsv[CH];
      for (int c = 0; c < cnt; c++) {
        const float s = a->scale * kf_dot16(q, kb + (size_t)idx[c] * a->kStride, Dh);
        const float dp = kf_dot16(go, vb + (size_t)idx[c] * a->vStride, Dh);
        pv[c] = expf(s - lse);
        dsv[c] = pv[c] * (dp - Di) * a->scale;
      }
      for (int c = 0; c < cnt; c++) {
        const size_t kj = (size_t)idx[c] * a->kStride, vj = (size_t)idx[c] * a->vStride;
        const float *kc = kb + kj;
        float *dk = dkb + kj, *dv = dvb + vj;
        for (size_t d = 0; d < Dh; d++) {
          dv[d] += pv[c] * go[d];
          dk[d] += dsv[c] * q[d];
          dqi[d] += dsv[c] * kc[d];
        }
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
  memset(&j, 0, sizeof j);
  j.a = a;
  atomic_init(&j.next_head, 0);
  int64_t pairs = 0;
  for (size_t i = 0; i < a->nq; i++)
    for (int32_t r = a->rowPtr[i]; r < a->rowPtr[i + 1]; r++) pairs += a->ranges[2 * r + 1] - a->ranges[2 * r];
  double work = (double)pairs * (double)a->nHeads * (double)a->headDim;
  kf_parallel(bwd_task, &j, work >= 65536 && a->nHeads > 1 ? KF_THREADS : 1);
}
#endif
