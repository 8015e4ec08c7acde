// Forward values of the TypeScript backend against direct formulas, float32 vs float64 agreement, and the row
// determinism contract (a row alone and inside any batch give bit-identical results).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { erf, tsBackend as B } from '../../src/tensor/ts-backend.ts';
import { Rng } from '../../src/tensor/rng.ts';
import type { AttentionMask, FloatArray } from '../../src/tensor/backend.ts';
import { bitEqual, denseMask, f32, maskFromRanges, maxRelDiff, randn, staircaseMask } from './util.ts';

test('erf and both GELUs match reference values', () => {
  // Reference values to 16 digits (correctly rounded erf, e.g. Python's math.erf); the implementation promises ~10 ulps.
  const cases: Array<[number, number]> = [
    [0, 0], [0.1, 0.1124629160182849], [0.5, 0.5204998778130465], [1, 0.8427007929497149],
    [2, 0.9953222650189527], [3, 0.9999779095030014], [-1.5, -0.9661051464753108], [5, 0.9999999999984626],
  ];
  for (const [x, e] of cases) assert.ok(Math.abs(erf(x) - e) <= 2.5e-15 * Math.abs(e), `erf(${x}) = ${erf(x)}`);
  const out = new Float64Array(2);
  B.gelu(out, Float64Array.from([1, -2]), 2, 'exact');
  assert.ok(Math.abs(out[0] - 0.8413447460685429) < 1e-15);
  assert.ok(Math.abs(out[1] - -0.04550026389635842) < 1e-15);
  B.gelu(out, Float64Array.from([1, -2]), 2, 'tanh');
  assert.ok(Math.abs(out[0] - 0.8411919906082768) < 1e-15);
  assert.ok(Math.abs(out[1] - -0.04540230591222494) < 1e-15);
  // out may alias x.
  const x = Float64Array.from([1, -2]);
  B.gelu(x, x, 2, 'tanh');
  assert.deepEqual(Array.from(x), Array.from(out));
});

test('linear and gemm match naive loops; gemm with beta = 0 ignores NaN in C', () => {
  const rng = new Rng(11);
  const M = 7, K = 9, N = 5; // M not a multiple of the row block
  const x = randn(rng, M * K), w = randn(rng, N * K), bias = randn(rng, N);
  const out = new Float64Array(M * N);
  B.linear(out, x, w, bias, M, K, N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = bias[n];
      for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
      assert.ok(Math.abs(out[m * N + n] - s) < 1e-12);
    }
  }
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      const a = randn(rng, M * K), b = randn(rng, K * N);
      const c = new Float64Array(M * N).fill(NaN);
      B.gemm(transA, transB, M, N, K, 2, a, b, 0, c);
      for (let i = 0; i < M; i++) {
        for (let j = 0; j < N; j++) {
          let s = 0;
          for (let k = 0; k < K; k++) s += (transA ? a[k * M + i] : a[i * K + k]) * (transB ? b[j * K + k] : b[k * N + j]);
          assert.ok(Math.abs(c[i * N + j] - 2 * s) < 1e-12, `gemm ${transA} ${transB} (${i},${j})`);
        }
      }
    }
  }
});

test('layerNorm matches the formula and saves mean/rstd', () => {
  const rng = new Rng(12);
  const rows = 3, D = 10, eps = 1e-5;
  const x = randn(rng, rows * D, 3), w = randn(rng, D), b = randn(rng, D);
  const out = new Float64Array(rows * D), mean = new Float64Array(rows), rstd = new Float64Array(rows);
  B.layerNorm(out, mean, rstd, x, w, b, rows, D, eps);
  for (let r = 0; r < rows; r++) {
    const row = Array.from(x.subarray(r * D, r * D + D));
    const mu = row.reduce((s, v) => s + v, 0) / D;
    const variance = row.reduce((s, v) => s + (v - mu) ** 2, 0) / D;
    assert.ok(Math.abs(mean[r] - mu) < 1e-14);
    assert.ok(Math.abs(rstd[r] - 1 / Math.sqrt(variance + eps)) < 1e-12);
    for (let i = 0; i < D; i++) {
      const e = ((row[i] - mu) / Math.sqrt(variance + eps)) * w[i] + b[i];
      assert.ok(Math.abs(out[r * D + i] - e) < 1e-12);
    }
  }
});

test('rope follows the non-interleaved-halves convention of KFORCING.md section 2', () => {
  // headDim 4: pairs (0,2) and (1,3); angle_j = pos * invFreq[j].
  const invFreq = Float64Array.from([1, 0.01]);
  const x = Float64Array.from([1, 2, 3, 4]);
  B.rope(x, 4, 1, 1, 4, Int32Array.from([2]), invFreq, false);
  const a0 = 2, a1 = 0.02;
  const expect = [
    1 * Math.cos(a0) - 3 * Math.sin(a0),
    2 * Math.cos(a1) - 4 * Math.sin(a1),
    3 * Math.cos(a0) + 1 * Math.sin(a0),
    4 * Math.cos(a1) + 2 * Math.sin(a1),
  ];
  for (let i = 0; i < 4; i++) assert.ok(Math.abs(x[i] - expect[i]) < 1e-15, `dim ${i}`);
  // Position 0 is the identity.
  const y = Float64Array.from([1, 2, 3, 4]);
  B.rope(y, 4, 1, 1, 4, Int32Array.from([0]), invFreq, false);
  assert.deepEqual(Array.from(y), [1, 2, 3, 4]);
});

/** Dense softmax attention with a boolean mask, straight from the definition. */
function denseAttention(q: Float64Array, k: Float64Array, v: Float64Array, allowed: boolean[][], nHeads: number,
  headDim: number, scale: number): { out: Float64Array; lse: Float64Array } {
  const nq = allowed.length, D = nHeads * headDim;
  const out = new Float64Array(nq * D), lse = new Float64Array(nq * nHeads);
  for (let i = 0; i < nq; i++) {
    for (let h = 0; h < nHeads; h++) {
      const s: number[] = [];
      const js: number[] = [];
      allowed[i].forEach((ok, j) => {
        if (!ok) return;
        let d = 0;
        for (let t = 0; t < headDim; t++) d += q[i * D + h * headDim + t] * k[j * D + h * headDim + t];
        s.push(d * scale);
        js.push(j);
      });
      const z = s.reduce((acc, e) => acc + Math.exp(e), 0);
      lse[i * nHeads + h] = Math.log(z);
      js.forEach((j, n) => {
        for (let t = 0; t < headDim; t++) out[i * D + h * headDim + t] += (Math.exp(s[n]) / z) * v[j * D + h * headDim + t];
      });
    }
  }
  return { out, lse };
}

test('attention equals dense masked softmax attention on the staircase mask', () => {
  const rng = new Rng(13);
  const nCtx = 4, k = 3, nHeads = 2, headDim = 4, D = nHeads * headDim;
  const n = nCtx + nCtx * k;
  const mask = staircaseMask(nCtx, k);
  const q = randn(rng, n * D), kk = randn(rng, n * D), v = randn(rng, n * D);
  const out = new Float64Array(n * D), lse = new Float64Array(n * nHeads);
  const scale = 1 / Math.sqrt(headDim);
  B.attention({ nq: n, nHeads, headDim, q, qStride: D, k: kk, kStride: D, v, vStride: D, out, outStride: D, lse, mask, scale });
  const allowed = denseMask(mask, n, n);
  // Spot-check the mask itself against the rules of section 4: noise (t=1, a=2) is row nCtx + 1*k + 1.
  const row = allowed[nCtx + k + 1];
  assert.deepEqual(row.map((b, j) => (b ? j : -1)).filter((j) => j >= 0), [0, 1, nCtx + k, nCtx + k + 1]);
  const ref = denseAttention(q, kk, v, allowed, nHeads, headDim, scale);
  assert.ok(maxRelDiff(out, ref.out) < 1e-13);
  assert.ok(maxRelDiff(lse, ref.lse) < 1e-13);
});

test('crossEntropy matches log-softmax and handles large logits', () => {
  const logits = Float64Array.from([1, 2, 3, 1000, 1001, 999]);
  const losses = new Float64Array(2);
  B.crossEntropy(losses, null, logits, Int32Array.from([0, 2]), 2, 3, -1, null);
  const lse = Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3));
  assert.ok(Math.abs(losses[0] - (lse - 1)) < 1e-14);
  assert.ok(Math.abs(losses[1] - (lse - 1)) < 1e-12, `overflow-safe: ${losses[1]}`);
});

/** Runs one closure on float64 inputs and on the same values rounded to float32; returns both outputs. */
function bothPrecisions(run: <T extends FloatArray>(mk: (a: Float64Array) => T,
  alloc: (n: number) => T) => T[]): Array<[Float64Array, Float32Array]> {
  const o64 = run((a) => Float64Array.from(f32(a)), (m) => new Float64Array(m));
  const o32 = run((a) => f32(a), (m) => new Float32Array(m));
  return o64.map((a, i) => [a as Float64Array, o32[i] as Float32Array]);
}

test('float32 results agree with float64 ones for every op', () => {
  const rng = new Rng(14);
  const M = 6, K = 32, N = 12, nHeads = 2, headDim = 8, D = nHeads * headDim, V = 50;
  const x0 = randn(rng, M * K), w0 = randn(rng, N * K, 0.2), b0 = randn(rng, N), R0 = randn(rng, M * N);
  const xl = randn(rng, M * D, 2), wl = randn(rng, D), bl = randn(rng, D), Rl = randn(rng, M * D);
  const nCtx = 2, kk = 2, nTok = nCtx + nCtx * kk;
  const qkv = randn(rng, nTok * 3 * D), Ra = randn(rng, nTok * D);
  const logits0 = randn(rng, M * V, 3);
  const targets = Int32Array.from([0, 7, -1, 49, 3, 3]);
  const rowScale0 = Float64Array.from([1, 0.5, 2, 1, 1, 0.25]);
  const mask = staircaseMask(nCtx, kk);
  const invFreq0 = new Float64Array(headDim / 2).map((_, i) => 1 / Math.pow(10000, (2 * i) / headDim));
  const positions = Int32Array.from([0, 1, 2, 3, 2, 3]);
  const pairs = bothPrecisions(<T extends FloatArray>(mk: (a: Float64Array) => T, alloc: (n: number) => T): T[] => {
    const outs: T[] = [];
    const x = mk(x0), w = mk(w0), b = mk(b0), R = mk(R0);
    const y = alloc(M * N);
    B.linear(y, x, w, b, M, K, N);
    const dx = alloc(M * K), dw = alloc(N * K);
    B.gemm(false, false, M, K, N, 1, R, w, 0, dx);
    B.gemm(true, false, N, K, M, 1, R, x, 0, dw);
    outs.push(y, dx, dw);
    const ln = alloc(M * D), mean = alloc(M), rstd = alloc(M), dlx = alloc(M * D), dlw = alloc(D), dlb = alloc(D);
    const lx = mk(xl), lw = mk(wl);
    B.layerNorm(ln, mean, rstd, lx, lw, mk(bl), M, D, 1e-5);
    B.layerNormBackward(dlx, dlw, dlb, mk(Rl), lx, mean, rstd, lw, M, D);
    outs.push(ln, dlx, dlw, dlb);
    for (const kind of ['tanh', 'exact'] as const) {
      const g = alloc(M * D), dg = alloc(M * D);
      B.gelu(g, lx, M * D, kind);
      B.geluBackward(dg, mk(Rl), lx, M * D, kind);
      outs.push(g, dg);
    }
    const rx = mk(xl);
    B.rope(rx, D, M, nHeads, headDim, positions, mk(invFreq0), false);
    outs.push(rx);
    const buf = mk(qkv), out = alloc(nTok * D), lse = alloc(nTok * nHeads), dbuf = alloc(qkv.length);
    const args = {
      nq: nTok, nHeads, headDim, q: buf.subarray(0), qStride: 3 * D, k: buf.subarray(D), kStride: 3 * D,
      v: buf.subarray(2 * D), vStride: 3 * D, out, outStride: D, lse, mask, scale: 1 / Math.sqrt(headDim),
    };
    B.attention(args);
    B.attentionBackward({ ...args, dout: mk(Ra), dq: dbuf.subarray(0), dk: dbuf.subarray(D), dv: dbuf.subarray(2 * D) });
    outs.push(out, lse, dbuf);
    const losses = alloc(M), dl = alloc(M * V);
    B.crossEntropy(losses, dl, mk(logits0), targets, M, V, -1, mk(rowScale0));
    outs.push(losses, dl);
    return outs;
  });
  const names = ['linear', 'linear dx', 'linear dw', 'layerNorm', 'layerNorm dx', 'layerNorm dw', 'layerNorm db',
    'gelu tanh', 'gelu tanh dx', 'gelu exact', 'gelu exact dx', 'rope', 'attention', 'attention lse',
    'attention dqkv', 'crossEntropy', 'crossEntropy dlogits'];
  assert.equal(pairs.length, names.length);
  pairs.forEach(([a64, a32], i) => {
    const d = maxRelDiff(a32, a64);
    assert.ok(d < 2e-5, `${names[i]}: float32 vs float64 differ by ${d}`);
  });
  const sq = new Float32Array([3, 4, 1e-3]);
  assert.equal(B.sumSquares(sq), 9 + 16 + Math.fround(1e-3) ** 2);
});

// ---- determinism: a row alone gives the same bits as inside a batch -------------------------------------------

function rowsOf<T extends FloatArray>(a: T, r0: number, r1: number, width: number): T {
  return a.subarray(r0 * width, r1 * width) as T;
}

test('linear, layerNorm, gelu and crossEntropy rows are bit-identical alone and inside a batch', () => {
  fc.assert(fc.property(
    fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 12 }),
    fc.integer({ min: 0, max: 1e9 }), fc.nat(), fc.nat(),
    (M, K, N, seed, ra, rb) => {
      const rng = new Rng(seed);
      const r0 = ra % M, r1 = r0 + 1 + (rb % (M - r0)); // a non-empty sub-batch [r0, r1)
      const x = f32(randn(rng, M * K)), w = f32(randn(rng, N * K)), bias = f32(randn(rng, N));
      const full = new Float32Array(M * N), part = new Float32Array((r1 - r0) * N);
      B.linear(full, x, w, bias, M, K, N);
      B.linear(part, rowsOf(x, r0, r1, K), w, bias, r1 - r0, K, N);
      assert.ok(bitEqual(rowsOf(full, r0, r1, N), part), 'linear');

      const lw = f32(randn(rng, K)), lb = f32(randn(rng, K));
      const lo = new Float32Array(M * K), lm = new Float32Array(M), lr = new Float32Array(M);
      const po = new Float32Array((r1 - r0) * K), pm = new Float32Array(r1 - r0), pr = new Float32Array(r1 - r0);
      B.layerNorm(lo, lm, lr, x, lw, lb, M, K, 1e-5);
      B.layerNorm(po, pm, pr, rowsOf(x, r0, r1, K), lw, lb, r1 - r0, K, 1e-5);
      assert.ok(bitEqual(rowsOf(lo, r0, r1, K), po) && bitEqual(lr.subarray(r0, r1), pr), 'layerNorm');

      const g = new Float32Array(M * K), gp = new Float32Array((r1 - r0) * K);
      B.gelu(g, x, M * K, 'exact');
      B.gelu(gp, rowsOf(x, r0, r1, K), (r1 - r0) * K, 'exact');
      assert.ok(bitEqual(rowsOf(g, r0, r1, K), gp), 'gelu');

      const targets = Int32Array.from({ length: M }, (_, i) => (i * 7 + seed) % K);
      const l = new Float32Array(M), dl = new Float32Array(M * K);
      const lp = new Float32Array(r1 - r0), dlp = new Float32Array((r1 - r0) * K);
      B.crossEntropy(l, dl, x, targets, M, K, -1, null);
      B.crossEntropy(lp, dlp, rowsOf(x, r0, r1, K), targets.subarray(r0, r1), r1 - r0, K, -1, null);
      assert.ok(bitEqual(l.subarray(r0, r1), lp) && bitEqual(rowsOf(dl, r0, r1, K), dlp), 'crossEntropy');
    },
  ), { numRuns: 150 });
});

/** Random CSR mask: each query gets 0-3 disjoint ascending ranges inside [0, keyRows). */
const maskArb = (nq: number, keyRows: number) => fc.array(
  fc.uniqueArray(fc.integer({ min: 0, max: keyRows }), { minLength: 0, maxLength: 6 }),
  { minLength: nq, maxLength: nq },
).map((perQuery): AttentionMask => maskFromRanges(perQuery.map((cuts) => {
  const s = [...cuts].sort((a, b) => a - b);
  const rs: Array<[number, number]> = [];
  for (let i = 0; i + 1 < s.length; i += 2) rs.push([s[i], s[i + 1]]);
  return rs;
})));

test('attention rows are bit-identical alone and inside a batch, for random multi-range masks', () => {
  const nHeads = 2, headDim = 4, D = nHeads * headDim;
  fc.assert(fc.property(
    fc.integer({ min: 1, max: 8 }).chain((nq) => fc.integer({ min: 1, max: 12 }).chain((keyRows) =>
      fc.tuple(fc.constant(nq), fc.constant(keyRows), maskArb(nq, keyRows), fc.nat(nq - 1), fc.integer({ min: 0, max: 1e9 })))),
    ([nq, keyRows, mask, qi, seed]) => {
      const rng = new Rng(seed);
      const q = f32(randn(rng, nq * D)), k = f32(randn(rng, keyRows * D)), v = f32(randn(rng, keyRows * D));
      const out = new Float32Array(nq * D), lse = new Float32Array(nq * nHeads);
      const scale = 1 / Math.sqrt(headDim);
      B.attention({ nq, nHeads, headDim, q, qStride: D, k, kStride: D, v, vStride: D, out, outStride: D, lse, mask, scale });
      const a = mask.rowPtr[qi], b = mask.rowPtr[qi + 1];
      const one: AttentionMask = { rowPtr: Int32Array.from([0, b - a]), ranges: mask.ranges.slice(2 * a, 2 * b) };
      const o1 = new Float32Array(D), l1 = new Float32Array(nHeads);
      B.attention({ nq: 1, nHeads, headDim, q: q.subarray(qi * D, qi * D + D), qStride: D, k, kStride: D, v, vStride: D,
        out: o1, outStride: D, lse: l1, mask: one, scale });
      assert.ok(bitEqual(out.subarray(qi * D, qi * D + D), o1), 'attention out');
      assert.ok(bitEqual(lse.subarray(qi * nHeads, qi * nHeads + nHeads), l1), 'attention lse');
      if (b === a) assert.ok(o1.every((e) => e === 0) && l1.every((e) => e === -Infinity), 'empty query');
    },
  ), { numRuns: 150 });
});
