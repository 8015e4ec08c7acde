import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildDataset } from '../../src/train/dataset.ts';
import { trainAr } from '../../src/train/train-ar.ts';
import type { TrainArOptions } from '../../src/train/train-ar.ts';
import { JsonlLog } from '../../src/train/progress.ts';
import { loadModelSpec } from '../../src/train/model-io.ts';
import { countParams, PRESETS } from '../../src/train/presets.ts';
import { paramLayout } from '../../src/model/params.ts';

let root = '';
let data = '';

before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'kforce-train-'));
  data = path.join(root, 'data');
  await buildDataset({ sources: ['brown'], out: data, tokenizer: 'bpe:320', maxBytes: 300_000, valFraction: 0.1 });
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

const small = (run: string, extra: Partial<TrainArOptions> = {}): TrainArOptions => ({
  runDir: path.join(root, run), data, preset: 'tiny', quiet: true,
  model: { hiddenSize: 16, nHeads: 2, nBlocks: 1 },
  optim: { steps: 24, batchSize: 4, seqLen: 16, logEvery: 1, evalEvery: 8, evalSeqs: 8, ckptEvery: 5 },
  ...extra,
});

const losses = (run: string): number[] =>
  JsonlLog.read(path.join(root, run, 'log.jsonl')).filter((r) => r.event === 'train').map((r) => r.loss as number);

test('same seed and data give identical loss sequences; another seed differs; validation loss falls', async () => {
  const a = await trainAr(small('a'));
  await trainAr(small('b'));
  assert.equal(a.completed, true);
  assert.equal(losses('a').length, 24);
  assert.deepEqual(losses('b'), losses('a'));
  await trainAr(small('c', { seed: 99 }));
  assert.notDeepEqual(losses('c'), losses('a'));
  assert.ok(a.valLossEnd! < a.valLossStart! - 0.3, `val loss ${a.valLossStart} -> ${a.valLossEnd}`);
  assert.ok(Math.abs(a.valLossStart! - Math.log(320)) < 0.3, 'starts near log V');
  // The exported model loads with its tokenizer beside it.
  const m = await loadModelSpec(a.runDir);
  assert.equal(m.model.kind, 'ar');
  assert.equal(m.model.V, 320);
  assert.equal(m.model.config.maskIndex, 319);
  assert.ok(m.tokenizer && fs.existsSync(m.tokenizer));
});

test('a run stopped at step n and resumed continues bit-identically to an uninterrupted one', async () => {
  const first = await trainAr(small('r', { stopAtStep: 11 }));
  assert.equal(first.completed, false);
  assert.equal(first.steps, 11);
  assert.ok(fs.existsSync(path.join(root, 'r', 'ckpt', 'state.json')));
  assert.equal(fs.existsSync(path.join(root, 'r', 'model.safetensors')), false);
  const second = await trainAr(small('r'));
  assert.equal(second.completed, true);
  assert.deepEqual(losses('r'), losses('a'));
  const ma = await loadModelSpec(path.join(root, 'a'));
  const mr = await loadModelSpec(path.join(root, 'r'));
  assert.deepEqual(mr.model.params, ma.model.params);
  assert.equal(second.valLossEnd, (await trainAr(small('a'))).valLossEnd, 'finished run reopens unchanged');
});

test('resuming with different settings is refused; --fresh restarts; steps may be raised', async () => {
  await assert.rejects(trainAr(small('a', { optim: { ...small('a').optim, lr: 0.5 } })), /exists with other settings \(lr/);
  const longer = await trainAr(small('a', { optim: { ...small('a').optim, steps: 30 } }));
  assert.equal(longer.steps, 30);
  assert.equal(losses('a').length, 30);
  const fresh = await trainAr(small('a', { fresh: true }));
  assert.equal(fresh.steps, 24);
  assert.equal(losses('a').length, 24);
});

test('bad input fails before any work', async () => {
  await assert.rejects(trainAr(small('x', { data: path.join(root, 'nope') })), /no token data in/);
  await assert.rejects(trainAr(small('x', { model: { hiddenSize: 18, nHeads: 4, nBlocks: 1 } })), /heads of an even size/);
  await assert.rejects(trainAr(small('x', { optim: { steps: 0 } })), /steps must be an integer >= 1/);
  await assert.rejects(trainAr(small('x', { preset: 'huge' })), /unknown preset 'huge'/);
  await assert.rejects(trainAr(small('x', { optim: { seqLen: 100000 } })), /fewer than one sequence/);
  assert.equal(fs.existsSync(path.join(root, 'x', 'ckpt')), false);
});

test('presets: small is 4-6 M parameters at a 4k vocabulary; judge is larger; the count matches the layout', () => {
  const s = countParams(PRESETS.small.model, 4096);
  assert.ok(s > 4e6 && s < 6e6, `small has ${s}`);
  // The judge is a larger model than the teacher: wider, deeper, and well over 1.5 times the parameters.
  assert.ok(countParams(PRESETS.judge.model, 4096) > 1.5 * s);
  assert.ok(PRESETS.judge.model.hiddenSize > PRESETS.small.model.hiddenSize);
  assert.ok(PRESETS.judge.model.nBlocks > PRESETS.small.model.nBlocks);
  for (const kind of ['ar', 'pflm'] as const) {
    const cfg = { vocabSize: 4096, ...PRESETS.small.model, maskIndex: 4095, maxK: kind === 'ar' ? 0 : 4, maxSeqLen: 128 };
    assert.equal(countParams(PRESETS.small.model, 4096, kind), paramLayout(cfg, kind).total);
  }
});
