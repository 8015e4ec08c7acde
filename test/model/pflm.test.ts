import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { doubleForward, initModel, setBackend, modelTensors } from '../../src/index.ts';
import {
  maxRelDiff, referenceCausal, referenceEmbed, referenceNoiseEmbedding, TINY, tokenRows, uniforms,
  testBackends,
} from './reference.ts';

const cfg = TINY; // maxK 4
const V = cfg.vocabSize, D = cfg.hiddenSize;
const pf = initModel(cfg, 'pflm', 21, { std: 0.3 });
const tensors = modelTensors(pf);

function cube(B: number, N: number, k: number, seed: number): number[][][] {
  const u = uniforms(B * N * k, seed);
  return Array.from({ length: B }, (_, b) => Array.from({ length: N }, (_, t) => u.slice((b * N + t) * k, (b * N + t + 1) * k)));
}

for (const [bname, backend] of testBackends()) describe(`model on the ${bname} backend`, () => {
  test('use backend', () => setBackend(backend));

  test('noise embeddings match the float64 reference encoder (phi cos-first, exact GELU, LayerNorm with bias)', () => {
    const noise = [[0, 0.25, 0.999], [0.5, 0.123, 1]];
    const tau = [1, 0.7];
    const got = pf.noiseEmbeddings(noise, tau);
    assert.deepEqual(got.shape, [2, 3, D]);
    for (let b = 0; b < 2; b++) for (let j = 0; j < 3; j++) {
      const ref = referenceNoiseEmbedding(tensors, cfg, noise[b][j], tau[b]);
      assert.ok(maxRelDiff(got.data.subarray((b * 3 + j) * D, (b * 3 + j + 1) * D), ref) < 1e-5);
    }
    assert.throws(() => pf.noiseEmbeddings([[1.5]], [1]), /noise\[0\]\[0\] = 1.5/);
    assert.throws(() => pf.noiseEmbeddings([[0.5]], [0]), /tau\[0\]/);
  });

  test('staircase window t = plain causal forward over context <= t then that window\'s noise (reference and session)', () => {
    const B = 2, N = 5, k = 3;
    const context = tokenRows(B, N, V, 31);
    const noise = cube(B, N, k, 7);
    const tau = [1, 0.9];
    const got = pf.stairLogits(context, noise, tau);
    assert.deepEqual(got.shape, [B, N, k, V]);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < N; t++) {
        const rows = context[b].slice(0, t + 1).map((id) => referenceEmbed(tensors, cfg, id));
        for (let a = 0; a < k; a++) rows.push(referenceNoiseEmbedding(tensors, cfg, noise[b][t][a], tau[b]));
        const ref = referenceCausal(tensors, cfg, rows);
        // Decoder path: prefix = context <= t, one step with the window's noise.
        const s = pf.session([context[b].slice(0, t + 1)]);
        const dec = s.next([noise[b][t]], [tau[b]]);
        for (let a = 0; a < k; a++) {
          const o = ((b * N + t) * k + a) * V;
          const row = got.data.subarray(o, o + V);
          assert.ok(maxRelDiff(row, ref[t + 1 + a]) < 1e-5, `b ${b} t ${t} a ${a}`);
          assert.ok(maxRelDiff(row, dec.data.subarray(a * V, (a + 1) * V)) < 1e-5);
        }
      }
    }
  });

  test('a k = 4 step decoded at k = 2 equals its first two slots; noise K/V stay transient', () => {
    const prefix = tokenRows(3, 6, V, 41).map((r, b) => r.slice(0, 2 + 2 * b));
    const s = pf.session(prefix);
    const n4 = [[0.1, 0.2, 0.3, 0.4], [0.9, 0.8, 0.7, 0.6], [0.5, 0.5, 0.5, 0.5]];
    const l4 = s.next(n4);
    const l2 = s.next(n4.map((r) => r.slice(0, 2)));
    assert.deepEqual(l4.shape, [3, 4, V]);
    for (let b = 0; b < 3; b++) {
      assert.ok(maxRelDiff(l2.data.subarray(b * 2 * V, (b + 1) * 2 * V), l4.data.subarray(b * 4 * V, (b * 4 + 2) * V)) < 1e-6);
    }
    // After appending, the cache holds only context K/V: equals a fresh session over the longer prefix.
    const more = [[3, 4], [5], [6, 7, 8]];
    s.append(more);
    const a = s.next(n4);
    const fresh = pf.session(prefix.map((r, b) => [...r, ...more[b]])).next(n4);
    assert.ok(maxRelDiff(a.data, fresh.data) < 1e-6);
    assert.throws(() => s.next([[0.1, 0.2, 0.3, 0.4, 0.5], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]), /maxK = 4/);
  });

  test('double pass equals the staircase of the sequence extended by the teacher tokens', () => {
    const B = 2, N = 4, k = 2;
    const context = tokenRows(B, N, V, 51);
    const y1 = tokenRows(1, B * N * k, V, 52)[0];
    const n2 = uniforms(B * N * k, 53);
    const tau = [1, 1.3];
    const l2 = doubleForward(pf, Int32Array.from(context.flat()), B, N, Int32Array.from(y1), n2, tau, k).slice();
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < N; t++) {
        const w = (b * N + t) * k;
        const ext = [...context[b].slice(0, t + 1), ...y1.slice(w, w + k)];
        const want = pf.session([ext]).next([n2.slice(w, w + k)], [tau[b]]).data;
        assert.ok(maxRelDiff(l2.subarray(w * V, (w + k) * V), want) < 1e-5, `b ${b} t ${t}`);
      }
    }
  });

  test('generate: deterministic for a fixed noise function, sequential frequency penalty, short last step', () => {
    const prefix = [[1, 2, 3], [4]];
    const noise = (step: number): number[][] => [uniforms(3, 100 + step), uniforms(3, 200 + step)];
    const lambda = 0.5;
    const g1 = pf.generate(prefix, { newTokens: 7, k: 3, frequencyPenalty: lambda, noise });
    const g2 = pf.generate(prefix, { newTokens: 7, k: 3, frequencyPenalty: lambda, noise });
    assert.deepEqual(g1, g2);
    assert.equal(g1[0].length, 10);
    assert.equal(g1[1].length, 8);
    // Re-derive with a session and a hand-written penalised argmax (counts over generated tokens only).
    const s = pf.session(prefix);
    const counts = prefix.map(() => new Map<number, number>());
    const out = prefix.map((r) => r.slice());
    for (let step = 0, done = 0; done < 7; step++) {
      const kk = Math.min(3, 7 - done);
      const lg = s.next(noise(step).map((r) => r.slice(0, kk))).data;
      const add: number[][] = [];
      for (let b = 0; b < 2; b++) {
        add.push([]);
        for (let j = 0; j < kk; j++) {
          let best = -1, bv = -Infinity;
          for (let v = 0; v < V; v++) {
            const sc = lg[(b * kk + j) * V + v] - lambda * (counts[b].get(v) ?? 0);
            if (sc > bv) { bv = sc; best = v; }
          }
          counts[b].set(best, (counts[b].get(best) ?? 0) + 1);
          add[b].push(best);
        }
        out[b].push(...add[b]);
      }
      s.append(add);
      done += kk;
    }
    assert.deepEqual(g1, out);
    // The penalty changes the outcome on this model (otherwise the test above would not exercise it).
    const g0 = pf.generate(prefix, { newTokens: 7, k: 3, frequencyPenalty: 0, noise });
    const big = pf.generate(prefix, { newTokens: 7, k: 3, frequencyPenalty: 50, noise });
    assert.notDeepEqual(g0, big);
    for (const row of big) {
      const gen = row.slice(row === big[0] ? 3 : 1);
      assert.equal(new Set(gen).size, gen.length, 'a huge penalty never repeats a generated token');
    }
    // Seeded default noise is deterministic too.
    assert.deepEqual(pf.generate(prefix, { newTokens: 5, k: 2, seed: 3 }), pf.generate(prefix, { newTokens: 5, k: 2, seed: 3 }));
    assert.throws(() => pf.generate(prefix, { newTokens: 4, k: 5 }), /maxK/);
    assert.throws(() => pf.generate(prefix, { newTokens: 4, k: 2, noise: () => [[0.5]] }), /noise\(0\)/);
  });
});
