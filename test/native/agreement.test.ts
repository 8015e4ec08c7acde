// Native (float32, AVX-512/OpenBLAS) against the TypeScript backend (float64 accumulation) on random inputs, op by
// op, with shapes that exercise every tail path (K not a multiple of 16, odd N, M not a multiple of the tile).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tsBackend } from '../../src/tensor/ts-backend.ts';
import { causalMask, ints, maskOf, nat, rand32, relErr, Rng, skip, staircase } from './helpers.ts';

const TOL = 1e-5;

function close(name: string, a: ArrayLike<number>, b: ArrayLike<number>, tol = TOL): void {
  const e = relErr(a, b);
  assert.ok(e < tol, `${name}: relative error ${e.toExponential(2)} >= ${tol}`);
}

test('linear agrees with the TypeScript backend', { skip }, () => {
  const rng = new Rng(1);
  const shapes: Array<[number, number, number]> = [
    [1, 768, 64], [3, 17, 5], [8, 16, 2], [9, 100, 33], [17, 1, 3], [20, 15, 7], [64, 96, 31], [2, 3072, 9],
    [6, 50, 13], [37, 1000, 13], // streaming tiles with N tails; K chunked in the many-row path
  ];
  for (const [M, K, N] of shapes) {
    for (const withBias of [false, true]) {
      const x = rand32(rng, M * K), w = rand32(rng, N * K, 0.1), b = withBias ? rand32(rng, N) : null;
      const o1 = new Float32Array(M * N), o2 = new Float32Array(M * N);
      nat().linear(o1, x, w, b, M, K, N);
      tsBackend.linear(o2, x, w, b, M, K, N);
      close(`linear [${M},${K}]x[${K},${N}] bias=${withBias}`, o1, o2);
    }
  }
});

test('gemm agrees for every transpose combination, alpha and beta', { skip }, () => {
  const rng = new Rng(2);
  for (const [M, N, K] of [[7, 5, 3], [33, 17, 64], [1, 40, 9]] as Array<[number, number, number]>) {
    for (const ta of [false, true]) {
      for (const tb of [false, true]) {
        for (const [alpha, beta] of [[1, 0], [0.5, 1], [2, -0.25]]) {
          const a = rand32(rng, M * K), b = rand32(rng, K * N), c0 = rand32(rng, M * N);
          const c1 = c0.slice(), c2 = c0.slice();
          nat().gemm(ta, tb, M, N, K, alpha, a, b, beta, c1);
          tsBackend.gemm(ta, tb, M, N, K, alpha, a, b, beta, c2);
          close(`gemm M=${M} N=${N} K=${K} tA=${ta} tB=${tb} a=${alpha} b=${beta}`, c1, c2);
        }
      }
    }
  }
});

test('layerNorm forward and backward agree', { skip }, () => {
  const rng = new Rng(3);
  for (const [rows, D] of [[1, 768], [5, 37], [100, 256]] as Array<[number, number]>) {
    for (const withBias of [false, true]) {
      const x = rand32(rng, rows * D, 2), w = rand32(rng, D), b = withBias ? rand32(rng, D) : null;
      const outs = [0, 1].map(() => ({
        out: new Float32Array(rows * D), mean: new Float32Array(rows), rstd: new Float32Array(rows),
      }));
      nat().layerNorm(outs[0].out, outs[0].mean, outs[0].rstd, x, w, b, rows, D, 1e-5);
      tsBackend.layerNorm(outs[1].out, outs[1].mean, outs[1].rstd, x, w, b, rows, D, 1e-5);
      close(`layerNorm out ${rows}x${D}`, outs[0].out, outs[1].out);
      close('layerNorm mean', outs[0].mean, outs[1].mean);
      close('layerNorm rstd', outs[0].rstd, outs[1].rstd);

      const dout = rand32(rng, rows * D);
      const dx0 = rand32(rng, rows * D), dw0 = rand32(rng, D), db0 = rand32(rng, D);
      const g = [0, 1].map(() => ({ dx: dx0.slice(), dw: dw0.slice(), db: withBias ? db0.slice() : null }));
      nat().layerNormBackward(g[0].dx, g[0].dw, g[0].db, dout, x, outs[1].mean, outs[1].rstd, w, rows, D);
      tsBackend.layerNormBackward(g[1].dx, g[1].dw, g[1].db, dout, x, outs[1].mean, outs[1].rstd, w, rows, D);
      close('layerNormBackward dx', g[0].dx, g[1].dx);
      close('layerNormBackward dweight', g[0].dw, g[1].dw);
      if (withBias) close('layerNormBackward dbias', g[0].db!, g[1].db!);
    }
  }
});

test('gelu (tanh and exact) forward and backward agree, including in place', { skip }, () => {
  const rng = new Rng(4);
  for (const n of [1, 15, 16, 33, 100_003]) {
    const x = rand32(rng, n, 3);
    x[0] = -12; // deep negative tail, where 1 + tanh(u) cancels
    for (const kind of ['tanh', 'exact'] as const) {
      const o1 = new Float32Array(n), o2 = new Float32Array(n);
      nat().gelu(o1, x, n, kind);
      tsBackend.gelu(o2, x, n, kind);
      close(`gelu ${kind} n=${n}`, o1, o2);
      const inPlace = x.slice();
      nat().gelu(inPlace, inPlace, n, kind);
      assert.deepEqual(inPlace, o1, `gelu ${kind} in place`);
      const dout = rand32(rng, n), d0 = rand32(rng, n);
      const d1 = d0.slice(), d2 = d0.slice();
      nat().geluBackward(d1, dout, x, n, kind);
      tsBackend.geluBackward(d2, dout, x, n, kind);
      close(`geluBackward ${kind} n=${n}`, d1, d2);
    }
  }
});

test('rope forward and inverse agree, and inverse undoes forward', { skip }, () => {
  const rng = new Rng(5);
  const nHeads = 3, headDim = 16, stride = 3 * nHeads * headDim + 5, rows = 40;
  const invFreq = new Float32Array(headDim / 2).map((_, i) => 1 / Math.pow(10000, (2 * i) / headDim));
  const positions = ints(Array.from({ length: rows }, (_, i) => (i * 37) % 300));
  const x = rand32(rng, rows * stride);
  for (const inverse of [false, true]) {
    const a = x.slice(), b = x.slice();
    nat().rope(a, stride, rows, nHeads, headDim, positions, invFreq, inverse);
    tsBackend.rope(b, stride, rows, nHeads, headDim, positions, invFreq, inverse);
    close(`rope inverse=${inverse}`, a, b);
  }
  const y = x.slice();
  nat().rope(y, stride, rows, nHeads, headDim, positions, invFreq, false);
  nat().rope(y, stride, rows, nHeads, headDim, positions, invFreq, true);
  close('rope round trip', y, x);
  // Elements outside the heads (the stride padding) are untouched.
  for (let r = 0; r < rows; r++) {
    for (let c = nHeads * headDim; c < stride; c++) assert.equal(y[r * stride + c], x[r * stride + c]);
  }
});

function attentionCase(rng: Rng, nq: number, nk: number, mask: ReturnType<typeof maskOf>, nHeads: number,
  headDim: number) {
  const W = nHeads * headDim;
  // q, k, v interleaved in one buffer as the model's qkv projection lays them out: stride 3W.
  const qkv = rand32(rng, Math.max(nq, nk) * 3 * W);
  return {
    nq, nHeads, headDim, mask, scale: 1 / Math.sqrt(headDim),
    q: qkv, qStride: 3 * W, k: qkv.subarray(W), kStride: 3 * W, v: qkv.subarray(2 * W), vStride: 3 * W,
  };
}

test('attention forward and backward agree (causal, staircase, gaps, empty query)', { skip }, () => {
  const rng = new Rng(6);
  const cases = [
    { nq: 50, nk: 50, mask: causalMask(50), nHeads: 2, headDim: 16 },
    { nq: 8 + 8 * 3, nk: 8 + 8 * 3, mask: staircase(8, 3), nHeads: 3, headDim: 24 },
    { nq: 4, nk: 40, mask: maskOf([[[0, 3], [10, 37]], [], [[5, 6]], [[0, 40]]]), nHeads: 4, headDim: 64 },
  ];
  for (const c of cases) {
    const base = attentionCase(rng, c.nq, c.nk, c.mask, c.nHeads, c.headDim);
    const W = c.nHeads * c.headDim;
    const runs = [nat(), tsBackend].map((be) => {
      const out = new Float32Array(c.nq * W), lse = new Float32Array(c.nq * c.nHeads);
      be.attention({ ...base, out, outStride: W, lse });
      return { out, lse };
    });
    const tag = `attention nq=${c.nq} H=${c.nHeads} Dh=${c.headDim}`;
    close(`${tag} out`, runs[0].out, runs[1].out);
    // lse is -inf for an empty query in both; compare the finite ones.
    const fin = (a: Float32Array) => Array.from(a, (v) => (Number.isFinite(v) ? v : -1e9));
    close(`${tag} lse`, fin(runs[0].lse), fin(runs[1].lse));

    const dout = rand32(rng, c.nq * W);
    const grads = [nat(), tsBackend].map((be) => {
      const dqkv = new Float32Array(base.q.length);
      be.attentionBackward({
        ...base, out: runs[1].out, outStride: W, lse: runs[1].lse, dout,
        dq: dqkv, dk: dqkv.subarray(W), dv: dqkv.subarray(2 * W),
      });
      return dqkv;
    });
    close(`${tag} backward dq/dk/dv`, grads[0], grads[1], 2e-5);
  }
});

test('crossEntropy agrees (ignored rows, row scales, loss only)', { skip }, () => {
  const rng = new Rng(7);
  for (const [rows, V] of [[6, 50258], [33, 17]] as Array<[number, number]>) {
    const logits = rand32(rng, rows * V, 4);
    const targets = ints(Array.from({ length: rows }, (_, i) => (i === 2 ? -100 : rng.int(V))));
    const scale = rand32(rng, rows);
    for (const withGrad of [false, true]) {
      const r = [nat(), tsBackend].map((be) => {
        const losses = new Float32Array(rows), d = withGrad ? new Float32Array(rows * V).fill(7) : null;
        be.crossEntropy(losses, d, logits, targets, rows, V, -100, withGrad ? scale : null);
        return { losses, d };
      });
      close(`crossEntropy losses V=${V}`, r[0].losses, r[1].losses);
      assert.equal(r[0].losses[2], 0);
      if (withGrad) {
        close(`crossEntropy dlogits V=${V}`, r[0].d!, r[1].d!);
        for (let i = 0; i < V; i++) assert.equal(r[0].d![2 * V + i], 0);
      }
    }
  }
});

test('sumSquares and adamw agree', { skip }, () => {
  const rng = new Rng(8);
  for (const n of [1, 7, 300_001]) {
    const g = rand32(rng, n);
    const s1 = nat().sumSquares(g), s2 = tsBackend.sumSquares(g);
    assert.ok(Math.abs(s1 - s2) / s2 < 1e-12, `sumSquares n=${n}: ${s1} vs ${s2}`);

    const p0 = rand32(rng, n), m0 = rand32(rng, n, 0.1), v0 = rand32(rng, n, 0.1).map(Math.abs);
    const mask = Uint8Array.from({ length: n }, (_, i) => i % 3);
    for (const decayMask of [null, mask]) {
      const st = [0, 1].map(() => ({ p: p0.slice(), m: m0.slice(), v: v0.slice() }));
      const opts = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 7, gradScale: 0.5, decayMask };
      nat().adamw(st[0].p, g, st[0].m, st[0].v, opts);
      tsBackend.adamw(st[1].p, g, st[1].m, st[1].v, opts);
      close(`adamw p n=${n}`, st[0].p, st[1].p);
      close(`adamw m n=${n}`, st[0].m, st[1].m);
      close(`adamw v n=${n}`, st[0].v, st[1].v);
    }
  }
});

test('Float64Array calls go to the TypeScript backend', { skip }, () => {
  const rng = new Rng(9);
  const M = 3, K = 20, N = 4;
  const x = Float64Array.from(rand32(rng, M * K)), w = Float64Array.from(rand32(rng, N * K));
  const o1 = new Float64Array(M * N), o2 = new Float64Array(M * N);
  nat().linear(o1, x, w, null, M, K, N);
  tsBackend.linear(o2, x, w, null, M, K, N);
  assert.deepEqual(o1, o2);
});
