// Portable TypeScript backend. It is both the fallback when the native addon is missing and the float64 reference
// that gradient checks run against, so every method is generic over Float32Array/Float64Array and favours exactness:
// reductions accumulate in JS numbers (float64) in a fixed order, and each forward output row depends on its own
// inputs only (see the determinism contract in backend.ts). Scratch buffers are float64 so float32 callers get the
// same rounding as float64 callers up to the final store.
import type { AttentionArgs, AttentionBackwardArgs, Backend, FloatArray, LinearActivation } from './backend.ts';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const GELU_TANH_C = 0.044715;
const INV_SQRT_2 = 1 / Math.SQRT2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);
const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);
const INV_SQRT_PI = 1 / Math.sqrt(Math.PI);

/** erf(x) in float64, within about 10 ulps of the true value (checked against a 0.001 grid on [0, 6]). JS has no
 * Math.erf, and the exact GELU of the noise encoder must be a derivative-consistent reference for gradient checks,
 * so a low-order rational fit (errors ~1e-7) is not good enough. */
export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const ax = Math.abs(x);
  let r: number;
  if (ax < 1.5) {
    // erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n 2^n x^(2n+1) / (1*3*...*(2n+1)). All terms are positive, so there is
    // no cancellation (unlike the alternating Maclaurin series); below 1.5 it converges in under 40 terms.
    const x2 = ax * ax;
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 200; n++) {
      term *= (2 * x2) / (2 * n + 1);
      sum += term;
      if (term < sum * 1e-17) break;
    }
    r = TWO_OVER_SQRT_PI * Math.exp(-x2) * sum;
  } else {
    r = 1 - erfc(ax);
  }
  return x < 0 ? -r : r;
}

/** erfc(x) for x >= 1.5 by the continued fraction erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x +
 * ...)))), evaluated bottom-up. It converges faster the larger x is; the depths are where it reaches 1 ulp. */
function erfc(x: number): number {
  if (x > 27) return 0; // exp(-x^2) underflows
  const depth = x < 2 ? 120 : x < 2.5 ? 60 : 40;
  let f = x;
  for (let n = depth; n >= 1; n--) f = x + (n / 2) / f;
  return (Math.exp(-x * x) * INV_SQRT_PI) / f;
}

function geluTanh(x: number): number {
  const u = SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x);
  return 0.5 * x * (1 + Math.tanh(u));
}

function geluTanhGrad(x: number): number {
  const u = SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x);
  const t = Math.tanh(u);
  const du = SQRT_2_OVER_PI * (1 + 3 * GELU_TANH_C * x * x);
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du;
}

function geluExact(x: number): number {
  return 0.5 * x * (1 + erf(x * INV_SQRT_2));
}

function geluExactGrad(x: number): number {
  const cdf = 0.5 * (1 + erf(x * INV_SQRT_2));
  const pdf = Math.exp(-0.5 * x * x) * INV_SQRT_2PI;
  return cdf + x * pdf;
}

// Rows of x handled together in `linear`, so one pass over a weight row serves several outputs. Every output, in
// every blocking path, sums its K products in ascending k order in its own float64 accumulator and adds the bias
// last, so the path a row takes (full block or leftover) does not change its bits.
const LINEAR_ROW_BLOCK = 4;

function linear<T extends FloatArray>(out: T, x: T, w: T, bias: T | null, M: number, K: number, N: number,
  activation?: LinearActivation): void {
  linearPlain(out, x, w, bias, M, K, N);
  if (activation === 'gelu_tanh') gelu(out, out, M * N, 'tanh');
}

function linearPlain<T extends FloatArray>(out: T, x: T, w: T, bias: T | null, M: number, K: number, N: number): void {
  let m = 0;
  for (; m + LINEAR_ROW_BLOCK <= M; m += LINEAR_ROW_BLOCK) {
    const x0 = m * K, x1 = x0 + K, x2 = x1 + K, x3 = x2 + K;
    for (let n = 0; n < N; n++) {
      const wo = n * K;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (let k = 0; k < K; k++) {
        const wv = w[wo + k];
        a0 += x[x0 + k] * wv;
        a1 += x[x1 + k] * wv;
        a2 += x[x2 + k] * wv;
        a3 += x[x3 + k] * wv;
      }
      if (bias) {
        const b = bias[n];
        a0 += b; a1 += b; a2 += b; a3 += b;
      }
      out[m * N + n] = a0;
      out[(m + 1) * N + n] = a1;
      out[(m + 2) * N + n] = a2;
      out[(m + 3) * N + n] = a3;
    }
  }
  // Leftover rows (all of them when decoding one token): four weight rows per pass over x instead.
  for (; m < M; m++) {
    const xo = m * K;
    let n = 0;
    for (; n + 4 <= N; n += 4) {
      const w0 = n * K, w1 = w0 + K, w2 = w1 + K, w3 = w2 + K;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (let k = 0; k < K; k++) {
        const xv = x[xo + k];
        a0 += xv * w[w0 + k];
        a1 += xv * w[w1 + k];
        a2 += xv * w[w2 + k];
        a3 += xv * w[w3 + k];
      }
      if (bias) {
        a0 += bias[n]; a1 += bias[n + 1]; a2 += bias[n + 2]; a3 += bias[n + 3];
      }
      const oo = m * N + n;
      out[oo] = a0; out[oo + 1] = a1; out[oo + 2] = a2; out[oo + 3] = a3;
    }
    for (; n < N; n++) {
      const wo = n * K;
      let a = 0;
      for (let k = 0; k < K; k++) a += x[xo + k] * w[wo + k];
      if (bias) a += bias[n];
      out[m * N + n] = a;
    }
  }
}

function gemm<T extends FloatArray>(transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
  a: T, b: T, beta: number, c: T): void {
  // beta === 0 must not read C (it may hold garbage or NaN), matching BLAS semantics.
  const store = (idx: number, acc: number): void => {
    c[idx] = beta === 0 ? alpha * acc : alpha * acc + beta * c[idx];
  };
  if (!transB) {
    // i-k-j: B rows and the C row are streamed contiguously; the float64 row accumulator keeps float32 exact-ish.
    // Four k per sweep of the accumulator row quarters its loads and stores.
    const acc = new Float64Array(N);
    const aik = (i: number, k: number): number => (transA ? a[k * M + i] : a[i * K + k]);
    for (let i = 0; i < M; i++) {
      acc.fill(0);
      let k = 0;
      for (; k + 4 <= K; k += 4) {
        const a0 = aik(i, k), a1 = aik(i, k + 1), a2 = aik(i, k + 2), a3 = aik(i, k + 3);
        const b0 = k * N, b1 = b0 + N, b2 = b1 + N, b3 = b2 + N;
        for (let j = 0; j < N; j++) acc[j] += a0 * b[b0 + j] + a1 * b[b1 + j] + a2 * b[b2 + j] + a3 * b[b3 + j];
      }
      for (; k < K; k++) {
        const a0 = aik(i, k), bo = k * N;
        for (let j = 0; j < N; j++) acc[j] += a0 * b[bo + j];
      }
      const co = i * N;
      for (let j = 0; j < N; j++) store(co + j, acc[j]);
    }
    return;
  }
  // op(B) = B^T: row j of B is contiguous in k, so dot products (i-j-k) are the cache-friendly order. A transposed
  // A is gathered into a contiguous row first.
  const arow = new Float64Array(K);
  for (let i = 0; i < M; i++) {
    if (transA) for (let k = 0; k < K; k++) arow[k] = a[k * M + i];
    else for (let k = 0; k < K; k++) arow[k] = a[i * K + k];
    const co = i * N;
    let j = 0;
    for (; j + 4 <= N; j += 4) {
      const b0 = j * K, b1 = b0 + K, b2 = b1 + K, b3 = b2 + K;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let k = 0; k < K; k++) {
        const av = arow[k];
        s0 += av * b[b0 + k];
        s1 += av * b[b1 + k];
        s2 += av * b[b2 + k];
        s3 += av * b[b3 + k];
      }
      store(co + j, s0); store(co + j + 1, s1); store(co + j + 2, s2); store(co + j + 3, s3);
    }
    for (; j < N; j++) {
      const bo = j * K;
      let s = 0;
      for (let k = 0; k < K; k++) s += arow[k] * b[bo + k];
      store(co + j, s);
    }
  }
}

function layerNorm<T extends FloatArray>(out: T, mean: T, rstd: T, x: T, weight: T, bias: T | null,
  rows: number, D: number, eps: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * D;
    let s = 0;
    for (let i = 0; i < D; i++) s += x[o + i];
    const mu = s / D;
    let ss = 0;
    for (let i = 0; i < D; i++) {
      const d = x[o + i] - mu;
      ss += d * d;
    }
    const rs = 1 / Math.sqrt(ss / D + eps);
    for (let i = 0; i < D; i++) {
      const y = (x[o + i] - mu) * rs * weight[i];
      out[o + i] = bias ? y + bias[i] : y;
    }
    // The backward pass uses the stored (possibly float32-rounded) statistics, as the saved activations would be.
    mean[r] = mu;
    rstd[r] = rs;
  }
}

function layerNormBackward<T extends FloatArray>(dx: T, dweight: T, dbias: T | null, dout: T, x: T, mean: T, rstd: T,
  weight: T, rows: number, D: number): void {
  const dw = new Float64Array(D);
  const db = new Float64Array(D);
  for (let r = 0; r < rows; r++) {
    const o = r * D;
    const mu = mean[r];
    const rs = rstd[r];
    // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * weight.
    let sg = 0, sgx = 0;
    for (let i = 0; i < D; i++) {
      const xhat = (x[o + i] - mu) * rs;
      const g = dout[o + i] * weight[i];
      sg += g;
      sgx += g * xhat;
      dw[i] += dout[o + i] * xhat;
      db[i] += dout[o + i];
    }
    const mg = sg / D, mgx = sgx / D;
    for (let i = 0; i < D; i++) {
      const xhat = (x[o + i] - mu) * rs;
      const g = dout[o + i] * weight[i];
      dx[o + i] += rs * (g - mg - xhat * mgx);
    }
  }
  for (let i = 0; i < D; i++) dweight[i] += dw[i];
  if (dbias) for (let i = 0; i < D; i++) dbias[i] += db[i];
}

function gelu<T extends FloatArray>(out: T, x: T, n: number, kind: 'tanh' | 'exact'): void {
  if (kind === 'tanh') for (let i = 0; i < n; i++) out[i] = geluTanh(x[i]);
  else for (let i = 0; i < n; i++) out[i] = geluExact(x[i]);
}

function geluBackward<T extends FloatArray>(dx: T, dout: T, x: T, n: number, kind: 'tanh' | 'exact'): void {
  if (kind === 'tanh') for (let i = 0; i < n; i++) dx[i] += dout[i] * geluTanhGrad(x[i]);
  else for (let i = 0; i < n; i++) dx[i] += dout[i] * geluExactGrad(x[i]);
}

function rope<T extends FloatArray>(x: T, stride: number, rows: number, nHeads: number, headDim: number,
  positions: Int32Array, invFreq: T, inverse: boolean): void {
  const half = headDim >> 1;
  const cos = new Float64Array(half);
  const sin = new Float64Array(half);
  for (let r = 0; r < rows; r++) {
    // Angle in float64 from the stored inv_freq values; the native backend must do the same to agree bit-for-bit.
    const pos = positions[r];
    for (let j = 0; j < half; j++) {
      const ang = pos * invFreq[j];
      cos[j] = Math.cos(ang);
      sin[j] = inverse ? -Math.sin(ang) : Math.sin(ang);
    }
    for (let h = 0; h < nHeads; h++) {
      const o = r * stride + h * headDim;
      for (let j = 0; j < half; j++) {
        const x1 = x[o + j];
        const x2 = x[o + half + j];
        x[o + j] = x1 * cos[j] - x2 * sin[j];
        x[o + half + j] = x2 * cos[j] + x1 * sin[j];
      }
    }
  }
}

/** Largest number of allowed keys of any query (sizes the score scratch). */
function maxKeysPerQuery(rowPtr: Int32Array, ranges: Int32Array, nq: number): number {
  let best = 0;
  for (let i = 0; i < nq; i++) {
    let c = 0;
    for (let r = rowPtr[i]; r < rowPtr[i + 1]; r++) c += ranges[2 * r + 1] - ranges[2 * r];
    if (c > best) best = c;
  }
  return best;
}

function attention<T extends FloatArray>(args: AttentionArgs<T>): void {
  const { nq, nHeads, headDim, q, qStride, k, kStride, v, vStride, out, outStride, lse, mask, scale } = args;
  const { rowPtr, ranges } = mask;
  const scores = new Float64Array(maxKeysPerQuery(rowPtr, ranges, nq));
  const acc = new Float64Array(headDim);
  for (let i = 0; i < nq; i++) {
    const r0 = rowPtr[i], r1 = rowPtr[i + 1];
    for (let h = 0; h < nHeads; h++) {
      const qo = i * qStride + h * headDim;
      const hd = h * headDim;
      // Pass 1: scores in ascending key order and their max.
      let n = 0;
      let mx = -Infinity;
      for (let r = r0; r < r1; r++) {
        for (let j = ranges[2 * r]; j < ranges[2 * r + 1]; j++) {
          const ko = j * kStride + hd;
          let s = 0;
          for (let d = 0; d < headDim; d++) s += q[qo + d] * k[ko + d];
          s *= scale;
          scores[n++] = s;
          if (s > mx) mx = s;
        }
      }
      const oo = i * outStride + hd;
      if (n === 0) {
        // A query with no allowed key attends to nothing: zero output, lse = -inf (backward then skips it).
        for (let d = 0; d < headDim; d++) out[oo + d] = 0;
        lse[i * nHeads + h] = -Infinity;
        continue;
      }
      // Pass 2: normaliser, then the probability-weighted sum of values, same key order.
      let sum = 0;
      for (let t = 0; t < n; t++) {
        const e = Math.exp(scores[t] - mx);
        scores[t] = e;
        sum += e;
      }
      const inv = 1 / sum;
      acc.fill(0);
      let t = 0;
      for (let r = r0; r < r1; r++) {
        for (let j = ranges[2 * r]; j < ranges[2 * r + 1]; j++) {
          const p = scores[t++] * inv;
          const vo = j * vStride + hd;
          for (let d = 0; d < headDim; d++) acc[d] += p * v[vo + d];
        }
      }
      for (let d = 0; d < headDim; d++) out[oo + d] = acc[d];
      lse[i * nHeads + h] = mx + Math.log(sum);
    }
  }
}

function attentionBackward<T extends FloatArray>(args: AttentionBackwardArgs<T>): void {
  const { nq, nHeads, headDim, q, qStride, k, kStride, v, vStride, outStride, lse, mask, scale, dout, dq, dk, dv } = args;
  const { rowPtr, ranges } = mask;
  const nmax = maxKeysPerQuery(rowPtr, ranges, nq);
  const probs = new Float64Array(nmax);
  const dps = new Float64Array(nmax);
  const dqAcc = new Float64Array(headDim);
  for (let i = 0; i < nq; i++) {
    const r0 = rowPtr[i], r1 = rowPtr[i + 1];
    for (let h = 0; h < nHeads; h++) {
      const L = lse[i * nHeads + h];
      if (L === -Infinity) continue;
      const qo = i * qStride + h * headDim;
      const oo = i * outStride + h * headDim;
      const hd = h * headDim;
      // Probabilities are recomputed from the saved lse (no stored attention matrix); dp_j = dout . v_j.
      let n = 0;
      let delta = 0;
      for (let r = r0; r < r1; r++) {
        for (let j = ranges[2 * r]; j < ranges[2 * r + 1]; j++) {
          const ko = j * kStride + hd;
          const vo = j * vStride + hd;
          let s = 0, dp = 0;
          for (let d = 0; d < headDim; d++) {
            s += q[qo + d] * k[ko + d];
            dp += dout[oo + d] * v[vo + d];
          }
          const p = Math.exp(s * scale - L);
          probs[n] = p;
          dps[n] = dp;
          delta += p * dp;
          n++;
        }
      }
      dqAcc.fill(0);
      let t = 0;
      for (let r = r0; r < r1; r++) {
        for (let j = ranges[2 * r]; j < ranges[2 * r + 1]; j++) {
          const p = probs[t];
          const ds = p * (dps[t] - delta) * scale;
          t++;
          const ko = j * kStride + hd;
          const vo = j * vStride + hd;
          for (let d = 0; d < headDim; d++) {
            dqAcc[d] += ds * k[ko + d];
            dk[ko + d] += ds * q[qo + d];
            dv[vo + d] += p * dout[oo + d];
          }
        }
      }
      for (let d = 0; d < headDim; d++) dq[qo + d] += dqAcc[d];
    }
  }
}

function crossEntropy<T extends FloatArray>(losses: T, dlogits: T | null, logits: T, targets: Int32Array, rows: number,
  V: number, ignoreIndex: number, rowScale: T | null): void {
  for (let r = 0; r < rows; r++) {
    const o = r * V;
    const tgt = targets[r];
    if (tgt === ignoreIndex) {
      losses[r] = 0;
      if (dlogits) for (let i = 0; i < V; i++) dlogits[o + i] = 0;
      continue;
    }
    let mx = -Infinity;
    for (let i = 0; i < V; i++) if (logits[o + i] > mx) mx = logits[o + i];
    let sum = 0;
    for (let i = 0; i < V; i++) sum += Math.exp(logits[o + i] - mx);
    const logZ = mx + Math.log(sum);
    losses[r] = logZ - logits[o + tgt];
    if (dlogits) {
      const sc = rowScale ? rowScale[r] : 1;
      for (let i = 0; i < V; i++) dlogits[o + i] = Math.exp(logits[o + i] - logZ) * sc;
      dlogits[o + tgt] = (Math.exp(logits[o + tgt] - logZ) - 1) * sc;
    }
  }
}

function sumSquares(g: Float32Array): number {
  let s = 0;
  for (let i = 0; i < g.length; i++) s += g[i] * g[i];
  return s;
}

function adamw(params: Float32Array, grads: Float32Array, m: Float32Array, v: Float32Array, opts: {
  lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; step: number; gradScale: number;
  decayMask: Uint8Array | null;
}): void {
  const { lr, beta1, beta2, eps, weightDecay, step, gradScale, decayMask } = opts;
  const bc1 = 1 - Math.pow(beta1, step);
  const bc2 = 1 - Math.pow(beta2, step);
  const n = params.length;
  for (let i = 0; i < n; i++) {
    const g = grads[i] * gradScale;
    const mi = beta1 * m[i] + (1 - beta1) * g;
    const vi = beta2 * v[i] + (1 - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    // Moments are stored in float32 but the update uses the unrounded float64 values, like llm.c's float registers.
    const upd = (mi / bc1) / (Math.sqrt(vi / bc2) + eps);
    const p = params[i];
    const wd = decayMask === null || decayMask[i] !== 0 ? weightDecay * p : 0;
    params[i] = p - lr * (upd + wd);
  }
}

export const tsBackend: Backend = {
  name: 'ts',
  threads: 1,
  blas: 'none (TypeScript)',
  linear,
  gemm,
  layerNorm,
  layerNormBackward,
  gelu,
  geluBackward,
  rope,
  attention,
  attentionBackward,
  crossEntropy,
  sumSquares,
  adamw,
};
