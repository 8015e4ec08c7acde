import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { withChecks } from '../../src/tensor/checked.ts';
import { tsBackend } from '../../src/tensor/ts-backend.ts';
import type { AttentionArgs, Backend } from '../../src/tensor/backend.ts';
import { Rng } from '../../src/tensor/rng.ts';
import { bitEqual, f32, maskFromRanges, randn, staircaseMask } from './util.ts';

const C = withChecks(tsBackend);

test('passes name, threads and blas through', () => {
  assert.equal(C.name, 'ts');
  assert.equal(C.threads, 1);
  assert.equal(C.blas, 'none (TypeScript)');
});

test('linear: wrong lengths, dtypes and sizes name the op and the shapes', () => {
  const w = new Float32Array(10 * 64);
  assert.throws(() => C.linear(new Float32Array(30), new Float32Array(100), w, null, 3, 64, 10),
    { message: 'linear: x has 100 elements, expected M*K = 3*64 = 192' });
  assert.throws(() => C.linear(new Float32Array(30), new Float32Array(192), new Float32Array(5), null, 3, 64, 10),
    { message: 'linear: w has 5 elements, expected N*K = 10*64 = 640' });
  assert.throws(() => C.linear(new Float32Array(29), new Float32Array(192), w, null, 3, 64, 10),
    /linear: out has 29 elements, expected M\*N = 3\*10 = 30/);
  assert.throws(() => C.linear(new Float32Array(30), new Float32Array(192), w, new Float32Array(9), 3, 64, 10),
    /linear: bias has 9 elements, expected N = 10/);
  assert.throws(() => C.linear(new Float32Array(30), new Float64Array(192) as unknown as Float32Array, w, null, 3, 64, 10),
    /linear: x is a Float64Array but the other float arguments are Float32Array/);
  assert.throws(() => C.linear(new Float32Array(30), new Float32Array(192), w, null, 3.5, 64, 10),
    /linear: M must be an integer >= 0, got 3.5/);
  assert.throws(() => C.linear(new Float32Array(30), [1, 2] as unknown as Float32Array, w, null, 3, 64, 10),
    /linear: x must be a Float32Array or Float64Array, got Array/);
});

test('gemm, layerNorm, gelu, rope, crossEntropy, adamw, sumSquares reject bad arguments', () => {
  const f = (n: number) => new Float32Array(n);
  assert.throws(() => C.gemm(true, false, 2, 3, 4, 1, f(8), f(11), 0, f(6)), /gemm: b \(\[K,N\]\) has 11 elements, expected K\*N = 4\*3 = 12/);
  assert.throws(() => C.gemm(false, false, 2, 3, 4, NaN, f(8), f(12), 0, f(6)), /gemm: alpha must be a finite number/);
  assert.throws(() => C.layerNorm(f(12), f(3), f(3), f(12), f(5), null, 3, 4, 1e-5), /layerNorm: weight has 5 elements, expected D = 4/);
  assert.throws(() => C.layerNorm(f(12), f(3), f(3), f(12), f(4), null, 3, 4, 0), /layerNorm: eps must be a positive/);
  assert.throws(() => C.layerNormBackward(f(12), f(4), f(3), f(12), f(12), f(3), f(3), f(4), 3, 4),
    /layerNormBackward: dbias has 3 elements, expected D = 4/);
  assert.throws(() => C.gelu(f(4), f(4), 4, 'relu' as 'tanh'), /gelu: kind must be 'tanh' or 'exact', got relu/);
  assert.throws(() => C.geluBackward(f(4), f(3), f(4), 4, 'tanh'), /geluBackward: dout has 3 elements, expected n = 4/);
  assert.throws(() => C.rope(f(16), 8, 2, 1, 8, Int32Array.from([0]), f(4), false),
    /rope: positions has 1 elements, expected rows = 2/);
  assert.throws(() => C.rope(f(16), 8, 2, 1, 8, Int32Array.from([0, 1]), f(3), false),
    /rope: invFreq has 3 elements, expected headDim\/2 = 8\/2 = 4/);
  assert.throws(() => C.rope(f(15), 8, 2, 1, 8, Int32Array.from([0, 1]), f(4), false),
    /rope: x \[rows=2, nHeads=1, headDim=8\] has 15 elements, needs at least .* = 16/);
  assert.throws(() => C.rope(f(16), 8, 2, 1, 7, Int32Array.from([0, 1]), f(3), false), /rope: headDim must be even/);
  assert.throws(() => C.crossEntropy(f(2), null, f(10), Int32Array.from([1, 5]), 2, 5, -100, null),
    { message: 'crossEntropy: targets[1] = 5 is outside [0, V = 5) and is not ignoreIndex -100' });
  assert.throws(() => C.crossEntropy(f(2), null, f(10), Int32Array.from([-1, 0]), 2, 5, -100, null), /targets\[0\] = -1/);
  assert.throws(() => C.crossEntropy(f(2), null, f(10), Int32Array.from([0]), 2, 5, -100, null), /crossEntropy: targets has 1 elements/);
  assert.throws(() => C.crossEntropy(f(2), f(9), f(10), Int32Array.from([0, 1]), 2, 5, -100, null), /crossEntropy: dlogits has 9/);
  assert.throws(() => C.sumSquares(new Float64Array(3) as unknown as Float32Array), /sumSquares: g must be a Float32Array, got Float64Array/);
  const opts = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1, gradScale: 1, decayMask: null };
  assert.throws(() => C.adamw(f(4), f(3), f(4), f(4), opts), /adamw: grads has 3 elements, expected params.length = 4/);
  assert.throws(() => C.adamw(f(4), f(4), f(4), f(4), { ...opts, step: 0 }), /adamw: step must be an integer >= 1, got 0/);
  assert.throws(() => C.adamw(f(4), f(4), f(4), f(4), { ...opts, beta2: 1 }), /adamw: beta2 must be in \[0, 1\)/);
  assert.throws(() => C.adamw(f(4), f(4), f(4), f(4), { ...opts, decayMask: new Uint8Array(5) }), /adamw: decayMask has 5 elements/);
});

test('rope with a valid odd number of pairs does not throw', () => {
  // headDim 6 (3 pairs) is legal, and x may carry per-row padding (stride 8 > width 6).
  assert.doesNotThrow(() => C.rope(new Float32Array(16), 8, 2, 1, 6, Int32Array.from([0, 1]), new Float32Array(3), false));
});

function attnArgs(nq: number, keyRows: number, nHeads: number, headDim: number): AttentionArgs {
  const D = nHeads * headDim;
  return {
    nq, nHeads, headDim, q: new Float32Array(nq * D), qStride: D, k: new Float32Array(keyRows * D), kStride: D,
    v: new Float32Array(keyRows * D), vStride: D, out: new Float32Array(nq * D), outStride: D,
    lse: new Float32Array(nq * nHeads), mask: maskFromRanges(Array.from({ length: nq }, (_, i) => [[0, Math.min(i + 1, keyRows)]])),
    scale: 0.5,
  };
}

test('attention: mask structure and buffer sizes are validated', () => {
  const a = attnArgs(3, 4, 2, 4);
  assert.doesNotThrow(() => C.attention(a));
  assert.throws(() => C.attention({ ...a, mask: { rowPtr: Int32Array.from([0, 1, 2]), ranges: a.mask.ranges } }),
    /attention: mask.rowPtr has 3 elements, expected nq\+1 = 3\+1 = 4/);
  assert.throws(() => C.attention({ ...a, mask: { rowPtr: Int32Array.from([0, 2, 1, 3]), ranges: Int32Array.from([0, 1, 2, 3, 0, 1]) } }),
    /attention: mask.rowPtr is not monotone: rowPtr\[1\] = 2 > rowPtr\[2\] = 1/);
  assert.throws(() => C.attention({ ...a, mask: maskFromRanges([[[0, 1]], [[0, 5]], [[0, 1]]]) }),
    /attention: mask range 1 of query 1 is \[0, 5\); ranges must be non-empty within \[0, keyRows = 4\)/);
  assert.throws(() => C.attention({ ...a, mask: maskFromRanges([[[0, 1]], [[2, 3], [0, 1]], [[0, 1]]]) }),
    /attention: mask ranges of query 1 are not ascending and disjoint/);
  assert.throws(() => C.attention({ ...a, mask: maskFromRanges([[[0, 2], [1, 3]], [], []]) }), /not ascending and disjoint/);
  assert.throws(() => C.attention({ ...a, mask: maskFromRanges([[[1, 1]], [], []]) }), /ranges must be non-empty/);
  assert.throws(() => C.attention({ ...a, mask: { rowPtr: Int32Array.from([0, 1, 1, 3]), ranges: Int32Array.from([0, 1, 0, 1]) } }),
    /attention: mask.rowPtr\[3\] = 3 exceeds the number of ranges 2/);
  assert.throws(() => C.attention({ ...a, mask: { rowPtr: Int32Array.from([-1, 0, 0, 0]), ranges: Int32Array.from([0, 1]) } }),
    /attention: mask.rowPtr\[0\] = -1 is outside \[0, 1\]/);
  // A chunk of queries may reference a slice of a larger CSR mask (rowPtr not starting at 0, unused ranges).
  const big = maskFromRanges([[[0, 1]], [[0, 2]], [[0, 3]], [[0, 4]], [[1, 2]]]);
  assert.doesNotThrow(() => C.attention({ ...a, mask: { rowPtr: big.rowPtr.subarray(1, 5), ranges: big.ranges } }));
  assert.throws(() => C.attention({ ...a, lse: new Float32Array(5) }), /attention: lse has 5 elements, expected nq\*nHeads = 3\*2 = 6/);
  assert.throws(() => C.attention({ ...a, q: new Float32Array(20) }), /attention: q \[nq=3, nHeads=2, headDim=4\] has 20 elements/);
  assert.throws(() => C.attention({ ...a, qStride: 7 }), /attention: q .*stride 7 is smaller than the row width/);
  assert.throws(() => C.attention({ ...a, v: new Float64Array(32) as unknown as Float32Array }), /attention: v is a Float64Array/);
  // k holding only 2 rows makes key 2 (query 2's range [0, 3)) out of range.
  assert.throws(() => C.attention({ ...a, k: new Float32Array(16) }), /keyRows = 2/);
  const g = { dout: new Float32Array(24), dq: new Float32Array(24), dk: new Float32Array(32), dv: new Float32Array(32) };
  assert.doesNotThrow(() => C.attentionBackward({ ...a, ...g }));
  assert.throws(() => C.attentionBackward({ ...a, ...g, dk: new Float32Array(24) }), /attentionBackward: dk holds 3 key rows/);
  assert.throws(() => C.attentionBackward({ ...a, ...g, dout: new Float32Array(23) }), /attentionBackward: dout/);
});

test('checked calls give the same bits as unchecked ones (fast-check over shapes)', () => {
  const raw: Backend = tsBackend;
  fc.assert(fc.property(fc.integer({ min: 0, max: 6 }), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 7 }),
    fc.nat(), (M, K, N, seed) => {
      const rng = new Rng(seed);
      const x = f32(randn(rng, M * K)), w = f32(randn(rng, N * K)), b = f32(randn(rng, N));
      const o1 = new Float32Array(M * N), o2 = new Float32Array(M * N);
      raw.linear(o1, x, w, b, M, K, N);
      C.linear(o2, x, w, b, M, K, N);
      assert.ok(bitEqual(o1, o2));
      const c1 = new Float32Array(K * N), c2 = new Float32Array(K * N);
      raw.gemm(true, false, K, N, M, 1, x, o1, 0, c1);
      C.gemm(true, false, K, N, M, 1, x, o1, 0, c2);
      assert.ok(bitEqual(c1, c2));
    }), { numRuns: 100 });
  // The staircase mask with strided packed qkv passes validation.
  const nCtx = 3, k = 2, n = nCtx + nCtx * k, H = 2, Dh = 4, D = H * Dh;
  const qkv = new Float32Array(n * 3 * D);
  assert.doesNotThrow(() => C.attention({
    nq: n, nHeads: H, headDim: Dh, q: qkv.subarray(0, (n - 1) * 3 * D + D), qStride: 3 * D, k: qkv.subarray(D), kStride: 3 * D,
    v: qkv.subarray(2 * D), vStride: 3 * D, out: new Float32Array(n * D), outStride: D, lse: new Float32Array(n * H),
    mask: staircaseMask(nCtx, k), scale: 0.5,
  }));
});
