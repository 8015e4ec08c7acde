import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NoiseStream, streamKey, uniformAt } from '../../src/decode/noise.ts';
import {
  CDF_BLOCK, MASK_LOGIT, TokenCounts, applyFrequencyPenalty, argmax, inverseCdf, laneSum, recommendedPenalty, sampleAr,
  sampleSoftmax, selectPflm, softmax64, topPFilter,
} from '../../src/decode/sampling.ts';

test('noise: uniforms are in (0,1), positional, seeded and stream-separated', () => {
  const a = new NoiseStream(7, 0);
  const xs = a.take(2000);
  for (const u of xs) assert.ok(u > 0 && u < 1);
  const mean = xs.reduce((s, u) => s + u, 0) / xs.length;
  assert.ok(Math.abs(mean - 0.5) < 0.03, `mean ${mean}`);
  assert.deepEqual(new NoiseStream(7, 0).take(2000), xs);
  // Position t always gives the same uniform, however the stream was consumed.
  const b = new NoiseStream(7, 0, 1500);
  assert.equal(b.next(), xs[1500]);
  assert.equal(uniformAt(streamKey(7, 0), 3), xs[3]);
  assert.notDeepEqual(new NoiseStream(7, 1).take(10), xs.slice(0, 10));
  assert.notDeepEqual(new NoiseStream(8, 0).take(10), xs.slice(0, 10));
  // Seeds above 2^32 are not truncated to their low word.
  assert.notDeepEqual(new NoiseStream(7 + 2 ** 32).take(5), xs.slice(0, 5));
  assert.throws(() => new NoiseStream(-1), /seed/);
  assert.throws(() => new NoiseStream(1.5), /seed/);
});

test('softmax64 matches a hand computation and rejects NaN', () => {
  const p = softmax64([0, Math.log(2), Math.log(5)]);
  assert.ok(Math.abs(p[0] - 0.125) < 1e-15 && Math.abs(p[1] - 0.25) < 1e-15 && Math.abs(p[2] - 0.625) < 1e-15);
  const pt = softmax64([0, 2 * Math.log(3)], 2); // temperature 2: weights 1 and 3
  assert.ok(Math.abs(pt[0] - 0.25) < 1e-15 && Math.abs(pt[1] - 0.75) < 1e-15);
  assert.throws(() => softmax64([0, NaN]), /NaN/);
  assert.throws(() => softmax64([0, 1], 0), /temperature/);
});

test('inverseCdf takes the smallest index whose cumulative mass reaches u', () => {
  const p = [0.25, 0.5, 0.25];
  assert.equal(inverseCdf(p, 0.25), 0);
  assert.equal(inverseCdf(p, 0.2500001), 1);
  assert.equal(inverseCdf(p, 0.75), 1);
  assert.equal(inverseCdf(p, 0.76), 2);
  assert.equal(inverseCdf(p, 1), 2);
  assert.equal(inverseCdf([0, 1, 0], 1e-12), 1); // zero-mass tokens are never picked
  assert.equal(inverseCdf([0.3, 0.3, 0.3], 0.95), 2); // rounding short of 1: clamped to V - 1
  assert.throws(() => inverseCdf(p, 0), /uniform/);
});

test('topPFilter keeps the smallest most-probable set reaching p and renormalises', () => {
  const p = new Float64Array([0.1, 0.4, 0.2, 0.3]);
  topPFilter(p, 0.6); // 0.4 + 0.3 = 0.7 >= 0.6
  assert.deepEqual(Array.from(p, (x) => Math.round(x * 1e12) / 1e12), [0, 0.4 / 0.7, 0, 0.3 / 0.7].map((x) => Math.round(x * 1e12) / 1e12));
  const q = new Float64Array([0.25, 0.25, 0.5]);
  topPFilter(q, 0.6); // ties broken by lower index: 0.5 then token 0
  assert.deepEqual(Array.from(q), [1 / 3, 0, 2 / 3]);
  const r = new Float64Array([0.5, 0.5]);
  topPFilter(r, 1);
  assert.deepEqual(Array.from(r), [0.5, 0.5]);
  assert.throws(() => topPFilter(r, 0), /topP/);
});

test('argmax picks the first maximum', () => {
  assert.equal(argmax([1, 3, 3, 2]), 1);
  assert.equal(argmax([9, 1, 3, 3, 2], 1, 4), 1);
});

test('sampleAr: mask suppressed, penalty applied, temperature 0 greedy, else inverse CDF', () => {
  const opts = { temperature: 1, topP: 1, penalty: 0, maskIndex: 3 };
  const logits = () => new Float32Array([0, Math.log(3), 0, 50]);
  // mask (index 3) would dominate; after suppression the distribution is [0.2, 0.6, 0.2].
  assert.equal(sampleAr(logits(), 0.19, null, opts), 0);
  assert.equal(sampleAr(logits(), 0.5, null, opts), 1);
  assert.equal(sampleAr(logits(), 0.81, null, opts), 2);
  assert.equal(sampleAr(logits(), 0.81, null, { ...opts, temperature: 0 }), 1);
  const l = logits();
  sampleAr(l, 0.5, null, opts);
  assert.equal(l[3], MASK_LOGIT);
  const c = new TokenCounts(4);
  c.add(1);
  c.add(1);
  // penalty 1 with count 2: logit of token 1 becomes log 3 - 2 < 0, so greedy picks token 0.
  assert.equal(sampleAr(logits(), 0.5, c, { ...opts, temperature: 0, penalty: 1 }), 0);
});

test('selectPflm: sequential penalty within the block counts earlier slots', () => {
  const V = 4;
  // Slot logits: slot 0 prefers token 0; slot 1 prefers token 0 by 0.1 over token 1; slot 2 the same.
  const rows = new Float32Array([
    1, 0.5, 0, -5,
    1, 0.9, 0, -5,
    1, 0.9, 0.85, -5,
  ]);
  assert.deepEqual(selectPflm(rows.slice(), V, new TokenCounts(V), 0, 3), [0, 0, 0]);
  // lambda 0.2: slot 0 -> 0 (count 1); slot 1: 1 - 0.2 = 0.8 < 0.9 -> 1; slot 2: 0.8 vs 0.7 vs 0.85 -> 2.
  const c = new TokenCounts(V);
  assert.deepEqual(selectPflm(rows.slice(), V, c, 0.2, 3), [0, 1, 2]);
  assert.deepEqual([c.get(0), c.get(1), c.get(2)], [1, 1, 1]);
  // Counts from earlier blocks count too: token 0 seen 3 times already, lambda 0.2 -> 1 - 0.6 = 0.4 < 0.5.
  const prior = new TokenCounts(V);
  for (let i = 0; i < 3; i++) prior.add(0);
  assert.deepEqual(selectPflm(rows.slice(), V, prior, 0.2, 3, 1), [1]);
  // Mask logits are suppressed even when largest.
  assert.deepEqual(selectPflm(new Float32Array([0, 0, 1, 9]), V, new TokenCounts(V), 0, 3), [2]);
  assert.throws(() => selectPflm(new Float32Array(5), V, new TokenCounts(V), 0, 3), /multiple/);
});

test('applyFrequencyPenalty and recommendedPenalty', () => {
  const c = new TokenCounts(3);
  c.add(2);
  c.add(2);
  c.add(0);
  const l = new Float32Array([1, 1, 1]);
  applyFrequencyPenalty(l, c, 0.5);
  assert.deepEqual(Array.from(l), [0.5, 1, 0]);
  assert.deepEqual(c.distinct(), [2, 0]);
  assert.deepEqual([1, 2, 3, 4].map(recommendedPenalty), [0, 0.25, 0.45, 0.5]);
  assert.throws(() => c.add(3), /outside/);
});

test('laneSum adds in 8 lanes, then the tail in order', () => {
  // pairs of lanes meet before the running sum is 1e16 (whose ulp is 2, so a left-to-right sum loses every 1)
  const x = [1e16, 1, 1, 1, 1, 1, 1, -1e16, 3];
  assert.equal(laneSum(x, x.length), 7);
  let serial = 0;
  for (const v of x) serial += v;
  assert.notEqual(serial, 7);
  assert.equal(laneSum([1, 2, 3], 3), 6);
  assert.equal(laneSum([], 0), 0);
});

test('sampleSoftmax on large vocabularies: the token where the cumulative probability crosses u, never a zero-mass one', () => {
  const noise = new NoiseStream(3);
  for (let trial = 0; trial < 60; trial++) {
    const V = [64, 65, 1000, 50258][trial % 4];
    const l = new Float32Array(V).map(() => (trial % 3 === 0 && noise.next() < 0.5 ? -Infinity : (noise.next() - 0.5) * 12));
    l[trial % V] = 0; // at least one finite logit
    const p = softmax64(l, 1);
    const cdf = new Float64Array(V);
    let c = 0;
    for (let v = 0; v < V; v++) cdf[v] = c += p[v];
    for (const u of [noise.next(), 1, 2 ** -53, cdf[Math.floor(noise.next() * V)]]) {
      if (!(u > 0)) continue;
      const t = sampleSoftmax(l, 1, u);
      assert.ok(t >= 0 && t < V);
      assert.ok(p[t] > 0 || t === V - 1, `zero-mass token ${t} picked`);
      // the blocked prefix differs from the serial one by rounding only (~V ulps)
      assert.ok(cdf[t] >= u - 1e-12 && (t === 0 || cdf[t - 1] < u + 1e-12), `token ${t} does not straddle u = ${u}`);
      if (Math.abs(cdf[t] - u) > 1e-12 && (t === 0 || Math.abs(cdf[t - 1] - u) > 1e-12)) assert.equal(t, inverseCdf(p, u));
    }
  }
  // a whole block of zero mass before the token: skipped, not picked
  const l = new Float32Array(3 * CDF_BLOCK).fill(-Infinity);
  l[5] = 0;
  l[2 * CDF_BLOCK + 7] = 0;
  assert.equal(sampleSoftmax(l, 1, 0.5), 5);
  assert.equal(sampleSoftmax(l, 1, 0.75), 2 * CDF_BLOCK + 7);
  assert.equal(sampleSoftmax(l, 1, 1), 2 * CDF_BLOCK + 7);
});

test('sampleSoftmax equals inverseCdf(softmax64) exactly below one block, at every uniform and temperature', () => {
  const noise = new NoiseStream(1);
  for (let trial = 0; trial < 200; trial++) {
    const V = 2 + (trial % 50);
    const l = new Float32Array(V).map(() => (noise.next() - 0.5) * 10);
    const T = 0.3 + noise.next() * 2;
    const u = noise.next();
    assert.equal(sampleSoftmax(l, T, u), inverseCdf(softmax64(l, T), u));
  }
  assert.equal(sampleSoftmax(new Float32Array([0, 0]), 1, 1), 1);
  assert.throws(() => sampleSoftmax(new Float32Array([0, NaN]), 1, 0.5), /NaN/);
});
