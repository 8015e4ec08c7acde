import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  initModel, inverseCdfTargets, noiseInversionIntervals, selfForcingTargets,
} from '../../src/index.ts';
import { TINY, tokenRows, uniforms } from './reference.ts';

const V = TINY.vocabSize;
const ar = initModel({ ...TINY, maxK: 0 }, 'ar', 61, { std: 0.4 });
const teacher = initModel({ ...TINY, maxK: 2 }, 'pflm', 62, { std: 0.4 });

function probs(logits: Float32Array, off: number, tau: number): number[] {
  const z = Array.from(logits.subarray(off, off + V), (x) => x / tau);
  const mx = Math.max(...z);
  const e = z.map((x) => Math.exp(x - mx));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

test('inverse-CDF targets: the chosen token brackets u in the vocabulary-order CDF (logits / tau)', () => {
  const B = 3, N = 6;
  const context = tokenRows(B, N, V, 71);
  const u = uniforms(B * N, 72);
  const noise = Array.from({ length: B }, (_, b) => u.slice(b * N, (b + 1) * N));
  for (const tauV of [1, 0.5, 2]) {
    const tau = [tauV, tauV, tauV];
    const got = inverseCdfTargets(ar, context, noise, tau);
    const lg = ar.logits(context).data;
    for (let b = 0; b < B; b++) for (let t = 0; t < N; t++) {
      const p = probs(lg, (b * N + t) * V, tauV);
      const y = got[b][t];
      let below = 0;
      for (let v = 0; v < y; v++) below += p[v];
      assert.ok(below < noise[b][t] + 1e-12 && noise[b][t] <= below + p[y] + 1e-12, `b ${b} t ${t} tau ${tauV}`);
      assert.ok(p[y] > 0);
      assert.notEqual(y, TINY.maskIndex);
    }
  }
  // Edges: u = 0 picks the first token, u = 1 the last token with probability mass (never beyond V - 1).
  const edge = inverseCdfTargets(ar, [[1, 2]], [[0, 1]], [1]);
  assert.equal(edge[0][0], 0);
  assert.ok(edge[0][1] <= V - 1 && edge[0][1] >= V - 2);
  assert.throws(() => inverseCdfTargets(ar, [[1, 2]], [[0.5]], [1]), /noise\[0\]/);
  assert.throws(() => inverseCdfTargets(teacher, [[1, 2]], [[0.5, 0.5]], [1]), /AR model/);
});

test('targets do not depend on batch shape: a row alone equals the same row in a batch of 5', () => {
  const N = 5;
  const context = tokenRows(5, N, V, 81);
  const u = uniforms(5 * N, 82);
  const noise = Array.from({ length: 5 }, (_, b) => u.slice(b * N, (b + 1) * N));
  const tau = [1, 1, 1, 1, 1];
  const all = inverseCdfTargets(ar, context, noise, tau);
  const cube = (seed: number): number[][][] => {
    const w = uniforms(5 * N * 4, seed);
    return Array.from({ length: 5 }, (_, b) => Array.from({ length: N }, (_, t) => w.slice((b * N + t) * 4, (b * N + t + 1) * 4)));
  };
  const sn = cube(83);
  const sfAll = selfForcingTargets(teacher, context, sn, tau);
  const ivAll = noiseInversionIntervals(ar, context);
  for (let b = 0; b < 5; b++) {
    assert.deepEqual(inverseCdfTargets(ar, [context[b]], [noise[b]], [1])[0], all[b]);
    assert.deepEqual(selfForcingTargets(teacher, [context[b]], [sn[b]], [1])[0], sfAll[b]);
    const iv = noiseInversionIntervals(ar, [context[b]]);
    assert.deepEqual(iv.lower[0], ivAll.lower[b]);
    assert.deepEqual(iv.upper[0], ivAll.upper[b]);
  }
});

test('self-forcing targets equal two decode steps of the teacher (argmax, k then k more tokens)', () => {
  const B = 2, N = 4, k = 2;
  const context = tokenRows(B, N, V, 91);
  const w = uniforms(B * N * 2 * k, 92);
  const noise = Array.from({ length: B }, (_, b) => Array.from({ length: N }, (_, t) => w.slice((b * N + t) * 2 * k, (b * N + t + 1) * 2 * k)));
  const tau = [1, 0.8];
  const got = selfForcingTargets(teacher, context, noise, tau);
  for (let b = 0; b < B; b++) for (let t = 0; t < N; t++) {
    const gen = teacher.generate([context[b].slice(0, t + 1)], {
      newTokens: 2 * k, k, frequencyPenalty: 0, tau: [tau[b]],
      noise: (step) => [noise[b][t].slice(step * k, (step + 1) * k)],
    })[0].slice(t + 1);
    assert.deepEqual(got[b][t], gen, `b ${b} t ${t}`);
  }
  assert.throws(() => selfForcingTargets(teacher, context, noise.map((m) => m.map((r) => r.slice(0, 3))), tau), /even/);
  assert.throws(() => selfForcingTargets(teacher, [[1]], [[[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]], [1]), /maxK = 2/);
});

test('noise-inversion intervals: width = token probability, descending order, all tokens tile [0, 1]', () => {
  const prefix = [5, 9, 2];
  // One row per candidate next token: same context, so position 2's distribution is shared.
  const rows = Array.from({ length: V }, (_, v) => [...prefix, v]);
  const { lower, upper } = noiseInversionIntervals(ar, rows);
  assert.equal(lower.length, V);
  assert.equal(lower[0].length, 3);
  const p = probs(ar.logits([prefix]).data, 2 * V, 1);
  const iv = Array.from({ length: V }, (_, v) => ({ v, lo: lower[v][2], hi: upper[v][2] }));
  for (const { v, lo, hi } of iv) assert.ok(Math.abs(hi - lo - p[v]) < 1e-7, `token ${v}`);
  iv.sort((a, b) => a.lo - b.lo || a.v - b.v);
  assert.ok(Math.abs(iv[0].lo) < 1e-15);
  for (let i = 1; i < V; i++) {
    assert.ok(Math.abs(iv[i].lo - iv[i - 1].hi) < 1e-12, 'contiguous');
    assert.ok(p[iv[i].v] <= p[iv[i - 1].v] + 1e-7, 'descending probability');
  }
  assert.ok(Math.abs(iv[V - 1].hi - 1) < 1e-12);
  // The observed token's earlier positions agree with a direct computation too.
  const pos0 = probs(ar.logits([[5]]).data, 0, 1);
  const above = pos0.filter((q, v) => q > pos0[9] || (q === pos0[9] && v < 9)).reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(lower[0][0] - above) < 1e-7);
  assert.deepEqual(noiseInversionIntervals(ar, [[3]]), { lower: [[]], upper: [[]] });
});
