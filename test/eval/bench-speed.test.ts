import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomPrompts, runSpeedBench, speedChart, speedJson, speedMarkdown } from '../../src/eval/bench-speed.ts';
import { hugePages, packedLinears } from '../../src/tensor/native.ts';
import { randomModels } from '../../src/eval/random-model.ts';
import { predictSpeedup } from '../../src/eval/roofline.ts';
import { screensOutput } from '../../src/decode/screen.ts';
import type { ModelConfig } from '../../src/model/types.ts';

const cfg: ModelConfig = { vocabSize: 40, hiddenSize: 16, nHeads: 2, nBlocks: 1, maskIndex: 39, maxK: 3, maxSeqLen: 64 };

test('runSpeedBench: every (batch, k) measured, AR speedup 1, predictions from the given rates', () => {
  const { ar, pflm } = randomModels(cfg, 1);
  // One reading per batch size; the roofline takes the best bandwidth and the best GEMM rate among them.
  const readings = [{ bandwidth: 10e9, flops: 30e9 }, { bandwidth: 6e9, flops: 50e9 }];
  const rates = { bandwidth: 10e9, flops: 50e9 };
  let calls = 0;
  const r = runSpeedBench({ ar: ar.decoder(), pflm: pflm.decoder(), description: 'test' }, {
    batches: [1, 3], newTokens: 7, measureRates: () => readings[calls++],
  });
  assert.equal(calls, 2);
  assert.deepEqual(r.rates, rates);
  assert.deepEqual(r.rateSamples, readings);
  assert.ok(speedMarkdown(r).includes('best of 2 reading(s)'));
  assert.deepEqual(r.results.map((x) => `${x.batch}/${x.k}`), ['1/0', '1/1', '1/2', '1/3', '3/0', '3/1', '3/2', '3/3']);
  for (const x of r.results) {
    assert.ok(x.tokensPerSecond > 0 && Number.isFinite(x.tokensPerSecond));
    if (x.k === 0) assert.equal(x.speedup, 1);
    // the roofline models the PFLM's output layer as the run used it (screened when the native int8 kernels exist)
    const want = x.k === 0 ? 1 : predictSpeedup(cfg, { batch: x.batch, promptLength: 6, newTokens: 7 }, x.k, rates, 4, r.screenedOutput);
    assert.ok(Math.abs(x.predictedSpeedup - want) < 1e-12);
    assert.equal(x.passesPerToken, x.k === 0 ? 1 : Math.ceil(7 / x.k) / 7);
  }
  assert.equal(r.screenedOutput, screensOutput(pflm.decoder()));
  assert.equal(speedMarkdown(r).includes('output layer is screened'), r.screenedOutput);
  assert.equal(r.hugePages, hugePages());
  assert.ok(speedMarkdown(r).includes(`transparent huge pages ${r.hugePages ? 'on' : 'off'}`));
  assert.equal((speedJson(r) as { hugePages: boolean }).hugePages, r.hugePages);
  assert.equal(r.packedLinears, packedLinears());
  assert.ok(speedMarkdown(r).includes(`packed weights for linears of 9-64 rows ${r.packedLinears ? 'on' : 'off'}`));
  assert.equal((speedJson(r) as { packedLinears: boolean }).packedLinears, r.packedLinears);
  assert.ok(speedMarkdown(r).includes('| 3 | PFLM k=3 |'));
  assert.ok(speedChart(r).includes('k=3 predicted'));
  assert.throws(() => runSpeedBench({ ar: ar.decoder(), pflm: pflm.decoder(), description: 't' }, {
    batches: [1], ks: [4], newTokens: 2, measureRates: () => rates,
  }), /k values value 4/);
});

test('randomPrompts: BOS first, never the mask id, seeded', () => {
  const p = randomPrompts(20, 6, cfg, 3, 5);
  assert.ok(p.every((row) => row.length === 6 && row[0] === 5 && !row.includes(39)));
  assert.deepEqual(randomPrompts(20, 6, cfg, 3, 5), p);
});

test('kforce bench speed --json on a tiny random model: last line is the JSON report', () => {
  const out = mkdtempSync(join(tmpdir(), 'kforce-speed-'));
  const r = spawnSync(process.execPath, ['bin/kforce.js', 'bench', 'speed', '--random-weights', '--blocks', '1', '--hidden', '16',
    '--heads', '2', '--vocab', '50', '--max-k', '2', '--new-tokens', '5', '--batch', '1,2', '--out', out,
    '--results', join(out, 'RESULTS.md'), '--json'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  const json = JSON.parse(lines[lines.length - 1]) as { results: Array<Record<string, number>> };
  assert.equal(json.results.length, 2 * 3);
  for (const x of json.results) {
    for (const key of ['batch', 'k', 'tokensPerSecond', 'speedup', 'predictedSpeedup']) assert.equal(typeof x[key], 'number', key);
  }
  assert.deepEqual(json.results.map((x) => x.k), [0, 1, 2, 0, 1, 2]);
  assert.ok(r.stderr.includes('[bench]'), 'progress goes to stderr');
  const md = readFileSync(join(out, 'RESULTS.md'), 'utf8');
  assert.ok(md.includes('<!-- kforce:speed-random-5:begin -->') && md.includes('Command: `kforce bench speed --random-weights'));
  assert.ok(readFileSync(join(out, 'speed.svg'), 'utf8').startsWith('<svg'));
});

test('kvMemoryEstimate: doubling segments, two decoders, growth slack', async () => {
  const { kvMemoryEstimate } = await import('../../src/eval/bench-speed.ts');
  // 132 rows -> 256-row segments; 12 blocks of K and V rows of 768 floats.
  assert.equal(kvMemoryEstimate({ ...cfg, nBlocks: 12, hiddenSize: 768 }, 64, 132), 4 * 64 * 256 * 12 * 2 * 768 * 4);
  assert.equal(kvMemoryEstimate(cfg, 1, 3), 4 * 16 * 1 * 2 * 16 * 4);
});
