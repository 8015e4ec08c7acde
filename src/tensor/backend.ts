// The one interface through which every compute kernel is reached. Model code never touches raw loops for the heavy
// ops; it calls a Backend. Two implementations: `native` (N-API addon over OpenBLAS + AVX-512 kernels, 2 threads) and
// `ts` (portable TypeScript, also generic over Float64Array so gradient checks can run in float64).
//
// Conventions (llm.c style): buffers are flat row-major arrays, sizes are passed explicitly, outputs are written into
// caller-owned buffers. `accumulate` style backward ops ADD into their gradient outputs (callers zero them), so a
// parameter used several times gets the sum of its gradients. Sub-ranges are passed as typed-array views
// (`buf.subarray(a, b)`), never as (buffer, offset) pairs.
//
// Determinism contract: every forward op computes each output row from that row's inputs only, with a fixed
// reduction order, so results are bit-identical whatever the number of rows or the position of a row in the batch.
// `linear` in particular must not switch algorithms with M (no gemv-for-one-row / gemm-for-many split whose
// summation orders differ). Backward ops may use any order (training only).

export type FloatArray = Float32Array | Float64Array;

/** Structured attention mask: CSR list of allowed key ranges per query. For query i, the allowed keys are the union
 * of [ranges[2r], ranges[2r+1]) for r in [rowPtr[i], rowPtr[i+1]). Ranges of one query are disjoint and ascending.
 * Key indices address rows of the k/v views. Cost is proportional to the number of allowed (query, key) pairs. */
export interface AttentionMask {
  rowPtr: Int32Array; // [nq + 1]
  ranges: Int32Array; // [2 * nRanges]
}

export interface AttentionArgs<T extends FloatArray = Float32Array> {
  nq: number; // number of query rows
  nHeads: number;
  headDim: number;
  q: T; qStride: number; // query row i, head h, dim d at q[i*qStride + h*headDim + d]
  k: T; kStride: number; // key row j at k[j*kStride + h*headDim + d]
  v: T; vStride: number;
  out: T; outStride: number; // [nq, nHeads*headDim] written (not accumulated)
  /** log-sum-exp of the scaled scores per (query, head), layout [nq * nHeads]; written by forward, read by backward. */
  lse: T;
  mask: AttentionMask;
  scale: number; // usually 1/sqrt(headDim)
}

export interface AttentionBackwardArgs<T extends FloatArray = Float32Array> extends AttentionArgs<T> {
  dout: T; // same layout as out (stride outStride)
  dq: T; dk: T; dv: T; // same layouts/strides as q, k, v; ACCUMULATED into
}

/** An activation `linear` can apply to its output (see Backend.linear). */
export type LinearActivation = 'gelu_tanh';

export interface Backend {
  readonly name: 'native' | 'ts';
  readonly threads: number;
  readonly blas: string; // e.g. 'OpenBLAS 0.3.21' or 'none (portable C)' or 'none (TypeScript)'

  // ---- dense linear algebra -----------------------------------------------------------------------------------
  /** out[M,N] = x[M,K] @ w[N,K]^T (+ bias[N]). w in PyTorch [out,in] layout. Deterministic and row-invariant;
   * fast for few rows (weight streaming) and for many. `activation` 'gelu_tanh' then applies gelu(out, out, M*N,
   * 'tanh') to the result, with the same bits, fused where the backend can (native: on each tile as it is finished). */
  linear<T extends FloatArray>(out: T, x: T, w: T, bias: T | null, M: number, K: number, N: number,
    activation?: LinearActivation): void;
  /** General C[M,N] = alpha * op(A) @ op(B) + beta * C, row-major, op = transpose when flag set.
   * A is [M,K] (or [K,M] if transA), B is [K,N] (or [N,K] if transB). Used by backward passes. */
  gemm<T extends FloatArray>(transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
    a: T, b: T, beta: number, c: T): void;

  // ---- normalisation and activations ----------------------------------------------------------------------------
  /** out = (x - mean) * rstd * weight (+ bias), per row of length D. Saves mean/rstd [rows] for backward. */
  layerNorm<T extends FloatArray>(out: T, mean: T, rstd: T, x: T, weight: T, bias: T | null,
    rows: number, D: number, eps: number): void;
  /** dx += ..., dweight += ..., dbias += ... (dbias may be null when the norm has no bias). */
  layerNormBackward<T extends FloatArray>(dx: T, dweight: T, dbias: T | null, dout: T, x: T, mean: T, rstd: T,
    weight: T, rows: number, D: number): void;
  /** GELU elementwise; kind 'tanh' (approximate) or 'exact' (erf). out may alias x. */
  gelu<T extends FloatArray>(out: T, x: T, n: number, kind: 'tanh' | 'exact'): void;
  /** dx += dout * gelu'(x). */
  geluBackward<T extends FloatArray>(dx: T, dout: T, x: T, n: number, kind: 'tanh' | 'exact'): void;

  // ---- attention ---------------------------------------------------------------------------------------------
  /** Rotary embedding in place on rows of x (non-interleaved halves, see KFORCING.md section 2):
   * for row i (stride `stride`), head h: angle = positions[i] * invFreq[j]. `inverse` rotates by -angle (backward). */
  rope<T extends FloatArray>(x: T, stride: number, rows: number, nHeads: number, headDim: number,
    positions: Int32Array, invFreq: T, inverse: boolean): void;
  attention<T extends FloatArray>(args: AttentionArgs<T>): void;
  attentionBackward<T extends FloatArray>(args: AttentionBackwardArgs<T>): void;

  // ---- loss ---------------------------------------------------------------------------------------------------
  /** Softmax cross-entropy per row of logits [rows, V]. losses[i] = -log softmax(logits_i)[targets[i]], or 0 when
   * targets[i] === ignoreIndex. If dlogits is given, writes dlogits_i = (softmax_i - onehot_i) * rowScale[i]
   * (0 for ignored rows). Probabilities use a float64 max/sum per row. */
  crossEntropy<T extends FloatArray>(losses: T, dlogits: T | null, logits: T, targets: Int32Array, rows: number,
    V: number, ignoreIndex: number, rowScale: T | null): void;

  // ---- optimiser ----------------------------------------------------------------------------------------------
  /** Sum of squares of g (float64 accumulation). */
  sumSquares(g: Float32Array): number;
  /** AdamW with decoupled weight decay, in place on one flat parameter buffer. step counts from 1.
   * grads are multiplied by gradScale first (used for clipping). decayMask (1 = decay) may be null (decay all). */
  adamw(params: Float32Array, grads: Float32Array, m: Float32Array, v: Float32Array, opts: {
    lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; step: number; gradScale: number;
    decayMask: Uint8Array | null;
  }): void;
}
