import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { AdamW, clipScale, decayMaskExcept, gradNorm, learningRate } from '../../src/tensor/optim.ts';
import { tsBackend } from '../../src/tensor/ts-backend.ts';
import { withChecks } from '../../src/tensor/checked.ts';
import { bitEqual } from './util.ts';

const backend = withChecks(tsBackend);

function near(actual: ArrayLike<number>, expected: number[], tol: number, what: string): void {
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= tol, `${what}[${i}] = ${actual[i]}, expected ${expected[i]}`);
  }
}

test('AdamW two steps match a hand-computed reference, with weight decay and a decay mask', () => {
  // lr 0.1, betas (0.9, 0.999), eps 1e-8, weight decay 0.01; parameter 1 is excluded from decay.
  // Element 0, step 1: m = 0.05, v = 2.5e-4, mhat = 0.5, vhat = 0.25, p = 1 - 0.1 * (0.5 / (0.5 + 1e-8) + 0.01 * 1)
  //   = 0.899000002. Step 2 (g = -0.25): m = 0.02, v = 3.1225e-4, mhat = 0.02 / 0.19, vhat = 3.1225e-4 / 0.001999,
  //   p = 0.899000002 - 0.1 * (mhat / (sqrt(vhat) + 1e-8) + 0.01 * 0.899000002) = 0.8714672987058464.
  // Element 1 (no decay): -2 - 0.1 * 0.001 / (0.001 + 1e-8) = -2.09999900001, then -2.191776701547776.
  // Element 2 (zero gradient): only decay acts, p = 0.3 * (1 - 0.001)^t.
  const params = Float32Array.from([1, -2, 0.3]);
  const grads = Float32Array.from([0.5, 0.001, 0]);
  const opt = new AdamW(params, grads, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01,
    decayMask: Uint8Array.from([1, 0, 1]), backend });
  opt.step(0.1);
  near(params, [0.899000002, -2.09999900001, 0.2997], 1e-6, 'after step 1');
  near(opt.m, [0.05, 1e-4, 0], 1e-8, 'm after step 1');
  near(opt.v, [2.5e-4, 1e-9, 0], 1e-10, 'v after step 1');
  grads.set([-0.25, 0.003, 0]);
  opt.step(0.1);
  near(params, [0.8714672987058464, -2.191776701547776, 0.2994003], 1e-6, 'after step 2');
  assert.equal(opt.t, 2);
});

test('clipGradNorm returns the pre-clip norm and scales only the next step', () => {
  const params = new Float32Array(2), grads = Float32Array.from([3, 4]);
  const opt = new AdamW(params, grads, { backend });
  assert.equal(opt.clipGradNorm(1), 5);
  opt.step(0.01);
  near(opt.m, [0.1 * 3 * 0.2, 0.1 * 4 * 0.2], 1e-7, 'm with clipping to norm 1');
  assert.equal(grads[0], 3); // gradients themselves are untouched
  opt.step(0.01); // no clipGradNorm call: scale back to 1
  near(opt.m, [0.9 * 0.06 + 0.1 * 3, 0.9 * 0.08 + 0.1 * 4], 1e-6, 'm after unclipped step');
  assert.equal(opt.clipGradNorm(10), 5); // within the limit: scale 1
  const m0 = opt.m[0];
  opt.step(0.01);
  assert.ok(Math.abs(opt.m[0] - (0.9 * m0 + 0.1 * 3)) < 1e-6);
  grads[1] = NaN;
  assert.ok(Number.isNaN(opt.clipGradNorm(1)));
  assert.equal(gradNorm(Float32Array.from([1, 2, 2]), backend), 3);
  assert.equal(clipScale(5, 1), 0.2);
  assert.equal(clipScale(0.5, 1), 1);
  assert.throws(() => clipScale(1, 0), /clipScale: maxNorm must be > 0/);
});

test('state() / load() resumes training bit-exactly', () => {
  fc.assert(fc.property(fc.array(fc.float({ min: -2, max: 2, noNaN: true }), { minLength: 1, maxLength: 20 }), (g0) => {
    const n = g0.length;
    const gradsAt = (t: number) => Float32Array.from(g0, (g, i) => g * Math.cos(t + i));
    const pA = new Float32Array(n).fill(0.5), gA = new Float32Array(n);
    const a = new AdamW(pA, gA, { weightDecay: 0.1, backend });
    gA.set(gradsAt(1)); a.clipGradNorm(1); a.step(1e-2);
    const saved = a.state();
    const savedParams = pA.slice();
    for (let t = 2; t <= 4; t++) { gA.set(gradsAt(t)); a.clipGradNorm(1); a.step(1e-2); }
    const pB = savedParams, gB = new Float32Array(n);
    const b = new AdamW(pB, gB, { weightDecay: 0.1, backend });
    b.load(saved);
    assert.equal(b.t, 1);
    for (let t = 2; t <= 4; t++) { gB.set(gradsAt(t)); b.clipGradNorm(1); b.step(1e-2); }
    assert.ok(bitEqual(pA, pB) && bitEqual(a.m, b.m) && bitEqual(a.v, b.v));
  }), { numRuns: 50 });
  // state() is a copy, not a live view.
  const opt = new AdamW(new Float32Array(1), Float32Array.from([1]), { backend });
  const s = opt.state();
  opt.step(0.1);
  assert.equal(s.m[0], 0);
  assert.equal(s.step, 0);
});

test('AdamW rejects mismatched buffers and bad states', () => {
  assert.throws(() => new AdamW(new Float32Array(3), new Float32Array(2), { backend }), /AdamW: grads has 2 elements, params has 3/);
  assert.throws(() => new AdamW(new Float32Array(3), new Float32Array(3), { decayMask: new Uint8Array(2), backend }),
    /AdamW: decayMask has 2 elements/);
  const opt = new AdamW(new Float32Array(3), new Float32Array(3), { backend });
  assert.throws(() => opt.load({ m: new Float32Array(2), v: new Float32Array(3), step: 1 }), /AdamW.load: state has m 2/);
  assert.throws(() => opt.load({ m: new Float32Array(3), v: new Float32Array(3), step: -1 }), /AdamW.load: step/);
  assert.throws(() => opt.step(NaN), /AdamW.step: lr must be a finite number/);
});

test('decayMaskExcept zeroes the listed ranges', () => {
  assert.deepEqual(Array.from(decayMaskExcept(6, [[0, 2], [4, 5]])), [0, 0, 1, 1, 0, 1]);
  assert.throws(() => decayMaskExcept(6, [[5, 7]]), /decayMaskExcept: range \[5, 7\) is not within \[0, 6\)/);
});

test('learning rate: linear warm-up, cosine to the floor, floor afterwards', () => {
  const s = { peak: 1e-3, warmup: 10, total: 110, floor: 1e-4 };
  assert.equal(learningRate(1, s), 1e-4);
  assert.equal(learningRate(5, s), 5e-4);
  assert.equal(learningRate(10, s), 1e-3);
  assert.ok(Math.abs(learningRate(60, s) - 5.5e-4) < 1e-15); // cosine midpoint = (peak + floor) / 2
  assert.equal(learningRate(110, s), 1e-4);
  assert.equal(learningRate(1000, s), 1e-4);
  let prev = Infinity;
  for (let t = 10; t <= 110; t++) {
    const lr = learningRate(t, s);
    assert.ok(lr <= prev && lr >= s.floor);
    prev = lr;
  }
  assert.equal(learningRate(3, { peak: 2, warmup: 0, total: 0, floor: 2 }), 2);
  assert.throws(() => learningRate(0, s), /learningRate: step must be an integer >= 1/);
  assert.throws(() => learningRate(1, { ...s, floor: 1 }), /learningRate: invalid schedule/);
});
