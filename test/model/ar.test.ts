import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setBackend, initModel, modelTensors } from '../../src/index.ts';
import { maxRelDiff, referenceCausal, referenceEmbed, TINY, testBackends, tokenRows } from './reference.ts';

const cfg = { ...TINY, maxK: 0 };
const V = cfg.vocabSize;
// std 0.3 gives peaked, position-dependent logits, so mistakes show up as large differences.
const ar = initModel(cfg, 'ar', 7, { std: 0.3 });
const tensors = modelTensors(ar);

for (const [bname, backend] of testBackends()) describe(`model on the ${bname} backend`, () => {
  test('use backend', () => setBackend(backend));

  test('AR logits match the naive float64 reference (RoPE, masks, norms, mask logit)', () => {
    const toks = tokenRows(3, 9, V, 1);
    const got = ar.logits(toks);
    assert.deepEqual(got.shape, [3, 9, V]);
    for (let b = 0; b < 3; b++) {
      const ref = referenceCausal(tensors, cfg, toks[b].map((id) => referenceEmbed(tensors, cfg, id)));
      for (let t = 0; t < 9; t++) {
        const row = got.data.subarray((b * 9 + t) * V, (b * 9 + t + 1) * V);
        assert.equal(row[cfg.maskIndex], -1000);
        assert.ok(maxRelDiff(row, ref[t]) < 1e-5, `b ${b} t ${t}: ${maxRelDiff(row, ref[t])}`);
      }
    }
  });

  test('logProbs = log_softmax(logits / T) with the mask logit set first', () => {
    const toks = tokenRows(2, 5, V, 2);
    const lg = ar.logits(toks).data;
    for (const temp of [1, 0.7, 2.5]) {
      const lp = ar.logProbs(toks, temp).data;
      for (let r = 0; r < 10; r++) {
        const z = Array.from(lg.subarray(r * V, (r + 1) * V), (x) => x / temp);
        const mx = Math.max(...z);
        const lse = mx + Math.log(z.reduce((s, x) => s + Math.exp(x - mx), 0));
        for (let v = 0; v < V; v++) assert.ok(Math.abs(lp[r * V + v] - (z[v] - lse)) < 1e-6 * Math.max(1, Math.abs(lse - z[v])));
        let p = 0;
        for (let v = 0; v < V; v++) p += Math.exp(lp[r * V + v]);
        assert.ok(Math.abs(p - 1) < 1e-5);
      }
    }
    assert.throws(() => ar.logProbs(toks, 0), /temperature/);
  });

  test('rows are independent: a row alone equals the same row inside a batch (bitwise)', () => {
    const toks = tokenRows(5, 7, V, 3);
    const all = ar.logits(toks).data;
    for (let b = 0; b < 5; b++) {
      const one = ar.logits([toks[b]]).data;
      assert.deepEqual(one, all.subarray(b * 7 * V, (b + 1) * 7 * V));
    }
  });

  test('cached session decode equals the full forward, ragged prefixes and uneven appends', () => {
    const full = tokenRows(3, 12, V, 4);
    const prefixLens = [1, 4, 7];
    const s = ar.session(full.map((r, b) => r.slice(0, prefixLens[b])));
    const pos = prefixLens.slice();
    const fullLogits = full.map((r) => ar.logits([r]).data);
    const appendPlan = [[1, 2, 0], [3, 1, 2], [2, 0, 1], [1, 2, 2]];
    for (const plan of appendPlan) {
      const got = s.next();
      assert.deepEqual(got.shape, [3, V]);
      for (let b = 0; b < 3; b++) {
        const want = fullLogits[b].subarray((pos[b] - 1) * V, pos[b] * V);
        assert.ok(maxRelDiff(got.data.subarray(b * V, (b + 1) * V), want) < 1e-6, `row ${b} at ${pos[b]}`);
      }
      s.append(plan.map((n, b) => full[b].slice(pos[b], pos[b] + n)));
      plan.forEach((n, b) => { pos[b] += n; });
    }
    s.close();
    assert.throws(() => s.next(), /closed/);
  });

  test('decoder: continuous batching with join/leave and arena compaction keeps results exact', () => {
    const dec = ar.decoder();
    const seqs = tokenRows(6, 30, V, 5);
    const want = seqs.map((r) => ar.logits([r]).data);
    const live = new Map<number, { b: number; n: number }>();
    const open = (b: number, n: number): void => { live.set(dec.open(seqs[b].slice(0, n)), { b, n }); };
    open(0, 3); open(1, 1); open(2, 10);
    for (let step = 0; step < 25; step++) {
      if (step === 4) open(3, 2);
      if (step === 9) { const [id] = [...live.keys()]; dec.close(id); live.delete(id); open(4, 5); }
      if (step === 15) open(5, 20);
      const ids = [...live.keys()].filter((id) => live.get(id)!.n < 30);
      if (ids.length === 0) break;
      const out = dec.step(ids);
      ids.forEach((id, i) => {
        const st = live.get(id)!;
        assert.equal(dec.length(id), st.n);
        assert.ok(maxRelDiff(out[i], want[st.b].subarray((st.n - 1) * V, st.n * V)) < 1e-6, `seq ${st.b} len ${st.n}`);
        if (st.n < 30) { dec.append(id, [seqs[st.b][st.n]]); st.n++; }
      });
    }
    assert.throws(() => dec.step([999]), /unknown/);
  });

  test('input validation names the argument', () => {
    assert.throws(() => ar.logits([[1, 2], [3]]), /ragged/);
    assert.throws(() => ar.logits([[1, V]]), /tokens\[0\]\[1\] = 37/);
    assert.throws(() => ar.logits([]), /B = 0/);
    assert.throws(() => ar.logits([[1, -1]]), /token id/);
    assert.throws(() => ar.session([[]]), /empty/);
    const s = ar.session([[1]]);
    assert.throws(() => s.append([[1], [2]]), /one row per sequence/);
    assert.throws(() => ar.decoder().step([]), /non-empty/);
  });
});
