// Finite-difference checks of every backward of the TypeScript backend, in float64.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tsBackend as B } from '../../src/tensor/ts-backend.ts';
import { checkGradient, compareGradient, dot } from '../../src/tensor/gradcheck.ts';
import { Rng } from '../../src/tensor/rng.ts';
import { maskFromRanges, randn, staircaseMask, uniformArray } from './util.ts';
import type { AttentionMask } from '../../src/tensor/backend.ts';

test('gradcheck rejects a wrong gradient (the checker itself can fail)', () => {
  const rng = new Rng(1);
  const x = randn(rng, 5);
  const f = (): number => dot(x, x);
  const good = x.map((v) => 2 * v);
  checkGradient('x.x', f, x, good);
  const bad = good.slice();
  bad[3] *= 1.001;
  assert.throws(() => checkGradient('x.x', f, x, bad), /gradcheck x\.x: error .* at index 3/);
  // Tiny true gradients compared to the scale are not flagged for rounding noise.
  const g = new Float64Array([1, 0, 0]);
  const y = new Float64Array([0.3, 0.2, 0.1]);
  const r = compareGradient(() => y[0] + 1e-13 * Math.sin(y[1]), y, g);
  assert.ok(r.maxErr < 1e-6, `maxErr ${r.maxErr}`);
});

test('linear backward (via gemm) matches finite differences, with and without bias', () => {
  const rng = new Rng(2);
  for (const withBias of [true, false]) {
    const M = 3, K = 5, N = 4;
    const x = randn(rng, M * K), w = randn(rng, N * K), bias = randn(rng, N), R = randn(rng, M * N);
    const out = new Float64Array(M * N);
    const f = (): number => {
      B.linear(out, x, w, withBias ? bias : null, M, K, N);
      return dot(out, R);
    };
    const dx = new Float64Array(M * K), dw = new Float64Array(N * K), db = new Float64Array(N);
    B.gemm(false, false, M, K, N, 1, R, w, 1, dx); // dx = R @ w
    B.gemm(true, false, N, K, M, 1, R, x, 1, dw); // dw = R^T @ x
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) db[n] += R[m * N + n];
    checkGradient('linear dx', f, x, dx);
    checkGradient('linear dw', f, w, dw);
    if (withBias) checkGradient('linear dbias', f, bias, db);
  }
});

test('gemm: all transpose combinations, alpha and beta, gradients w.r.t. A, B and C', () => {
  const rng = new Rng(3);
  const M = 3, N = 4, K = 5, alpha = 0.7, beta = -0.4;
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      const a = randn(rng, M * K), b = randn(rng, K * N), c0 = randn(rng, M * N), R = randn(rng, M * N);
      const c = new Float64Array(M * N);
      const f = (): number => {
        c.set(c0);
        B.gemm(transA, transB, M, N, K, alpha, a, b, beta, c);
        return dot(c, R);
      };
      // opA = op(A) [M,K], opB = op(B) [K,N] as explicit dense matrices for the reference gradients.
      const A = (i: number, k: number): number => (transA ? a[k * M + i] : a[i * K + k]);
      const Bm = (k: number, j: number): number => (transB ? b[j * K + k] : b[k * N + j]);
      const da = new Float64Array(M * K), db = new Float64Array(K * N);
      for (let i = 0; i < M; i++) {
        for (let k = 0; k < K; k++) {
          let s = 0;
          for (let j = 0; j < N; j++) s += R[i * N + j] * Bm(k, j);
          da[transA ? k * M + i : i * K + k] = alpha * s;
        }
      }
      for (let k = 0; k < K; k++) {
        for (let j = 0; j < N; j++) {
          let s = 0;
          for (let i = 0; i < M; i++) s += A(i, k) * R[i * N + j];
          db[transB ? j * K + k : k * N + j] = alpha * s;
        }
      }
      const dc = R.map((r) => beta * r);
      const tag = `gemm(${transA ? 'T' : 'N'}${transB ? 'T' : 'N'})`;
      checkGradient(`${tag} dA`, f, a, da);
      checkGradient(`${tag} dB`, f, b, db);
      checkGradient(`${tag} dC`, f, c0, dc);
    }
  }
});

test('layerNorm backward matches finite differences, with and without bias', () => {
  const rng = new Rng(4);
  const rows = 3, D = 7, eps = 1e-5;
  for (const withBias of [true, false]) {
    const x = randn(rng, rows * D, 2), w = randn(rng, D), bias = randn(rng, D), R = randn(rng, rows * D);
    const out = new Float64Array(rows * D), mean = new Float64Array(rows), rstd = new Float64Array(rows);
    const f = (): number => {
      B.layerNorm(out, mean, rstd, x, w, withBias ? bias : null, rows, D, eps);
      return dot(out, R);
    };
    f();
    const dx = new Float64Array(rows * D).fill(0.5); // non-zero start: backward must accumulate
    const dw = new Float64Array(D).fill(-0.25), db = new Float64Array(D).fill(2);
    B.layerNormBackward(dx, dw, withBias ? db : null, R, x, mean, rstd, w, rows, D);
    checkGradient('layerNorm dx', f, x, dx.map((v) => v - 0.5));
    checkGradient('layerNorm dweight', f, w, dw.map((v) => v + 0.25));
    if (withBias) checkGradient('layerNorm dbias', f, bias, db.map((v) => v - 2));
    else assert.deepEqual(Array.from(db), new Array(D).fill(2));
  }
});

test('gelu tanh and exact backward match finite differences across both erf branches', () => {
  const rng = new Rng(5);
  const n = 64;
  const x = uniformArray(rng, n, -7, 7);
  x[0] = 0; x[1] = 4.3; x[2] = -4.3; // |x|/sqrt2 around 3: the erf series/continued-fraction switch
  const R = randn(rng, n);
  for (const kind of ['tanh', 'exact'] as const) {
    const out = new Float64Array(n);
    const f = (): number => {
      B.gelu(out, x, n, kind);
      return dot(out, R);
    };
    const dx = new Float64Array(n);
    B.geluBackward(dx, R, x, n, kind);
    checkGradient(`gelu ${kind}`, f, x, dx, { tol: 1e-7 });
  }
});

test('rope backward is the inverse rotation (= transpose) and matches finite differences', () => {
  const rng = new Rng(6);
  const rows = 4, nHeads = 2, headDim = 8, stride = 20; // stride > nHeads*headDim: padding must be untouched
  const invFreq = new Float64Array(headDim / 2).map((_, i) => 1 / Math.pow(10000, (2 * i) / headDim));
  const positions = Int32Array.from([0, 3, 17, 1000]);
  const x = randn(rng, rows * stride), R = randn(rng, rows * stride);
  const y = new Float64Array(rows * stride);
  const f = (): number => {
    y.set(x);
    B.rope(y, stride, rows, nHeads, headDim, positions, invFreq, false);
    return dot(y, R);
  };
  const dx = R.slice();
  B.rope(dx, stride, rows, nHeads, headDim, positions, invFreq, true);
  checkGradient('rope', f, x, dx);
  // inverse(forward(x)) = x.
  const z = x.slice();
  B.rope(z, stride, rows, nHeads, headDim, positions, invFreq, false);
  B.rope(z, stride, rows, nHeads, headDim, positions, invFreq, true);
  for (let i = 0; i < z.length; i++) assert.ok(Math.abs(z[i] - x[i]) < 1e-12);
});

/** Attention check on a packed qkv buffer [nTok, 3*D] (q | k | v per row), the model's layout, so strides matter. */
function attentionGradCheck(mask: AttentionMask, nq: number, nKeys: number, nHeads: number, headDim: number,
  seed: number): void {
  const rng = new Rng(seed);
  const D = nHeads * headDim;
  const rowsTot = Math.max(nq, nKeys);
  const qkv = randn(rng, rowsTot * 3 * D);
  const outStride = D + 3; // padded output rows
  const R = randn(rng, nq * outStride);
  const out = new Float64Array(nq * outStride), lse = new Float64Array(nq * nHeads);
  const scale = 1 / Math.sqrt(headDim);
  const views = (buf: Float64Array) => ({
    q: buf.subarray(0), k: buf.subarray(D), v: buf.subarray(2 * D),
  });
  const base = (buf: Float64Array) => {
    const { q, k, v } = views(buf);
    return { nq, nHeads, headDim, q, qStride: 3 * D, k, kStride: 3 * D, v, vStride: 3 * D, out, outStride, lse, mask, scale };
  };
  const f = (): number => {
    B.attention(base(qkv));
    // Padding columns of out are not part of the output; R there must not matter.
    let s = 0;
    for (let i = 0; i < nq; i++) for (let d = 0; d < D; d++) s += out[i * outStride + d] * R[i * outStride + d];
    return s;
  };
  f();
  const dqkv = new Float64Array(qkv.length);
  const g = views(dqkv);
  B.attentionBackward({ ...base(qkv), dout: R, dq: g.q, dk: g.k, dv: g.v });
  checkGradient(`attention nq=${nq} H=${nHeads} Dh=${headDim}`, f, qkv, dqkv);
}

test('attention backward matches finite differences on the staircase mask (several ranges per query)', () => {
  const nCtx = 3, k = 2;
  const nTok = nCtx + nCtx * k;
  attentionGradCheck(staircaseMask(nCtx, k), nTok, nTok, 2, 4, 7);
});

test('attention backward: irregular ranges, a query with no keys, keys beyond the queries', () => {
  const mask = maskFromRanges([
    [[0, 2], [4, 5], [6, 8]],
    [],
    [[1, 3]],
    [[0, 8]],
    [[7, 8], [9, 10]],
  ]);
  attentionGradCheck(mask, 5, 10, 3, 2, 8);
});

test('crossEntropy gradient matches finite differences, with ignore index and row scales', () => {
  const rng = new Rng(9);
  const rows = 5, V = 6, ignore = -100;
  const logits = randn(rng, rows * V, 2);
  const targets = Int32Array.from([2, ignore, 0, 5, 3]);
  const rowScale = Float64Array.from([0.5, 3, 1, 0.125, 2]);
  const losses = new Float64Array(rows);
  const f = (): number => {
    B.crossEntropy(losses, null, logits, targets, rows, V, ignore, null);
    return dot(losses, rowScale);
  };
  const dl = new Float64Array(rows * V).fill(7); // written, not accumulated: old contents must vanish
  B.crossEntropy(losses, dl, logits, targets, rows, V, ignore, rowScale);
  assert.equal(losses[1], 0);
  for (let i = 0; i < V; i++) assert.equal(dl[V + i], 0);
  checkGradient('crossEntropy', f, logits, dl);
  // Without rowScale the gradient is the plain softmax - onehot.
  const dl1 = new Float64Array(rows * V);
  B.crossEntropy(losses, dl1, logits, targets, rows, V, ignore, null);
  const f1 = (): number => {
    B.crossEntropy(losses, null, logits, targets, rows, V, ignore, null);
    return losses.reduce((a, b) => a + b, 0);
  };
  checkGradient('crossEntropy (no rowScale)', f1, logits, dl1);
});
