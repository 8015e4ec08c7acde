// Bad arguments reach the addon's own checks (the raw native backend, without checked.ts in front) and come back
// as Errors naming the op and the argument, never as a crash or a silent out-of-bounds access.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AttentionArgs } from '../../src/tensor/backend.ts';
import { blasLinear, readBandwidth } from '../../src/tensor/native.ts';
import { causalMask, ints, maskOf, nat, skip } from './helpers.ts';

const f = (n: number) => new Float32Array(n);

test('length mismatches name the op and the buffer', { skip }, () => {
  const b = nat();
  assert.throws(() => b.linear(f(30), f(100), f(640), null, 3, 64, 10), /^Error: linear: x has 100 elements, needs at least 192/);
  assert.throws(() => b.linear(f(29), f(192), f(640), null, 3, 64, 10), /linear: out has 29 elements/);
  assert.throws(() => b.linear(f(30), f(192), f(640), f(9), 3, 64, 10), /linear: bias has 9 elements/);
  assert.throws(() => b.gemm(false, true, 4, 5, 6, 1, f(24), f(29), 0, f(20)), /gemm: b has 29 elements/);
  assert.throws(() => b.layerNorm(f(8), f(2), f(1), f(8), f(4), null, 2, 4, 1e-5), /layerNorm: rstd has 1 elements/);
  assert.throws(() => b.layerNormBackward(f(8), f(3), null, f(8), f(8), f(2), f(2), f(4), 2, 4), /layerNormBackward: dweight/);
  assert.throws(() => b.gelu(f(5), f(4), 5, 'tanh'), /gelu: x has 4 elements/);
  assert.throws(() => b.geluBackward(f(5), f(5), f(5), 6, 'exact'), /geluBackward: dx has 5 elements/);
  assert.throws(() => b.rope(f(10), 8, 2, 1, 8, ints([0, 1]), f(4), false), /rope: x has 10 elements, needs at least 16/);
  assert.throws(() => b.rope(f(16), 8, 2, 1, 8, ints([0]), f(4), false), /rope: positions has 1 elements/);
  assert.throws(() => b.crossEntropy(f(2), null, f(9), ints([0, 1]), 2, 5, -1, null), /crossEntropy: logits has 9 elements/);
  assert.throws(() => b.adamw(f(4), f(4), f(3), f(4), { lr: 1, beta1: 0.9, beta2: 0.9, eps: 1e-8, weightDecay: 0,
    step: 1, gradScale: 1, decayMask: null }), /adamw: m has 3 elements/);
});

test('wrong types, values and overlaps are rejected', { skip }, () => {
  const b = nat();
  assert.throws(() => b.linear(f(4), new Float64Array(4) as unknown as Float32Array, f(4), null, 2, 2, 2),
    /linear: x must be a Float32Array/);
  assert.throws(() => b.linear(f(4), f(4), f(4), null, 2.5, 2, 2), /linear: M must be an integer/);
  const buf = f(8);
  assert.throws(() => b.linear(buf.subarray(0, 4), buf.subarray(2, 6), f(4), null, 2, 2, 2), /linear: out must not overlap/);
  assert.throws(() => b.gelu(f(4), f(4), 4, 'relu' as 'tanh'), /gelu: kind must be 'tanh' or 'exact'/);
  assert.throws(() => b.rope(f(6), 6, 1, 1, 5, ints([0]), f(2), false), /rope: headDim must be even/);
  assert.throws(() => b.crossEntropy(f(2), null, f(10), ints([0, 5]), 2, 5, -1, null),
    /crossEntropy: target 5 at row 1 is outside \[0, 5\)/);
  assert.throws(() => b.adamw(f(4), f(4), f(4), f(4), { lr: 1, beta1: 0.9, beta2: 0.9, eps: 1e-8, weightDecay: 0,
    step: 0, gradScale: 1, decayMask: null }), /adamw: step must be an integer >= 1/);
  assert.throws(() => readBandwidth(f(0), 1), /readBandwidth: needs reps >= 1 and a non-empty buffer/);
  assert.throws(() => blasLinear(f(2), f(2), f(3), 1, 2, 2), /blasLinear: w has 3 elements, needs at least 4/);
});

test('attention rejects masks that leave the key rows or are not ascending', { skip }, () => {
  const b = nat();
  const H = 2, Dh = 4, W = H * Dh, T = 5;
  const base = (): AttentionArgs => ({
    nq: T, nHeads: H, headDim: Dh, q: f(T * W), qStride: W, k: f(T * W), kStride: W, v: f(T * W), vStride: W,
    out: f(T * W), outStride: W, lse: f(T * H), mask: causalMask(T), scale: 0.5,
  });
  assert.doesNotThrow(() => b.attention(base()));
  assert.throws(() => b.attention({ ...base(), mask: maskOf([[[0, 1]], [[0, 2]], [[0, 3]], [[0, 4]], [[0, 6]]]) }),
    /attention: key range \[0, 6\) of query 4 is not ascending, disjoint and within the 5 key rows/);
  assert.throws(() => b.attention({ ...base(), mask: maskOf([[[2, 3], [0, 1]], [], [], [], []]) }),
    /attention: key range \[0, 1\) of query 0/);
  assert.throws(() => b.attention({ ...base(), mask: { rowPtr: ints([0, 1]), ranges: ints([0, 1]) } }),
    /attention: mask.rowPtr has 2 elements, needs nq \+ 1 = 6/);
  assert.throws(() => b.attention({ ...base(), lse: f(3) }), /attention: lse has 3 elements/);
  assert.throws(() => b.attention({ ...base(), qStride: 4 }), /attention: qStride and outStride must be at least/);
  assert.throws(() => b.attentionBackward({ ...base(), dout: f(T * W), dq: f(T * W), dk: f(T * W - 1), dv: f(T * W) }),
    /attentionBackward: key range \[0, 5\) of query 4 is not ascending, disjoint and within the 4 key rows/);
});
