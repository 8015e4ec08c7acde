import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { engineRows, runEngineBench } from '../../src/eval/bench-engine.ts';
import type { ModelConfig } from '../../src/model/types.ts';

const small: ModelConfig = { vocabSize: 64, hiddenSize: 32, nHeads: 2, nBlocks: 2, maskIndex: 63, maxK: 0, maxSeqLen: 32 };

test('runEngineBench on tiny configurations: every figure measured, table and JSON printed, results section written', async () => {
  const lines: string[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'kforce-engine-'));
  const r = await runEngineBench({
    repeats: 1, json: true, results: join(dir, 'RESULTS.md'), commandLine: 'kforce bench engine',
    trainConfig: small, trainBatch: 2, trainSeq: 8, decodeConfig: small, decodePosition: 5, gemmShape: { K: 32, N: 64 },
    print: (l) => lines.push(l),
  });
  for (const v of [r.trainStepSeconds, r.decodeStepMs, r.decodeBoundMs, r.bandwidthGBs, ...Object.values(r.gemmGflops)]) {
    assert.ok(Number.isFinite(v) && v > 0, String(v));
  }
  assert.deepEqual(Object.keys(r.gemmGflops), ['1x32x64', '64x32x64', '512x32x64']);
  // Streamed weights: 2 blocks of 12 D^2 + 7 D plus the output layer V D + V + D, in float32.
  assert.equal(r.decodeWeightBytes, (2 * (12 * 32 * 32 + 7 * 32) + 64 * 32 + 64 + 32) * 4);
  assert.ok(Math.abs(r.decodeBoundMs - (r.decodeWeightBytes / (r.bandwidthGBs * 1e9)) * 1e3) < 1e-9);
  const json = JSON.parse(lines[lines.length - 1]) as Record<string, unknown>;
  for (const key of ['trainStepSeconds', 'gemmGflops', 'decodeStepMs', 'decodeBoundMs']) assert.ok(key in json, key);
  assert.ok(lines[0].includes('train step (s)') && lines[0].includes('decode step (ms)'));
  assert.ok(readFileSync(join(dir, 'RESULTS.md'), 'utf8').includes('<!-- kforce:engine:begin -->'));
});

test('engineRows: percentages and target verdicts', () => {
  const rows = engineRows({
    backend: 'x', trainStepSeconds: 0.3, gemmGflops: { '512x768x3072': 185 }, blasGflops: { '512x768x3072': 190 },
    decodeStepMs: 20, decodeBoundMs: 15, bandwidthGBs: 33, peakGflops: 440, decodeWeightBytes: 494e6, machine: 'm',
  });
  assert.deepEqual(rows[0], ['train step (s)', 0.3, '<= 0.6', '200%', 'yes']);
  assert.equal(rows[1][4], 'yes');
  assert.equal(rows[1][3], '42%'); // 185 of the measured 440 GFLOP/s peak
  assert.equal(rows[1][2], 'peak 440, OpenBLAS 190.0; target >= 170');
  const last = rows[rows.length - 1];
  assert.equal(last[3], '75%');
  assert.equal(last[4], 'yes'); // 20 <= 15 / 0.7 = 21.4
});
