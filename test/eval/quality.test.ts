// Quality benchmark on model-free decoders: a "perfect" PFLM that computes the teacher's own inverse-CDF rollout
// must reproduce the AR teacher's samples exactly and agree with it in every slot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inverseCdf, softmax64 } from '../../src/decode/sampling.ts';
import {
  pflmFor, qualityCharts, qualityMarkdown, runQualityBench, teacherAgreementAndNll, teacherSlotAgreement,
} from '../../src/eval/bench-quality.ts';
import { generate } from '../../src/decode/generate.ts';
import { logProbAt } from '../../src/eval/metrics.ts';
import { scoreContinuations } from '../../src/eval/score.ts';
import { ToyDecoder } from '../decode/toy-decoder.ts';

const V = 13;

class PerfectPflm extends ToyDecoder {
  private readonly teacher: ToyDecoder;
  constructor(maxK: number) {
    super('pflm', V, maxK);
    this.teacher = new ToyDecoder('ar', V);
  }

  override logitsFor(context: readonly number[], noise: readonly number[] = []): Float32Array {
    const ctx = [...context];
    let y = 0;
    for (const u of noise) {
      y = inverseCdf(softmax64(this.teacher.logitsFor(ctx)), u);
      ctx.push(y);
    }
    const out = new Float32Array(V);
    out[y] = 10;
    out[V - 1] = -1000;
    return out;
  }
}

const prompts = [[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1], [0, 0, 1, 1, 2, 2]];

test('scoreContinuations equals log-softmax of the model at each position', () => {
  const dec = new ToyDecoder('ar', V);
  const conts = [[3, 4, 5], [7], []];
  const nll = scoreContinuations(dec, prompts, conts, { maxBatch: 2 });
  conts.forEach((c, i) => {
    assert.equal(nll[i].length, c.length);
    c.forEach((tok, t) => {
      const want = -logProbAt(dec.logitsFor([...prompts[i], ...c.slice(0, t)]), tok);
      assert.ok(Math.abs(nll[i][t] - want) < 1e-12);
    });
  });
  assert.equal(dec.openCount, 0);
  assert.throws(() => scoreContinuations(new ToyDecoder('pflm', V), prompts, conts), /AR model/);
});

test('a perfect PFLM reproduces the teacher rollout: same samples, agreement 1 in every slot', () => {
  const teacher = new ToyDecoder('ar', V);
  const judge = new ToyDecoder('ar', V, 0, 2); // different logits: an independent scorer
  const r = runQualityBench({ teacher, judge, pflms: [new PerfectPflm(2), new PerfectPflm(4)] }, {
    prompts, newTokens: 10, ks: [1, 2, 4], penalties: 'none', seed: 11,
  });
  assert.deepEqual(r.rows.map((x) => x.label), ['AR teacher', 'PFLM k=1 lambda=0', 'PFLM k=2 lambda=0', 'PFLM k=4 lambda=0']);
  for (let i = 1; i < r.rows.length; i++) {
    assert.deepEqual(r.samples[i], r.samples[0], r.rows[i].label);
    assert.equal(r.rows[i].agreement, 1);
    assert.deepEqual(r.rows[i].slotAgreement, new Array(r.rows[i].k).fill(1));
    assert.equal(r.rows[i].judgePpl, r.rows[0].judgePpl);
    assert.equal(r.rows[i].teacherPpl, r.rows[0].teacherPpl);
  }
  assert.ok(r.rows[0].judgePpl !== r.rows[0].teacherPpl);
  assert.equal(r.rows[0].tokens, 30);
  assert.ok(r.rows[0].entropy > 0 && r.rows[0].entropy <= Math.log(10));
  const md = qualityMarkdown(r);
  assert.equal(md.trim().split('\n').length, 2 + 4);
  assert.ok(md.includes('| AR teacher |'));
  const charts = qualityCharts(r);
  assert.deepEqual(Object.keys(charts).sort(), ['quality-entropy.svg', 'quality-ppl.svg', 'quality-slot-agreement.svg']);
});

test('a PFLM that is not the teacher disagrees, and penalty rows are added for k >= 2', () => {
  const teacher = new ToyDecoder('ar', V);
  const r = runQualityBench({ teacher, judge: teacher, pflms: [new ToyDecoder('pflm', V, 2)] }, { prompts, newTokens: 8, seed: 1 });
  assert.deepEqual(r.rows.map((x) => `${x.k}/${x.penalty}`), ['0/0', '1/0', '2/0', '2/0.25']);
  for (const row of r.rows.slice(1)) assert.ok(row.agreement < 1 && row.agreement >= 0, `${row.label}: ${row.agreement}`);
  // Counts: slot 1 of every block of every sample.
  const a = teacherSlotAgreement(teacher, prompts, r.samples[2], 2, 1, 1);
  assert.deepEqual(a.totals, [12, 12]);
  assert.throws(() => pflmFor([new ToyDecoder('pflm', V, 2)], 3), /no PFLM can generate k = 3/);
  assert.throws(() => runQualityBench({ teacher, judge: teacher, pflms: [new ToyDecoder('pflm', V, 2)] }, { prompts, newTokens: 4, ks: [3] }), /outside/);
});

test('one-pass agreement equals the full-rollout definition; its NLL equals plain scoring', () => {
  const teacher = new ToyDecoder('ar', V, 0, 1.5);
  // A PFLM close to the teacher (so blocks agree for a few slots and then leave) and one unrelated to it.
  for (const student of [new PerfectPflm(4), new ToyDecoder('pflm', V, 4, 1.5)]) {
    for (const k of [1, 2, 3, 4]) {
      const samples = generate(student, prompts, { maxNewTokens: 11, seed: 2, k, penalty: 1.5 }).tokens;
      const fast = teacherAgreementAndNll(teacher, prompts, samples, k, 2, 1, 2);
      const ref = teacherSlotAgreement(teacher, prompts, samples, k, 2, 1);
      assert.deepEqual(fast.agree.matches, ref.matches, `k=${k}`);
      assert.deepEqual(fast.agree.totals, ref.totals, `k=${k}`);
      assert.deepEqual(fast.nll, scoreContinuations(teacher, prompts, samples));
    }
  }
});
