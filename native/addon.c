// N-API entry points. Every argument is checked here (type, integer-ness, buffer lengths, index ranges) so that the
// kernels can run without bounds checks; errors name the op and the offending argument.
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <node_api.h>
#include "kf.h"

#define MAXARGS 20

typedef struct {
  napi_env env;
  const char *op;
  napi_value argv[MAXARGS];
  size_t argc;
  int failed;
} call;

static void failf(call *c, const char *fmt, ...) {
  if (c->failed) return;
  char msg[600], full[700];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(full, sizeof full, "%s: %s", c->op, msg);
  napi_throw_error(c->env, NULL, full);
  c->failed = 1;
}

static int begin(call *c, napi_env env, napi_callback_info info, const char *op, size_t want) {
  c->env = env;
  c->op = op;
  c->failed = 0;
  c->argc = MAXARGS;
  if (napi_get_cb_info(env, info, &c->argc, c->argv, NULL, NULL) != napi_ok) {
    failf(c, "cannot read arguments");
    return 0;
  }
  if (c->argc < want) {
    failf(c, "expected %zu arguments, got %zu", want, c->argc);
    return 0;
  }
  return 1;
}

static int is_nullish(call *c, size_t i) {
  napi_valuetype t;
  if (napi_typeof(c->env, c->argv[i], &t) != napi_ok) return 0;
  return t == napi_null || t == napi_undefined;
}

static void *typed(call *c, size_t i, const char *name, napi_typedarray_type want, const char *tname, size_t *len,
                   int nullable) {
  *len = 0;
  if (c->failed) return NULL;
  if (nullable && is_nullish(c, i)) return NULL;
  bool is = false;
  napi_is_typedarray(c->env, c->argv[i], &is);
  napi_typedarray_type type;
  void *data = NULL;
  size_t length = 0, off = 0;
  napi_value ab;
  if (!is || napi_get_typedarray_info(c->env, c->argv[i], &type, &length, &data, &ab, &off) != napi_ok ||
      type != want) {
    failf(c, "%s must be a %s%s", name, tname, nullable ? " or null" : "");
    return NULL;
  }
  *len = length;
  // A zero-length view may carry a NULL data pointer; hand out a valid dummy so kernels never see NULL for it.
  static float empty[1];
  return data ? data : (void *)empty;
}

// A typed array argument of at least `need` elements.
static void *typed_need(call *c, size_t i, const char *name, napi_typedarray_type want, const char *tname,
                        size_t need, int nullable) {
  size_t len;
  void *p = typed(c, i, name, want, tname, &len, nullable);
  if (p && len < need) {
    failf(c, "%s has %zu elements, needs at least %zu", name, len, need);
    return NULL;
  }
  return p;
}

static float *f32(call *c, size_t i, const char *name, size_t need, int nullable) {
  return typed_need(c, i, name, napi_float32_array, "Float32Array", need, nullable);
}

static double num(call *c, size_t i, const char *name) {
  double v = 0;
  if (c->failed) return 0;
  if (napi_get_value_double(c->env, c->argv[i], &v) != napi_ok) failf(c, "%s must be a number", name);
  return v;
}

static size_t dim(call *c, size_t i, const char *name) {
  double v = num(c, i, name);
  if (c->failed) return 0;
  // Dimensions stay below 2^31 so that products of two or three of them cannot overflow size_t.
  if (!(v >= 0) || v != floor(v) || v > 2147483647.0) {
    failf(c, "%s must be an integer in [0, 2^31), got %g", name, v);
    return 0;
  }
  return (size_t)v;
}

static int flag(call *c, size_t i, const char *name) {
  bool b = false;
  if (c->failed) return 0;
  if (napi_get_value_bool(c->env, c->argv[i], &b) != napi_ok) failf(c, "%s must be a boolean", name);
  return b;
}

static napi_value undef(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

static int overlaps(const float *a, size_t na, const float *b, size_t nb) {
  return a && b && na && nb && a < b + nb && b < a + na;
}

// The whole ArrayBuffer behind a typed array (weights and caches are views into larger buffers); 0 if unavailable.
static int backing_store(napi_env env, napi_value arr, void **p, size_t *bytes) {
  napi_typedarray_type type;
  size_t length, off;
  void *data;
  napi_value ab;
  *p = NULL;
  *bytes = 0;
  return napi_get_typedarray_info(env, arr, &type, &length, &data, &ab, &off) == napi_ok &&
         napi_get_arraybuffer_info(env, ab, p, bytes) == napi_ok && *p;
}

// Optional argument i: 'gelu_tanh' -> KF_ACT_GELU_TANH, missing/undefined/null -> KF_ACT_NONE (else fails).
static int activation(call *c, size_t i) {
  if (c->failed || c->argc <= i || is_nullish(c, i)) return KF_ACT_NONE;
  char buf[16] = {0};
  size_t n = 0;
  if (napi_get_value_string_utf8(c->env, c->argv[i], buf, sizeof buf, &n) != napi_ok || strcmp(buf, "gelu_tanh") != 0) {
    failf(c, "activation must be 'gelu_tanh' or null");
    return KF_ACT_NONE;
  }
  return KF_ACT_GELU_TANH;
}

// linear(out, x, w, bias|null, M, K, N[, activation]) with activation 'gelu_tanh' (or undefined/null: none)
static napi_value js_linear(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "linear", 7)) return NULL;
  size_t M = dim(&c, 4, "M"), K = dim(&c, 5, "K"), N = dim(&c, 6, "N");
  const int act = activation(&c, 7);
  if (c.failed) return NULL;
  float *out = f32(&c, 0, "out", M * N, 0), *x = f32(&c, 1, "x", M * K, 0), *w = f32(&c, 2, "w", N * K, 0);
  float *bias = f32(&c, 3, "bias", N, 1);
  if (c.failed) return NULL;
  if (overlaps(out, M * N, x, M * K) || overlaps(out, M * N, w, N * K) || overlaps(out, M * N, bias, N)) {
    failf(&c, "out must not overlap x, w or bias");
    return NULL;
  }
  if (N * K * sizeof(float) >= ((size_t)2 << 20)) {
    // Weights usually sit in one flat parameter buffer: collapse its whole backing store, once (a matrix's own
    // interior misses the 2 MB pages that straddle its ends: most of a 768 x 768 matrix).
    void *p;
    size_t bytes;
    if (backing_store(env, c.argv[2], &p, &bytes)) kf_huge_collapse(p, bytes);
  }
  kf_linear_act(out, x, w, bias, M, K, N, act);
  return undef(env);
}

// vpack(w: Float32Array [N*K], N, K, packed: Float32Array [vpackFloats(N, K)]) -> boolean: the lane-major copy of w that
// linearVpacked reads (false: this build has no packed path, or K is not a multiple of 16).
static napi_value js_vpack(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "vpack", 4)) return NULL;
  size_t N = dim(&c, 1, "N"), K = dim(&c, 2, "K");
  float *w = f32(&c, 0, "w", N * K, 0);
  float *packed = f32(&c, 3, "packed", kf_vpack_floats(N, K), 0);
  if (c.failed) return NULL;
  if (overlaps(packed, kf_vpack_floats(N, K), w, N * K)) {
    failf(&c, "packed must not overlap w");
    return NULL;
  }
  napi_value r;
  napi_get_boolean(env, N > 0 && K > 0 && kf_vpack(w, N, K, packed), &r);
  return r;
}

// fname(N, K) -> number: a buffer size computed by size(N, K) (vpackFloats, screenBytes).
static napi_value size_of_nk(napi_env env, napi_callback_info info, const char *fname, size_t (*size)(size_t, size_t)) {
  call c;
  if (!begin(&c, env, info, fname, 2)) return NULL;
  size_t N = dim(&c, 0, "N"), K = dim(&c, 1, "K");
  if (c.failed) return NULL;
  napi_value r;
  napi_create_double(env, (double)size(N, K), &r);
  return r;
}

// vpackFloats(N, K) -> number: the size of vpack's copy; vpackUse(M, K) -> boolean: whether M rows of K columns run
// faster from it.
static napi_value js_vpack_floats(napi_env env, napi_callback_info info) {
  return size_of_nk(env, info, "vpackFloats", kf_vpack_floats);
}

static napi_value js_vpack_use(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "vpackUse", 2)) return NULL;
  size_t M = dim(&c, 0, "M"), K = dim(&c, 1, "K");
  if (c.failed) return NULL;
  napi_value r;
  napi_get_boolean(env, kf_linear_vpacked_use(M, K), &r);
  return r;
}

// linearVpacked(out, x, packed, bias|null, M, K, N[, activation]): linear's result for 1-64 rows from vpack's copy.
static napi_value js_linear_vpacked(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "linearVpacked", 7)) return NULL;
  size_t M = dim(&c, 4, "M"), K = dim(&c, 5, "K"), N = dim(&c, 6, "N");
  const int act = activation(&c, 7);
  if (c.failed) return NULL;
  if (M < 1 || M > 64) failf(&c, "M must be in [1, 64], got %zu", M);
  if (!c.failed && (K == 0 || K % 16 != 0)) failf(&c, "K must be a positive multiple of 16, got %zu", K);
  float *out = f32(&c, 0, "out", M * N, 0), *x = f32(&c, 1, "x", M * K, 0);
  float *packed = f32(&c, 2, "packed", kf_vpack_floats(N, K), 0), *bias = f32(&c, 3, "bias", N, 1);
  if (c.failed) return NULL;
  if (!kf_vpack_supported()) {
    failf(&c, "this build has no packed path (it needs AVX-512)");
    return NULL;
  }
  if (overlaps(out, M * N, x, M * K) || overlaps(out, M * N, packed, kf_vpack_floats(N, K)) ||
      overlaps(out, M * N, bias, N)) {
    failf(&c, "out must not overlap x, packed or bias");
    return NULL;
  }
  kf_linear_vpacked(out, x, packed, bias, M, K, N, act);
  return undef(env);
}

// blasLinear(out, x, w, M, K, N) -> boolean (false without BLAS)
static napi_value js_blas_linear(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "blasLinear", 6)) return NULL;
  size_t M = dim(&c, 3, "M"), K = dim(&c, 4, "K"), N = dim(&c, 5, "N");
  float *out = f32(&c, 0, "out", M * N, 0), *x = f32(&c, 1, "x", M * K, 0), *w = f32(&c, 2, "w", N * K, 0);
  if (c.failed) return NULL;
  int ok = M && K && N ? kf_blas_linear(out, x, w, M, K, N) : 1;
  napi_value r;
  napi_get_boolean(env, ok, &r);
  return r;
}

// gemm(transA, transB, M, N, K, alpha, a, b, beta, c)
static napi_value js_gemm(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "gemm", 10)) return NULL;
  int ta = flag(&c, 0, "transA"), tb = flag(&c, 1, "transB");
  size_t M = dim(&c, 2, "M"), N = dim(&c, 3, "N"), K = dim(&c, 4, "K");
  float alpha = (float)num(&c, 5, "alpha"), beta = (float)num(&c, 8, "beta");
  float *a = f32(&c, 6, "a", M * K, 0), *b = f32(&c, 7, "b", K * N, 0), *cc = f32(&c, 9, "c", M * N, 0);
  if (c.failed) return NULL;
  if (overlaps(cc, M * N, a, M * K) || overlaps(cc, M * N, b, K * N)) {
    failf(&c, "c must not overlap a or b");
    return NULL;
  }
  kf_gemm(ta, tb, M, N, K, alpha, a, b, beta, cc);
  return undef(env);
}

// layerNorm(out, mean, rstd, x, weight, bias|null, rows, D, eps)
static napi_value js_layernorm(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "layerNorm", 9)) return NULL;
  size_t rows = dim(&c, 6, "rows"), D = dim(&c, 7, "D");
  float eps = (float)num(&c, 8, "eps");
  float *out = f32(&c, 0, "out", rows * D, 0), *mean = f32(&c, 1, "mean", rows, 0), *rstd = f32(&c, 2, "rstd", rows, 0);
  float *x = f32(&c, 3, "x", rows * D, 0), *w = f32(&c, 4, "weight", D, 0), *b = f32(&c, 5, "bias", D, 1);
  if (c.failed) return NULL;
  if (D == 0 && rows > 0) {
    failf(&c, "D must be positive");
    return NULL;
  }
  kf_layernorm(out, mean, rstd, x, w, b, rows, D, eps);
  return undef(env);
}

// layerNormBackward(dx, dweight, dbias|null, dout, x, mean, rstd, weight, rows, D)
static napi_value js_layernorm_backward(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "layerNormBackward", 10)) return NULL;
  size_t rows = dim(&c, 8, "rows"), D = dim(&c, 9, "D");
  float *dx = f32(&c, 0, "dx", rows * D, 0), *dw = f32(&c, 1, "dweight", D, 0), *db = f32(&c, 2, "dbias", D, 1);
  float *dout = f32(&c, 3, "dout", rows * D, 0), *x = f32(&c, 4, "x", rows * D, 0);
  float *mean = f32(&c, 5, "mean", rows, 0), *rstd = f32(&c, 6, "rstd", rows, 0), *w = f32(&c, 7, "weight", D, 0);
  if (c.failed) return NULL;
  if (D == 0 || rows == 0) return undef(env);
  kf_layernorm_backward(dx, dw, db, dout, x, mean, rstd, w, rows, D);
  return undef(env);
}

static int gelu_kind(call *c, size_t i) {
  char buf[16] = {0};
  size_t n = 0;
  if (c->failed) return 0;
  if (napi_get_value_string_utf8(c->env, c->argv[i], buf, sizeof buf, &n) != napi_ok) {
    failf(c, "kind must be 'tanh' or 'exact'");
    return 0;
  }
  if (strcmp(buf, "tanh") == 0) return 0;
  if (strcmp(buf, "exact") == 0) return 1;
  failf(c, "kind must be 'tanh' or 'exact', got '%s'", buf);
  return 0;
}

// gelu(out, x, n, kind)
static napi_value js_gelu(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "gelu", 4)) return NULL;
  size_t n = dim(&c, 2, "n");
  float *out = f32(&c, 0, "out", n, 0), *x = f32(&c, 1, "x", n, 0);
  int exact = gelu_kind(&c, 3);
  if (c.failed) return NULL;
  if (out != x && overlaps(out, n, x, n)) {
    failf(&c, "out must be x itself or not overlap it");
    return NULL;
  }
  kf_gelu(out, x, n, exact);
  return undef(env);
}

// geluBackward(dx, dout, x, n, kind)
static napi_value js_gelu_backward(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "geluBackward", 5)) return NULL;
  size_t n = dim(&c, 3, "n");
  float *dx = f32(&c, 0, "dx", n, 0), *dout = f32(&c, 1, "dout", n, 0), *x = f32(&c, 2, "x", n, 0);
  int exact = gelu_kind(&c, 4);
  if (c.failed) return NULL;
  kf_gelu_backward(dx, dout, x, n, exact);
  return undef(env);
}

// rope(x, stride, rows, nHeads, headDim, positions, invFreq, inverse)
static napi_value js_rope(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "rope", 8)) return NULL;
  size_t stride = dim(&c, 1, "stride"), rows = dim(&c, 2, "rows"), H = dim(&c, 3, "nHeads"),
         Dh = dim(&c, 4, "headDim");
  int inverse = flag(&c, 7, "inverse");
  if (c.failed) return NULL;
  if (Dh % 2 != 0) {
    failf(&c, "headDim must be even, got %zu", Dh);
    return NULL;
  }
  if (rows > 0 && stride < H * Dh) {
    failf(&c, "stride %zu is smaller than nHeads*headDim = %zu", stride, H * Dh);
    return NULL;
  }
  float *x = f32(&c, 0, "x", rows ? (rows - 1) * stride + H * Dh : 0, 0);
  size_t plen;
  int32_t *pos = typed(&c, 5, "positions", napi_int32_array, "Int32Array", &plen, 0);
  float *inv = f32(&c, 6, "invFreq", Dh / 2, 0);
  if (c.failed) return NULL;
  if (plen < rows) {
    failf(&c, "positions has %zu elements, needs at least %zu", plen, rows);
    return NULL;
  }
  kf_rope(x, stride, rows, H, Dh, pos, inv, inverse);
  return undef(env);
}

// attention(q, qStride, k, kStride, v, vStride, out, outStride, lse, rowPtr, ranges, nq, nHeads, headDim, scale
//           [, dout, dq, dk, dv])
static napi_value attention_common(napi_env env, napi_callback_info info, int backward) {
  call c;
  const char *op = backward ? "attentionBackward" : "attention";
  if (!begin(&c, env, info, op, backward ? 19 : 15)) return NULL;
  kf_attn_args a;
  memset(&a, 0, sizeof a);
  a.qStride = dim(&c, 1, "qStride");
  a.kStride = dim(&c, 3, "kStride");
  a.vStride = dim(&c, 5, "vStride");
  a.outStride = dim(&c, 7, "outStride");
  a.nq = dim(&c, 11, "nq");
  a.nHeads = dim(&c, 12, "nHeads");
  a.headDim = dim(&c, 13, "headDim");
  a.scale = (float)num(&c, 14, "scale");
  if (c.failed) return NULL;
  const size_t W = a.nHeads * a.headDim;
  if (a.nq > 0 && (a.qStride < W || a.outStride < W)) {
    failf(&c, "qStride and outStride must be at least nHeads*headDim = %zu", W);
    return NULL;
  }
  if (a.kStride < W || a.vStride < W || a.kStride == 0 || a.vStride == 0) {
    failf(&c, "kStride and vStride must be at least nHeads*headDim = %zu (and positive)", W);
    return NULL;
  }
  const size_t qNeed = a.nq ? (a.nq - 1) * a.qStride + W : 0, oNeed = a.nq ? (a.nq - 1) * a.outStride + W : 0;
  size_t klen, vlen;
  a.q = f32(&c, 0, "q", qNeed, 0);
  a.k = typed(&c, 2, "k", napi_float32_array, "Float32Array", &klen, 0);
  a.v = typed(&c, 4, "v", napi_float32_array, "Float32Array", &vlen, 0);
  a.out = f32(&c, 6, "out", oNeed, 0);
  a.lse = f32(&c, 8, "lse", a.nq * a.nHeads, 0);
  size_t nrp, nrg;
  a.rowPtr = typed(&c, 9, "mask.rowPtr", napi_int32_array, "Int32Array", &nrp, 0);
  a.ranges = typed(&c, 10, "mask.ranges", napi_int32_array, "Int32Array", &nrg, 0);
  size_t dklen = (size_t)-1, dvlen = (size_t)-1;
  if (backward) {
    a.dout = f32(&c, 15, "dout", oNeed, 0);
    a.dq = f32(&c, 16, "dq", qNeed, 0);
    a.dk = typed(&c, 17, "dk", napi_float32_array, "Float32Array", &dklen, 0);
    a.dv = typed(&c, 18, "dv", napi_float32_array, "Float32Array", &dvlen, 0);
  }
  if (c.failed) return NULL;
  // Number of key rows every one of k, v (and dk, dv) can address.
  size_t nk = (size_t)-1;
  const size_t lens[4] = {klen, vlen, dklen, dvlen}, strides[4] = {a.kStride, a.vStride, a.kStride, a.vStride};
  for (int i = 0; i < 4; i++) {
    if (lens[i] == (size_t)-1) continue;
    size_t rows = lens[i] >= W ? (lens[i] - W) / strides[i] + 1 : 0;
    if (W == 0) rows = (size_t)-1;
    if (rows < nk) nk = rows;
  }
  if (nrp < a.nq + 1) {
    failf(&c, "mask.rowPtr has %zu elements, needs nq + 1 = %zu", nrp, a.nq + 1);
    return NULL;
  }
  for (size_t i = 0; i < a.nq; i++) {
    int32_t r0 = a.rowPtr[i], r1 = a.rowPtr[i + 1];
    if (r0 < 0 || r1 < r0 || (size_t)r1 * 2 > nrg) {
      failf(&c, "mask.rowPtr[%zu..%zu] = %d..%d is not a valid range of the %zu mask ranges", i, i + 1, r0, r1,
            nrg / 2);
      return NULL;
    }
    int64_t prev = 0;
    for (int32_t r = r0; r < r1; r++) {
      int32_t s = a.ranges[2 * r], e = a.ranges[2 * r + 1];
      if (s < prev || e < s || (size_t)e > nk) {
        failf(&c, "key range [%d, %d) of query %zu is not ascending, disjoint and within the %zu key rows", s, e, i,
              nk);
        return NULL;
      }
      prev = e;
    }
  }
  if (backward) kf_attention_backward(&a);
  else kf_attention(&a);
  return undef(env);
}

static napi_value js_attention(napi_env env, napi_callback_info info) { return attention_common(env, info, 0); }
static napi_value js_attention_backward(napi_env env, napi_callback_info info) {
  return attention_common(env, info, 1);
}

// crossEntropy(losses, dlogits|null, logits, targets, rows, V, ignoreIndex, rowScale|null)
static napi_value js_cross_entropy(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "crossEntropy", 8)) return NULL;
  size_t rows = dim(&c, 4, "rows"), V = dim(&c, 5, "V");
  double ig = num(&c, 6, "ignoreIndex");
  float *losses = f32(&c, 0, "losses", rows, 0), *dl = f32(&c, 1, "dlogits", rows * V, 1);
  float *logits = f32(&c, 2, "logits", rows * V, 0), *rs = f32(&c, 7, "rowScale", rows, 1);
  size_t tlen;
  int32_t *t = typed(&c, 3, "targets", napi_int32_array, "Int32Array", &tlen, 0);
  if (c.failed) return NULL;
  if (tlen < rows) {
    failf(&c, "targets has %zu elements, needs at least %zu", tlen, rows);
    return NULL;
  }
  if (ig != floor(ig) || ig < -2147483648.0 || ig > 2147483647.0) {
    failf(&c, "ignoreIndex must be a 32-bit integer");
    return NULL;
  }
  for (size_t r = 0; r < rows; r++)
    if (t[r] != (int32_t)ig && (t[r] < 0 || (size_t)t[r] >= V)) {
      failf(&c, "target %d at row %zu is outside [0, %zu)", t[r], r, V);
      return NULL;
    }
  kf_cross_entropy(losses, dl, logits, t, rows, V, (int32_t)ig, rs);
  return undef(env);
}

// sumSquares(g) -> number
static napi_value js_sum_squares(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "sumSquares", 1)) return NULL;
  size_t n;
  float *g = typed(&c, 0, "g", napi_float32_array, "Float32Array", &n, 0);
  if (c.failed) return NULL;
  napi_value r;
  napi_create_double(env, kf_sum_squares(g, n), &r);
  return r;
}

// adamw(params, grads, m, v, decayMask|null, lr, beta1, beta2, eps, weightDecay, step, gradScale)
static napi_value js_adamw(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "adamw", 12)) return NULL;
  size_t n;
  float *p = typed(&c, 0, "params", napi_float32_array, "Float32Array", &n, 0);
  float *g = f32(&c, 1, "grads", n, 0), *m = f32(&c, 2, "m", n, 0), *v = f32(&c, 3, "v", n, 0);
  size_t mlen;
  uint8_t *mask = typed(&c, 4, "decayMask", napi_uint8_array, "Uint8Array", &mlen, 1);
  kf_adamw_opts o;
  o.lr = (float)num(&c, 5, "lr");
  o.beta1 = (float)num(&c, 6, "beta1");
  o.beta2 = (float)num(&c, 7, "beta2");
  o.eps = (float)num(&c, 8, "eps");
  o.weightDecay = (float)num(&c, 9, "weightDecay");
  o.step = num(&c, 10, "step");
  o.gradScale = (float)num(&c, 11, "gradScale");
  if (c.failed) return NULL;
  if (mask && mlen < n) {
    failf(&c, "decayMask has %zu elements, needs at least %zu", mlen, n);
    return NULL;
  }
  if (!(o.step >= 1) || o.step != floor(o.step)) {
    failf(&c, "step must be an integer >= 1, got %g", o.step);
    return NULL;
  }
  kf_adamw(p, g, m, v, mask, n, &o);
  return undef(env);
}

// The i-th element of argument `arg` (a JS array) as a typed array of `want` type with at least `need` elements.
static void *array_elem(call *c, size_t arg, const char *name, uint32_t i, napi_typedarray_type want,
                        const char *tname, size_t need) {
  if (c->failed) return NULL;
  napi_value el;
  if (napi_get_element(c->env, c->argv[arg], i, &el) != napi_ok) {
    failf(c, "cannot read %s[%u]", name, i);
    return NULL;
  }
  bool is = false;
  napi_is_typedarray(c->env, el, &is);
  napi_typedarray_type type;
  void *data = NULL;
  size_t length = 0, off = 0;
  napi_value ab;
  if (!is || napi_get_typedarray_info(c->env, el, &type, &length, &data, &ab, &off) != napi_ok || type != want) {
    failf(c, "%s[%u] must be a %s", name, i, tname);
    return NULL;
  }
  if (length < need || !data) {
    failf(c, "%s[%u] has %zu elements, needs at least %zu", name, i, length, need);
    return NULL;
  }
  return data;
}

static uint32_t array_len(call *c, size_t arg, const char *name) {
  bool is = false;
  uint32_t n = 0;
  if (c->failed) return 0;
  if (napi_is_array(c->env, c->argv[arg], &is) != napi_ok || !is ||
      napi_get_array_length(c->env, c->argv[arg], &n) != napi_ok) {
    failf(c, "%s must be an array", name);
    return 0;
  }
  return n;
}

static double *f64(call *c, size_t i, const char *name, size_t need) {
  return typed_need(c, i, name, napi_float64_array, "Float64Array", need, 0);
}

static int32_t *i32(call *c, size_t i, const char *name, size_t need) {
  return typed_need(c, i, name, napi_int32_array, "Int32Array", need, 0);
}

// sampleAr(rows: Float32Array[], V, temps: Float64Array, topPs: Float64Array, us: Float64Array, out: Int32Array)
static napi_value js_sample_ar(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "sampleAr", 6)) return NULL;
  uint32_t n = array_len(&c, 0, "rows");
  size_t V = dim(&c, 1, "V");
  double *temps = f64(&c, 2, "temps", n), *topPs = f64(&c, 3, "topPs", n), *us = f64(&c, 4, "us", n);
  int32_t *out = i32(&c, 5, "out", n);
  if (c.failed) return NULL;
  if (V < 1) {
    failf(&c, "V must be >= 1");
    return NULL;
  }
  for (uint32_t i = 0; i < n; i++) {
    if (!(temps[i] >= 0 && isfinite(temps[i]))) failf(&c, "temps[%u] must be finite and >= 0, got %g", i, temps[i]);
    else if (!(topPs[i] > 0 && topPs[i] <= 1)) failf(&c, "topPs[%u] must be in (0, 1], got %g", i, topPs[i]);
    else if (!(us[i] > 0 && us[i] <= 1)) failf(&c, "us[%u] must be in (0, 1], got %g", i, us[i]);
    if (c.failed) return NULL;
  }
  float **rows = malloc((n ? n : 1) * sizeof *rows);
  if (!rows) {
    failf(&c, "out of memory");
    return NULL;
  }
  for (uint32_t i = 0; i < n && !c.failed; i++)
    rows[i] = array_elem(&c, 0, "rows", i, napi_float32_array, "Float32Array", V);
  if (!c.failed) kf_sample_ar(rows, n, V, temps, topPs, us, out);
  free(rows);
  return c.failed ? NULL : undef(env);
}

// selectPflm(blocks: Float32Array[], counts: Int32Array[], takes: Int32Array, lambdas: Float64Array, V, kmax,
//            maskIndex, out: Int32Array [n * kmax])
static napi_value js_select_pflm(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "selectPflm", 8)) return NULL;
  uint32_t n = array_len(&c, 0, "blocks");
  uint32_t nc = array_len(&c, 1, "counts");
  size_t V = dim(&c, 4, "V"), kmax = dim(&c, 5, "kmax");
  double mk = num(&c, 6, "maskIndex");
  int32_t *takes = i32(&c, 2, "takes", n), *out = i32(&c, 7, "out", (size_t)n * kmax);
  double *lams = f64(&c, 3, "lambdas", n);
  if (c.failed) return NULL;
  if (nc != n) failf(&c, "counts has %u arrays for %u blocks", nc, n);
  else if (V < 1) failf(&c, "V must be >= 1");
  else if (mk != floor(mk) || mk < -2147483648.0 || mk > 2147483647.0) failf(&c, "maskIndex must be a 32-bit integer");
  for (uint32_t i = 0; i < n && !c.failed; i++) {
    if (takes[i] < 0 || (size_t)takes[i] > kmax) failf(&c, "takes[%u] = %d is outside [0, kmax = %zu]", i, takes[i], kmax);
    else if (!(lams[i] >= 0 && isfinite(lams[i]))) failf(&c, "lambdas[%u] must be finite and >= 0, got %g", i, lams[i]);
  }
  if (c.failed) return NULL;
  float **blocks = malloc((n ? n : 1) * sizeof *blocks);
  int32_t **counts = malloc((n ? n : 1) * sizeof *counts);
  if (!blocks || !counts) {
    free(blocks);
    free(counts);
    failf(&c, "out of memory");
    return NULL;
  }
  for (uint32_t i = 0; i < n && !c.failed; i++) {
    blocks[i] = array_elem(&c, 0, "blocks", i, napi_float32_array, "Float32Array", (size_t)takes[i] * V);
    counts[i] = array_elem(&c, 1, "counts", i, napi_int32_array, "Int32Array", V);
  }
  // the kernel updates each sequence's counts while it works on it, so two sequences cannot share one array
  for (uint32_t i = 0; i < n && !c.failed; i++)
    for (uint32_t q = 0; q < i && !c.failed; q++)
      if (counts[i] == counts[q]) failf(&c, "counts[%u] and counts[%u] are the same array", q, i);
  if (!c.failed) kf_select_pflm(blocks, counts, takes, lams, n, V, kmax, (int32_t)mk, out);
  free(blocks);
  free(counts);
  return c.failed ? NULL : undef(env);
}

// screenPrepare(w: Float32Array [N*K], N, K, wq: Int8Array [screenBytes(N, K)], meta: Float32Array
// [KF_SCREEN_META*N]) -> boolean: the int8 copy and per-row data the screened selection reads (false: this build has
// no int8 kernels, or w holds a non-finite value).
static napi_value js_screen_prepare(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "screenPrepare", 5)) return NULL;
  size_t N = dim(&c, 1, "N"), K = dim(&c, 2, "K");
  float *w = f32(&c, 0, "w", N * K, 0);
  int8_t *wq = typed_need(&c, 3, "wq", napi_int8_array, "Int8Array", kf_screen_bytes(N, K), 0);
  float *meta = f32(&c, 4, "meta", KF_SCREEN_META * N, 0);
  if (c.failed) return NULL;
  napi_value r;
  napi_get_boolean(env, N > 0 && K > 0 && kf_screen_prepare(w, N, K, wq, meta), &r);
  return r;
}

// screenSelect(h [M*K], M, K, N, wq, meta, w [N*K], bias [N] | null, isum: Int32Array [M*N], rowStart: Int32Array [n],
//              takes: Int32Array [n], counts: Int32Array[] (n, each [N]), lambdas: Float64Array [n], maskIndex, kmax,
//              out: Int32Array [n*kmax]): the PFLM rule's tokens (selectPflm on h w^T + bias) via the int8 screen
static napi_value js_screen_select(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "screenSelect", 16)) return NULL;
  size_t M = dim(&c, 1, "M"), K = dim(&c, 2, "K"), N = dim(&c, 3, "N"), kmax = dim(&c, 14, "kmax");
  uint32_t n = array_len(&c, 11, "counts");
  double mk = num(&c, 13, "maskIndex");
  float *h = f32(&c, 0, "h", M * K, 0);
  int8_t *wq = typed_need(&c, 4, "wq", napi_int8_array, "Int8Array", kf_screen_bytes(N, K), 0);
  float *meta = f32(&c, 5, "meta", KF_SCREEN_META * N, 0), *w = f32(&c, 6, "w", N * K, 0), *bias = f32(&c, 7, "bias", N, 1);
  int32_t *isum = i32(&c, 8, "isum", M * N);
  int32_t *rowStart = i32(&c, 9, "rowStart", n), *takes = i32(&c, 10, "takes", n), *out = i32(&c, 15, "out", (size_t)n * kmax);
  double *lams = f64(&c, 12, "lambdas", n);
  if (c.failed) return NULL;
  if (!kf_screen_supported()) failf(&c, "this build has no int8 screen kernels (check screenSupported first)");
  else if (N < 1 || K < 1) failf(&c, "N and K must be >= 1");
  else if (mk != floor(mk) || mk < -2147483648.0 || mk > 2147483647.0) failf(&c, "maskIndex must be a 32-bit integer");
  for (uint32_t i = 0; i < n && !c.failed; i++) {
    if (takes[i] < 0 || (size_t)takes[i] > kmax) failf(&c, "takes[%u] = %d is outside [0, kmax = %zu]", i, takes[i], kmax);
    else if (rowStart[i] < 0 || (size_t)rowStart[i] + (size_t)takes[i] > M)
      failf(&c, "rows [%d, %d) of sequence %u exceed M = %zu", rowStart[i], rowStart[i] + takes[i], i, M);
    else if (!(lams[i] >= 0 && isfinite(lams[i]))) failf(&c, "lambdas[%u] must be finite and >= 0, got %g", i, lams[i]);
  }
  if (c.failed) return NULL;
  int32_t **counts = malloc((n ? n : 1) * sizeof *counts);
  if (!counts) {
    failf(&c, "out of memory");
    return NULL;
  }
  for (uint32_t i = 0; i < n && !c.failed; i++) counts[i] = array_elem(&c, 11, "counts", i, napi_int32_array, "Int32Array", N);
  for (uint32_t i = 0; i < n && !c.failed; i++)
    for (uint32_t q = 0; q < i && !c.failed; q++)
      if (counts[i] == counts[q]) failf(&c, "counts[%u] and counts[%u] are the same array", q, i);
  if (!c.failed)
    kf_screen_select(h, M, K, N, wq, meta, w, bias, isum, rowStart, takes, counts, lams, n, (int32_t)mk, kmax, out);
  free(counts);
  return c.failed ? NULL : undef(env);
}

// screenBytes(N, K) -> number: the length of screenPrepare's wq (both int8 layouts, screen.c)
static napi_value js_screen_bytes(napi_env env, napi_callback_info info) {
  return size_of_nk(env, info, "screenBytes", kf_screen_bytes);
}

// screenInt8Ratio() -> number: int8 dot-product instructions per fp32 FMA instruction on one core (0: no int8 kernels)
static napi_value js_screen_int8_ratio(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value r;
  napi_create_double(env, kf_screen_int8_ratio(), &r);
  return r;
}

// screenSupported() -> boolean
static napi_value js_screen_supported(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value r;
  napi_get_boolean(env, kf_screen_supported() != 0, &r);
  return r;
}

// exp64(out: Float64Array, x: Float64Array): the sampling kernels' exp over an array (tests compare it with Math.exp)
static napi_value js_exp64(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "exp64", 2)) return NULL;
  size_t n;
  double *x = typed(&c, 1, "x", napi_float64_array, "Float64Array", &n, 0);
  double *out = f64(&c, 0, "out", n);
  if (c.failed) return NULL;
  kf_exp64_array(out, x, n);
  return undef(env);
}

// addInPlace(a, b): a += b elementwise (float32)
static napi_value js_add_inplace(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "addInPlace", 2)) return NULL;
  size_t n;
  float *a = typed(&c, 0, "a", napi_float32_array, "Float32Array", &n, 0);
  float *b = f32(&c, 1, "b", n, 0);
  if (c.failed) return NULL;
  size_t nb;
  typed(&c, 1, "b", napi_float32_array, "Float32Array", &nb, 0);
  if (nb != n) {
    failf(&c, "b has %zu elements, a has %zu", nb, n);
    return NULL;
  }
  if (a != b && overlaps(a, n, b, n)) {
    failf(&c, "a and b overlap partially");
    return NULL;
  }
  kf_add_inplace(a, b, n);
  return undef(env);
}

// scatterRows(dst, dstStride, src, srcStride, width, rowIndex: Int32Array)
static napi_value js_scatter_rows(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "scatterRows", 6)) return NULL;
  size_t nd, ns, rows;
  float *dst = typed(&c, 0, "dst", napi_float32_array, "Float32Array", &nd, 0);
  size_t dstStride = dim(&c, 1, "dstStride");
  const float *src = typed(&c, 2, "src", napi_float32_array, "Float32Array", &ns, 0);
  size_t srcStride = dim(&c, 3, "srcStride"), width = dim(&c, 4, "width");
  int32_t *ri = typed(&c, 5, "rowIndex", napi_int32_array, "Int32Array", &rows, 0);
  if (c.failed) return NULL;
  if (width > dstStride || width > srcStride) {
    failf(&c, "width %zu exceeds a stride (dst %zu, src %zu)", width, dstStride, srcStride);
    return NULL;
  }
  if (rows && (rows - 1) * srcStride + width > ns) {
    failf(&c, "src has %zu elements, %zu rows of stride %zu need %zu", ns, rows, srcStride, (rows - 1) * srcStride + width);
    return NULL;
  }
  for (size_t r = 0; r < rows; r++)
    if (ri[r] < 0 || (size_t)ri[r] * dstStride + width > nd) {
      failf(&c, "rowIndex[%zu] = %d is outside dst (%zu rows of stride %zu)", r, ri[r], nd / (dstStride ? dstStride : 1),
            dstStride);
      return NULL;
    }
  if (rows && overlaps(dst, nd, src, (rows - 1) * srcStride + width)) {
    failf(&c, "dst and src overlap");
    return NULL;
  }
  kf_scatter_rows(dst, dstStride, src, srcStride, width, ri, rows);
  return undef(env);
}

// readBandwidth(buf, reps) -> GB/s (best rep)
static napi_value js_read_bandwidth(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "readBandwidth", 2)) return NULL;
  size_t n;
  float *b = typed(&c, 0, "buf", napi_float32_array, "Float32Array", &n, 0);
  size_t reps = dim(&c, 1, "reps");
  if (c.failed) return NULL;
  if (reps < 1 || n == 0) {
    failf(&c, "needs reps >= 1 and a non-empty buffer");
    return NULL;
  }
  napi_value r;
  napi_create_double(env, kf_read_bandwidth(b, n, (int)reps), &r);
  return r;
}

// fmaPeak(ms) -> GFLOP/s of independent FMA chains on all pool threads for about ms milliseconds
static napi_value js_fma_peak(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "fmaPeak", 1)) return NULL;
  double ms = num(&c, 0, "ms");
  if (c.failed) return NULL;
  if (!(ms > 0 && ms <= 10000)) {
    failf(&c, "ms must be in (0, 10000], got %g", ms);
    return NULL;
  }
  napi_value r;
  napi_create_double(env, kf_fma_peak(ms), &r);
  return r;
}

// adviseHuge(buf): transparent huge pages for the backing store of a freshly allocated typed array
static napi_value js_advise_huge(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "adviseHuge", 1)) return NULL;
  size_t n;
  typed(&c, 0, "buf", napi_float32_array, "Float32Array", &n, 0);
  if (c.failed) return NULL;
  void *p;
  size_t bytes;
  if (backing_store(env, c.argv[0], &p, &bytes)) kf_huge_advise(p, bytes);
  return undef(env);
}

// hugePages([on]) -> boolean: the `huge` knob (transparent huge pages for large buffers and weights), set when on is
// given
static napi_value js_huge_pages(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "hugePages", 0)) return NULL;
  int on = -1;
  if (c.argc > 0 && !is_nullish(&c, 0)) on = flag(&c, 0, "on");
  if (c.failed) return NULL;
  napi_value r;
  napi_get_boolean(env, kf_huge_pages(on) != 0, &r);
  return r;
}

// misalignment(buf) -> byte address of buf[0] modulo 64
static napi_value js_misalignment(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(&c, env, info, "misalignment", 1)) return NULL;
  size_t n;
  float *b = typed(&c, 0, "buf", napi_float32_array, "Float32Array", &n, 0);
  if (c.failed) return NULL;
  napi_value r;
  napi_create_uint32(env, (uint32_t)((uintptr_t)b % 64u), &r);
  return r;
}

// info() -> { blas, threads, avx512 }
static napi_value js_info(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value o, s, t, a;
  napi_create_object(env, &o);
  napi_create_string_utf8(env, kf_blas_name(), NAPI_AUTO_LENGTH, &s);
  napi_create_int32(env, KF_THREADS, &t);
#ifdef __AVX512F__
  napi_get_boolean(env, true, &a);
#else
  napi_get_boolean(env, false, &a);
#endif
  napi_set_named_property(env, o, "blas", s);
  napi_set_named_property(env, o, "threads", t);
  napi_set_named_property(env, o, "avx512", a);
  return o;
}

NAPI_MODULE_INIT() {
  static int inited = 0;
  if (!inited) {
    kf_blas_init();
    inited = 1;
  }
  const struct {
    const char *name;
    napi_callback fn;
  } fns[] = {
    {"linear", js_linear}, {"vpack", js_vpack}, {"vpackFloats", js_vpack_floats}, {"vpackUse", js_vpack_use},
    {"linearVpacked", js_linear_vpacked}, {"adviseHuge", js_advise_huge}, {"hugePages", js_huge_pages}, {"blasLinear", js_blas_linear}, {"gemm", js_gemm}, {"layerNorm", js_layernorm},
    {"layerNormBackward", js_layernorm_backward}, {"gelu", js_gelu}, {"geluBackward", js_gelu_backward},
    {"rope", js_rope}, {"attention", js_attention}, {"attentionBackward", js_attention_backward},
    {"crossEntropy", js_cross_entropy}, {"sumSquares", js_sum_squares}, {"adamw", js_adamw},
    {"sampleAr", js_sample_ar}, {"selectPflm", js_select_pflm}, {"exp64", js_exp64},
    {"screenSupported", js_screen_supported}, {"screenBytes", js_screen_bytes},
    {"screenInt8Ratio", js_screen_int8_ratio}, {"screenPrepare", js_screen_prepare}, {"screenSelect", js_screen_select},
    {"addInPlace", js_add_inplace}, {"scatterRows", js_scatter_rows},
    {"readBandwidth", js_read_bandwidth}, {"fmaPeak", js_fma_peak}, {"misalignment", js_misalignment}, {"info", js_info},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f) != napi_ok) return NULL;
    if (napi_set_named_property(env, exports, fns[i].name, f) != napi_ok) return NULL;
  }
  return exports;
}
