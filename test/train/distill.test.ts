import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildDataset } from '../../src/train/dataset.ts';
import { trainAr } from '../../src/train/train-ar.ts';
import { checkSchedule, distill, distillChain, makeProblem, planStage } from '../../src/train/distill.ts';
import type { DistillOptions } from '../../src/train/distill.ts';
import { JsonlLog } from '../../src/train/progress.ts';
import { loadModelSpec, saveModelFile } from '../../src/train/model-io.ts';
import { initModel } from '../../src/model/factory.ts';
import type { ArModel } from '../../src/model/ar.ts';
import { inverseCdfTargetsFlat } from '../../src/model/targets.ts';
import { Rng } from '../../src/tensor/rng.ts';

let root = '';
let data = '';
let teacher = '';
let ar: ArModel;

before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'kforce-distill-'));
  data = path.join(root, 'data');
  await buildDataset({ sources: ['brown'], out: data, tokenizer: 'bpe:300', maxBytes: 250_000, valFraction: 0.1 });
  const t = await trainAr({
    runDir: path.join(root, 'teacher'), data, preset: 'tiny', quiet: true, model: { hiddenSize: 16, nHeads: 2, nBlocks: 1 },
    optim: { steps: 40, batchSize: 4, seqLen: 16, evalEvery: 40, evalSeqs: 4 },
  });
  teacher = t.runDir;
  ar = (await loadModelSpec(teacher)).model as ArModel;
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

const opts = (run: string, extra: Partial<DistillOptions> = {}): DistillOptions => ({
  runDir: path.join(root, run), data, teacher, preset: 'tiny', quiet: true,
  optim: { steps: 12, batchSize: 3, seqLen: 12, logEvery: 1, evalEvery: 6, evalSeqs: 6, ckptEvery: 4, lr: 2e-3 },
  ...extra,
});

const trainLosses = (run: string): number[] =>
  JsonlLog.read(path.join(root, run, 'log.jsonl')).filter((r) => r.event === 'train').map((r) => r.loss as number);

test('teacher targets do not depend on the batch they are computed in', () => {
  const S = 10;
  const rng = new Rng(5);
  const seqs = Int32Array.from({ length: 3 * S }, () => rng.int(299));
  const noise = Float64Array.from({ length: 3 * S }, () => rng.uniformOpen());
  const all = inverseCdfTargetsFlat(ar, seqs, 3, S, noise, [1, 0.7, 1.3]);
  const mid = inverseCdfTargetsFlat(ar, seqs.subarray(S, 2 * S), 1, S, noise.subarray(S, 2 * S), [0.7]);
  assert.deepEqual(mid, all.subarray(S, 2 * S));
});

test('noise inversion: noise lies in the observed token\'s interval and targets are the data continuation', () => {
  const S = 9, k = 2;
  const rng = new Rng(3);
  const seqs = Int32Array.from({ length: 2 * S }, () => rng.int(299));
  const p = makeProblem(seqs, 2, S, k, 'noise-inversion', ar, ar, new Rng(1), null);
  assert.equal(p.N, S - k);
  for (let b = 0; b < 2; b++) {
    for (let t = 0; t < p.N; t++) {
      for (let a = 0; a < k; a++) {
        const i = (b * p.N + t) * k + a;
        assert.equal(p.targets[i], seqs[b * S + t + a + 1]);
        // Re-derive the token from u with a descending-probability inverse CDF of the teacher.
        const ctx = seqs.subarray(b * S, b * S + t + a + 1);
        const logits = ar.logitsFlat(Int32Array.from(ctx), 1, ctx.length).subarray((ctx.length - 1) * ar.V);
        let mx = -Infinity;
        for (const x of logits) mx = Math.max(mx, x);
        const pr = Array.from(logits, (x, v) => [Math.exp(x - mx), v]);
        const z = pr.reduce((s, [q]) => s + q, 0);
        pr.sort((x, y) => y[0] - x[0] || x[1] - y[1]);
        let c = 0;
        let tok = -1;
        for (const [q, v] of pr) { c += q / z; if (c >= p.noise[i]) { tok = v; break; } }
        assert.equal(tok, p.targets[i], `b ${b} t ${t} a ${a}`);
      }
    }
  }
});

test('stage 1 then self-forcing: per-slot held-out stats; a k=2 student starts exact on slot 1', async () => {
  const [r1, r2] = await distillChain({ ...opts('x'), runPrefix: path.join(root, 'chain'), schedule: [1, 2] });
  assert.equal(r1.k, 1);
  assert.equal(r1.targets, 'inverse-cdf');
  assert.equal(r1.heldOut!.acc.length, 1);
  assert.ok(r1.heldOut!.loss[0] < r1.heldOutStart!.loss[0], `k=1 held-out loss ${r1.heldOutStart!.loss} -> ${r1.heldOut!.loss}`);
  assert.equal(r2.k, 2);
  assert.equal(r2.targets, 'self-forcing');
  // Slot 1 of the student sees only noise 1, exactly like the teacher's pass 1, and starts as a copy of it.
  assert.equal(r2.heldOutStart!.acc[0], 1);
  assert.equal(r2.heldOut!.acc.length, 2);
  const log = JsonlLog.read(path.join(root, 'chain-k2', 'log.jsonl'));
  const rec = log.find((r) => r.event === 'train')!;
  assert.equal((rec.slotLoss as number[]).length, 2);
  assert.equal((rec.slotAcc as number[]).length, 2);
  const student = await loadModelSpec(r2.model);
  assert.equal(student.model.kind, 'pflm');
  assert.equal(student.model.config.maxK, 2);
  // A finished chain is reused, not retrained.
  const again = await distillChain({ ...opts('x'), runPrefix: path.join(root, 'chain'), schedule: [1, 2] });
  assert.deepEqual(again.map((r) => r.steps), [12, 12]);
});

test('distillation resumes bit-identically (noise RNG and data position restored)', async () => {
  await distill(opts('u'));
  const stopped = await distill(opts('v', { stopAtStep: 5 }));
  assert.equal(stopped.completed, false);
  await distill(opts('v'));
  assert.deepEqual(trainLosses('v'), trainLosses('u'));
  assert.equal(trainLosses('u').length, 12);
});

test('tau conditioning and the noise-inversion baseline run', async () => {
  const t = await distill(opts('tau', { tau: [0.7, 1.3] }));
  assert.equal(t.completed, true);
  const ni = await distill(opts('ni', { targets: 'noise-inversion', k: 2 }));
  assert.equal(ni.targets, 'noise-inversion');
  assert.equal(ni.k, 2);
  await assert.rejects(distill(opts('ni2', { targets: 'noise-inversion', tau: [0.5, 1] })), /tau conditioning is not available/);
});

test('bad input: vocabulary mismatch, k not double, bad schedule, missing teacher - before any work', async () => {
  const other = initModel({ vocabSize: 301, hiddenSize: 16, nHeads: 2, nBlocks: 1, maskIndex: 300, maxK: 0, maxSeqLen: 0 }, 'ar', 1);
  const otherFile = path.join(root, 'other.safetensors');
  await saveModelFile(otherFile, other);
  await assert.rejects(distill(opts('bad1', { teacher: otherFile })), /vocabulary mismatch: teacher .* V = 301/);
  await assert.rejects(distill(opts('bad2', { k: 2 })), /AR teacher distils into k = 1/);
  const pflm = path.join(root, 'chain-k2', 'model.safetensors');
  await assert.rejects(distill(opts('bad3', { teacher: pflm, k: 3 })), /student k must be double its teacher's: .* k = 4, got 3/);
  await assert.rejects(distill(opts('bad4', { teacher: path.join(root, 'nope') })), /teacher not found/);
  await assert.rejects(distill(opts('bad5', { teacher: path.join(root, 'chain-k2'), targets: 'inverse-cdf' })), /need an AR teacher/);
  assert.throws(() => checkSchedule([1, 3]), /double its teacher's, got 1 -> 3/);
  assert.throws(() => checkSchedule([2, 4]), /must start at k = 1/);
  for (const r of ['bad1', 'bad2', 'bad3', 'bad4', 'bad5']) assert.equal(fs.existsSync(path.join(root, r)), false, r);
  assert.throws(() => planStage(ar, { vocabSize: 300, maskId: 12 }, 1, 'auto', 't'), /\[MASK\] 299/);
});
