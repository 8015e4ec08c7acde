import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bestRates, DEFAULT_INT8_RATIO, paramCounts, predictRun, predictSpeedup, stepCost, stepMemoryBound, stepSeconds } from '../../src/eval/roofline.ts';
import type { ModelConfig } from '../../src/model/types.ts';
import { SCREEN_MAX_ROWS } from '../../src/decode/screen.ts';

const tiny: ModelConfig = { vocabSize: 3, hiddenSize: 2, nHeads: 1, nBlocks: 1, maskIndex: 2, maxK: 4, maxSeqLen: 16 };
const official: ModelConfig = { vocabSize: 50258, hiddenSize: 768, nHeads: 12, nBlocks: 12, maskIndex: 50257, maxK: 4, maxSeqLen: 1024 };

test('parameter counts by hand and for the official architecture', () => {
  const p = paramCounts(tiny);
  assert.equal(p.block, 12 * 4 + 7 * 2);
  assert.equal(p.output, 3 * 2 + 3 + 2);
  assert.equal(p.noiseEncoder, 10 * 4 + 8 * 2);
  const o = paramCounts(official);
  // 12 blocks of 7.08 M plus the 38.6 M output layer: the ~123 M weights (494 MB fp32) a decode step streams.
  assert.equal(o.blocks + o.output, 12 * (12 * 768 * 768 + 7 * 768) + 50258 * 768 + 50258 + 768);
  assert.ok(Math.abs((o.blocks + o.output) * 4 / 1e6 - 494) < 2);
});

test('one AR step by hand', () => {
  const c = stepCost(tiny, { batch: 1, newContext: 1, cached: 5, noise: 0, outRows: 1 });
  assert.equal(c.weightBytes, (62 + 11 + 2) * 4);
  assert.equal(c.kvBytes, 6 * 2 * 2 * 4);
  assert.equal(c.bytes, 300 + 96 + 16 + 24);
  assert.equal(c.flops, 96 + 48 + 12);
  assert.equal(c.rows, 1);
  assert.deepEqual(c.phases, [
    { name: 'blocks', bytes: (62 + 2) * 4, flops: 96 },
    { name: 'output', bytes: 11 * 4, flops: 12 },
    { name: 'attention', bytes: 96 + 16, flops: 48 },
    { name: 'logits', bytes: 24, flops: 0 },
  ]);
  // all phases on one side of the ridge: the bound is the whole step's bytes or FLOPs
  assert.ok(Math.abs(stepSeconds(c, { bandwidth: 436, flops: 1e9 }) - 1) < 1e-6);
  assert.ok(Math.abs(stepSeconds(c, { bandwidth: 1e12, flops: 78 }) - 2) < 1e-6);
  // mixed: attention memory light but compute bound like the matmuls (96 / 48, 12 / 48, 48 / 48), the logits memory
  // bound (24 / 256); the phases run one after another, so their bounds add: more than max(436 / 256, 156 / 48) = 3.25
  const mixed = { bandwidth: 256, flops: 48 };
  assert.equal(stepSeconds(c, mixed), 96 / 48 + 12 / 48 + 48 / 48 + 24 / 256);
  assert.equal(stepMemoryBound(c, mixed), false);
  assert.equal(stepMemoryBound(c, { bandwidth: 436, flops: 1e9 }), true);
});

test('one PFLM step by hand: 2k rows, noise encoder, output layer on the noise rows', () => {
  const c = stepCost(tiny, { batch: 2, newContext: 2, cached: 3, noise: 2, outRows: 2 });
  assert.equal(c.rows, 8);
  // the noise encoder (56 weights) is read once per pass, and a pass encodes the noise of floor(32 / 4) = 8 steps
  assert.equal(c.weightBytes, (62 + 11 + 56 / 8 + 2 * 2 * 2) * 4);
  // one block, so it is the last: the 4 context rows only get their QKV projection (3 D^2 of the 12 D^2) and no
  // attention; the 4 noise rows get everything and see 5 + 1 and 5 + 2 keys
  assert.equal(c.flops, 2 * 4 * 48 + 2 * 4 * 12 + 2 * 4 * 2 * (6 + 7) + 2 * 4 * 2 * 3 + 2 * 2 * 2 * 40);
  assert.equal(c.kvBytes, 2 * 5 * 2 * 2 * 4);
  assert.deepEqual(c.phases.map((p) => p.name), ['blocks', 'output', 'noiseEncoder', 'attention', 'logits']);
  assert.equal(c.phases.reduce((a, p) => a + p.bytes, 0), c.bytes);
  assert.equal(c.phases.reduce((a, p) => a + p.flops, 0), c.flops);
  assert.equal(c.phases[2].bytes, (56 * 4) / 8);
  assert.equal(c.phases[2].flops, 2 * 2 * 2 * 40);
  // a step of 32 noise rows or more encodes only its own: the whole read every step
  const wide = stepCost(tiny, { batch: 8, newContext: 4, cached: 3, noise: 4, outRows: 4 });
  assert.equal(wide.phases[2].bytes, 56 * 4);
  assert.equal(stepCost(tiny, { batch: 3, newContext: 4, cached: 3, noise: 4, outRows: 4 }).phases[2].bytes, (56 * 4) / 2);
});

test('a PFLM step with the screened output layer reads int8 output weights and does half the output FLOPs', () => {
  const shape = { batch: 2, newContext: 2, cached: 3, noise: 2, outRows: 2 };
  const plain = stepCost(tiny, shape), screened = stepCost(tiny, shape, 4, true);
  // fp32 output layer (3 x 2 weights, 3 biases, 2 norm weights) -> int8 weights + fp32 biases, norm and 4 per row
  assert.equal(plain.weightBytes - screened.weightBytes, 11 * 4 - (3 * 2 + (3 + 2) * 4 + 3 * 16));
  assert.equal(plain.flops - screened.flops, (2 * 4 * 2 * 3) / 2); // 4 output rows, half of 2 * rows * D * V
  // AR steps have no screen, nor PFLM steps of more than SCREEN_MAX_ROWS noise rows (they take the fp32 layer)
  const ar = { batch: 1, newContext: 1, cached: 5, noise: 0, outRows: 1 };
  assert.deepEqual(stepCost(tiny, ar, 4, true), stepCost(tiny, ar));
  const wide = { batch: Math.floor(SCREEN_MAX_ROWS / 4) + 1, newContext: 4, cached: 5, noise: 4, outRows: 4 };
  assert.deepEqual(stepCost(tiny, wide, 4, true), stepCost(tiny, wide));
  // at the int8 / fp32 instruction rate ratio of the host: 1 / (2 ratio) FLOPs per multiply-add (0.5 when not given)
  const out = plain.flops - (2 * 4 * 2 * 3); // everything but the output layer
  assert.equal(stepCost(tiny, shape, 4, true, 1).flops - out, (2 * 4 * 2 * 3) / 4);
  assert.equal(stepCost(tiny, shape, 4, true, 0.25).flops - out, 2 * 4 * 2 * 3);
  assert.deepEqual(stepCost(tiny, shape, 4, true, DEFAULT_INT8_RATIO), screened);
  assert.throws(() => stepCost(tiny, shape, 4, true, 0), /int8Ratio must be > 0/);
  // official architecture at batch 1: ~115 MB less per step, so the prediction rises above the plain one
  const m = { bandwidth: 45e9, flops: 190e9 };
  const shape1 = { batch: 1, promptLength: 6, newTokens: 122 };
  const gain = predictSpeedup(official, shape1, 4, m, 4, true) / predictSpeedup(official, shape1, 4, m);
  assert.ok(gain > 1.25 && gain < 1.35, `screened / plain prediction ${gain}`);
});

test('run predictions: step counts, passes per token, the regimes of the official architecture', () => {
  const m = { bandwidth: 45e9, flops: 190e9 };
  const ar = predictRun(official, { batch: 1, k: 0, promptLength: 6, newTokens: 122 }, m);
  assert.equal(ar.steps, 122);
  assert.equal(ar.passesPerToken, 1);
  assert.ok(ar.memoryBound);
  const pf = predictRun(official, { batch: 1, k: 4, promptLength: 6, newTokens: 122 }, m);
  assert.equal(pf.steps, 31);
  assert.equal(pf.passesPerToken, 31 / 122);
  assert.equal(pf.typicalStep.rows, 8);
  // Batch 1 is bandwidth bound: k = 4 predicts about 4x minus the PFLM's extra activations and noise encoder.
  const s1 = predictSpeedup(official, { batch: 1, promptLength: 6, newTokens: 122 }, 4, m);
  assert.ok(s1 > 3.3 && s1 < 4, `batch 1 speedup ${s1}`);
  // Batch 64 is compute bound: 2k rows per k tokens costs more than AR's 1 row per token.
  const s64 = predictSpeedup(official, { batch: 64, promptLength: 6, newTokens: 122 }, 4, m);
  assert.ok(s64 < 1, `batch 64 speedup ${s64}`);
  // There the matmuls are compute bound and attention over the cache and the logits memory bound; they run one after
  // another, so the step's bound is the sum of both kinds, more than its whole max(bytes, FLOPs).
  const c64 = stepCost(official, { batch: 64, newContext: 1, cached: 60, noise: 0, outRows: 1 });
  const ph = new Map(c64.phases.map((p) => [p.name, p]));
  const want = (ph.get('blocks')!.flops + ph.get('output')!.flops) / m.flops + (ph.get('attention')!.bytes + ph.get('logits')!.bytes) / m.bandwidth;
  assert.ok(Math.abs(stepSeconds(c64, m) - want) < 1e-9 * want);
  assert.ok(stepSeconds(c64, m) > 1.05 * Math.max(c64.bytes / m.bandwidth, c64.flops / m.flops));
  assert.equal(stepMemoryBound(c64, m), false);
  // Long contexts add KV reads that both pay per step, which PFLM amortises over k tokens.
  const long = predictRun(official, { batch: 16, k: 0, promptLength: 6, newTokens: 1018 }, m);
  assert.ok(long.meanBytes > ar.meanBytes * 2);
  assert.throws(() => predictRun(official, { batch: 0, k: 0, promptLength: 6, newTokens: 1 }, m), /batch/);
});

test('predictions take the measured int8 rate; the best of two readings is taken limit by limit', () => {
  // batch 4, k = 4: 16 screened rows, where the output layer's int8 work outweighs its int8 bytes
  const m = { bandwidth: 50e9, flops: 350e9 };
  const shape = { batch: 4, promptLength: 6, newTokens: 122 };
  const half = predictRun(official, { ...shape, k: 4 }, m, 4, true).seconds;
  assert.equal(predictRun(official, { ...shape, k: 4 }, { ...m, int8Ratio: DEFAULT_INT8_RATIO }, 4, true).seconds, half);
  const full = predictRun(official, { ...shape, k: 4 }, { ...m, int8Ratio: 1 }, 4, true).seconds;
  assert.ok(full < half, `${full} < ${half}`);
  assert.ok(predictSpeedup(official, shape, 4, { ...m, int8Ratio: 1 }, 4, true) > predictSpeedup(official, shape, 4, m, 4, true));
  assert.deepEqual(bestRates({ bandwidth: 1, flops: 4 }, { bandwidth: 3, flops: 2, int8Ratio: 0.9 }), { bandwidth: 3, flops: 4, int8Ratio: 0.9 });
  assert.deepEqual(bestRates({ bandwidth: 1, flops: 4, int8Ratio: 1 }, { bandwidth: 3, flops: 2, int8Ratio: 0.5 }), { bandwidth: 3, flops: 4, int8Ratio: 1 });
  assert.deepEqual(bestRates({ bandwidth: 1, flops: 4 }, { bandwidth: 3, flops: 2 }), { bandwidth: 3, flops: 4 });
});
