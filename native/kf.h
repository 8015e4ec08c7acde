// Shared declarations of the kforce native kernels. Every kernel works on raw float buffers whose sizes the N-API
// layer (addon.c) has already validated, so nothing here checks bounds.
#ifndef KF_H
#define KF_H

#include <stddef.h>
#include <stdint.h>

#define KF_THREADS 2

// ---- thread pool (pool.c) -------------------------------------------------------------------------------------
// fn runs once per thread with tid in [0, nt). nt is KF_THREADS, or 1 when the pool is busy (a second JS thread
// calling in) or the work is too small to be worth a wake-up. Kernels must give identical results for any nt.
typedef void (*kf_task_fn)(void *arg, int tid, int nt);
void kf_parallel(kf_task_fn fn, void *arg, int want_threads);

// Elements from which the row ops of a step (layer norm, GELU, rope, the residual add) use both threads: in a decode
// step they read rows that both cores just wrote (a linear's output columns are split between them), so a second
// thread pays from about 16 rows of 768 (C driver, the two thresholds alternating: 64 rows x 12 layers, layer norm
// 0.234 -> 0.139 ms, rope 0.527 -> 0.305 ms; 8 rows: equal).
#define KF_ROW_OPS_PAR_MIN 8192

// Work split of the streaming kernels (linear.c's grouped path, screen.c's integer pass): rows [0, N) of row_bytes
// each cut into a multiple of KF_THREADS equal blocks of about target_bytes (rows a multiple of align), so that each
// thread streams long runs, and the last KF_THREADS blocks cut again into `pieces` blocks, which whichever thread is
// free takes (the two threads finish unevenly: measured, RESULTS.md session 9). Blocks are numbered in row order.
typedef struct {
  size_t N, nb, nfull, nbs, nblocks; // blocks [0, nfull) have nb rows, the rest nbs (the last one up to N)
} kf_row_blocks;
kf_row_blocks kf_split_rows(size_t N, size_t row_bytes, size_t target_bytes, size_t align, size_t pieces);
void kf_block_rows(const kf_row_blocks *s, size_t b, size_t *n0, size_t *n1);

// ---- linear (linear.c) ----------------------------------------------------------------------------------------
void kf_linear(float *out, const float *x, const float *w, const float *bias, size_t M, size_t K, size_t N);
// kf_linear followed by an activation of every output (KF_ACT_GELU_TANH: the values kf_gelu(.., exact = 0) gives),
// applied to each block of outputs as it is finished, by the thread that computed it, instead of in a second pass
// over out.
enum { KF_ACT_NONE = 0, KF_ACT_GELU_TANH = 1 };
void kf_linear_act(float *out, const float *x, const float *w, const float *bias, size_t M, size_t K, size_t N,
                   int act);
// 9 to 64 rows from a lane-major packed copy of the weights (linear.c): the bits kf_linear_act gives. kf_vpack writes
// the copy of w [N][K] (K % 16 == 0, else returns 0) into packed [kf_vpack_floats(N, K)]; kf_linear_vpacked_use says
// whether M rows of K columns run faster that way than through kf_linear (0 outside 9..64 rows, for K not a positive
// multiple of 16, or with the knob vp at 0); kf_linear_vpacked takes M <= 64, and only where kf_vpack_supported
// (AVX-512 builds).
int kf_vpack_supported(void);
size_t kf_vpack_floats(size_t N, size_t K);
int kf_vpack(const float *w, size_t N, size_t K, float *packed);
int kf_linear_vpacked_use(size_t M, size_t K);
void kf_linear_vpacked(float *out, const float *x, const float *packed, const float *bias, size_t M, size_t K, size_t N,
                       int act);
// Sets a tuning knob of kf_linear by name (pf_bytes, block_few, block_many, kc, mb, stream); 0 if unknown.
int kf_linear_knob(const char *name, long value);
// Transparent huge pages for the 2 MB-aligned interior of [p, p + bytes) (linear.c; no-ops while the `huge` knob is
// 0). collapse: for memory already written (weights), once per allocation; advise: for a fresh allocation, before
// its first touch.
void kf_huge_collapse(const void *p, size_t bytes);
void kf_huge_advise(const void *p, size_t bytes);
// The `huge` knob: on >= 0 sets it (1 on, 0 off), on < 0 only reads it; returns its value. It applies to memory that
// comes through the two calls above afterwards (pages already placed stay where they are).
int kf_huge_pages(int on);

// ---- gemm (gemm.c) -------------------------------------------------------------------------------------------
void kf_gemm(int transA, int transB, size_t M, size_t N, size_t K, float alpha, const float *a, const float *b,
             float beta, float *c);
const char *kf_blas_name(void);
// OpenBLAS alone (gemv for one row, else sgemm) for the benchmarks; returns 0 when built without BLAS.
int kf_blas_linear(float *out, const float *x, const float *w, size_t M, size_t K, size_t N);
void kf_blas_init(void);

// ---- normalisation, activations (norm.c) ------------------------------------------------------------------------
void kf_layernorm(float *out, float *mean, float *rstd, const float *x, const float *weight, const float *bias,
                  size_t rows, size_t D, float eps);
void kf_layernorm_backward(float *dx, float *dweight, float *dbias, const float *dout, const float *x,
                           const float *mean, const float *rstd, const float *weight, size_t rows, size_t D);
void kf_gelu(float *out, const float *x, size_t n, int exact);
void kf_gelu_backward(float *dx, const float *dout, const float *x, size_t n, int exact);

// ---- attention (attention.c, rope.c) ---------------------------------------------------------------------------
void kf_rope(float *x, size_t stride, size_t rows, size_t nHeads, size_t headDim, const int32_t *positions,
             const float *invFreq, int inverse);

typedef struct {
  size_t nq, nHeads, headDim;
  const float *q; size_t qStride;
  const float *k; size_t kStride;
  const float *v; size_t vStride;
  float *out; size_t outStride;
  float *lse;
  const int32_t *rowPtr;
  const int32_t *ranges;
  float scale;
  // backward only
  const float *dout;
  float *dq, *dk, *dv;
} kf_attn_args;
void kf_attention(const kf_attn_args *a);
void kf_attention_backward(const kf_attn_args *a);

// ---- loss, optimiser, misc (loss.c) ----------------------------------------------------------------------------
void kf_cross_entropy(float *losses, float *dlogits, const float *logits, const int32_t *targets, size_t rows,
                      size_t V, int32_t ignoreIndex, const float *rowScale);
double kf_sum_squares(const float *g, size_t n);
typedef struct {
  float lr, beta1, beta2, eps, weightDecay, gradScale;
  double step;
} kf_adamw_opts;
void kf_adamw(float *p, const float *g, float *m, float *v, const uint8_t *decayMask, size_t n,
              const kf_adamw_opts *o);
double kf_read_bandwidth(const float *buf, size_t n, int reps);
double kf_fma_peak(double ms);

// ---- token selection (sample.c) ----------------------------------------------------------------------------------
// exp in float64 with the bits of V8's Math.exp (the algorithm behind it), scalar and over an array.
double kf_exp64(double x);
void kf_exp64_array(double *out, const double *x, size_t n);
// AR rule per row (sampling.ts sampleAr after the logits processors): temps[i] == 0 -> first argmax; else inverse
// CDF of softmax(row / temps[i]) in float64 at us[i], restricted to the top-p nucleus when topPs[i] < 1. out[i] is
// the token, -1 when the row holds NaN/inf (where TS throws), -2 when scratch memory could not be allocated.
void kf_sample_ar(float *const *rows, size_t n, size_t V, const double *temps, const double *topPs,
                  const double *us, int32_t *out);
// PFLM rule per sequence (sampling.ts selectPflm): slots s < takes[i] of blocks[i] ([kmax][V]) take the argmax
// penalised by lambdas[i] in turn; out[i*kmax + s] is the token or -1 (NaN row; later slots unset). Mask logits are set in place;
// counts[i] is left as it was (the caller records the tokens). The counts arrays must be distinct.
void kf_select_pflm(float *const *blocks, int32_t *const *counts, const int32_t *takes, const double *lambdas,
                    size_t n, size_t V, size_t kmax, int32_t maskIndex, int32_t *out);
// One slot of that rule on a full row (sets the mask logit): the token, or -1 for a row argmax_f32 rejects.
int32_t kf_pflm_slot(float *row, size_t V, const int32_t *cnt, double lambda, int32_t maskIndex);

// ---- screened PFLM selection (screen.c): the same tokens from an int8 copy of the output layer -------------------
// 1 when this build has the int8 dot-product kernels (AVX512_VNNI).
int kf_screen_supported(void);
// int8 dot-product instructions (vpdpbusd) per fp32 FMA instruction on one core, measured once (0: no int8 kernels).
double kf_screen_int8_ratio(void);
// Row stride of the int8 copy (K rounded up to 64) and its size in bytes (rows padded to a multiple of 4).
size_t kf_screen_stride(size_t K);
size_t kf_screen_bytes(size_t N, size_t K);
// wq[kf_screen_bytes] = int8 copy of w (zero-padded; rows interleaved in groups of 4, screen.c); meta[KF_SCREEN_META][N]
// = per row its scale, upper bounds of its L1 norm and of its quantisation residual's L2 norm, the sum of its int8
// values and an upper bound of its L2 norm; 0 when unsupported or a weight is not finite.
#define KF_SCREEN_META 5
int kf_screen_prepare(const float *w, size_t N, size_t K, int8_t *wq, float *meta);
// Sequence i's slots s < takes[i] use rows rowStart[i] + s of h [M, K] (the output layer's input) and get the tokens
// kf_select_pflm gives on the full logits h w^T + bias with counts[i] and lambdas[i] (out[i * kmax + s]; counts left
// as found; -2 when out of memory). isum: [M, N] scratch.
void kf_screen_select(const float *h, size_t M, size_t K, size_t N, const int8_t *wq, const float *meta,
                      const float *w, const float *bias, int32_t *isum, const int32_t *rowStart, const int32_t *takes,
                      int32_t *const *counts, const double *lambdas, size_t nseq, int32_t maskIndex, size_t kmax,
                      int32_t *out);

// ---- row glue (rows.c) -------------------------------------------------------------------------------------------
void kf_add_inplace(float *a, const float *b, size_t n);
// dst[rowIndex[r] * dstStride + c] = src[r * srcStride + c] for c < width.
void kf_scatter_rows(float *dst, size_t dstStride, const float *src, size_t srcStride, size_t width,
                     const int32_t *rowIndex, size_t rows);

// ---- shared numeric helpers (mathx.c) ---------------------------------------------------------------------------
// Dot product with the one fixed summation order used everywhere a row-invariant result is needed: 16 lane
// accumulators walked over k in order (zero-padded tail), then the pairwise tree lanes (i, i+8), (i, i+4), (i, i+2),
// (i, i+1). The AVX-512 tiles in linear.c and attention.c reproduce exactly this order.
float kf_dot16(const float *a, const float *b, size_t n);
float kf_tree16(const float *acc);
float kf_expf(float x);

#endif
