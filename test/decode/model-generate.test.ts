// Generation on real (tiny, random-weight) models through their KV-cache decoders.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generate } from '../../src/decode/generate.ts';
import { NoiseStream } from '../../src/decode/noise.ts';
import { inverseCdf, softmax64 } from '../../src/decode/sampling.ts';
import { randomModels } from '../../src/eval/random-model.ts';
import type { ModelConfig } from '../../src/model/types.ts';

const cfg: ModelConfig = { vocabSize: 50, hiddenSize: 32, nHeads: 4, nBlocks: 2, maskIndex: 49, maxK: 4, maxSeqLen: 64 };
// A large init std gives peaked, input-dependent distributions, so wrong context shows up as different tokens.
const { ar, pflm } = randomModels(cfg, 7, 0.5);
const prompts = [[1, 2, 3, 4, 5, 6], [7], [8, 9, 10], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]];

test('the AR model shares the PFLM backbone', () => {
  for (const e of ar.layout.entries) {
    const p = pflm.layout.byName.get(e.name)!;
    assert.equal(p.offset, e.offset, e.name);
  }
  assert.equal(ar.params.buffer, pflm.params.buffer);
});

test('AR: KV-cache generation equals inverse-CDF sampling of full-sequence logits', () => {
  const res = generate(ar.decoder(), prompts, { maxNewTokens: 8, seed: 3 });
  prompts.forEach((p, i) => {
    const noise = new NoiseStream(3, i);
    const seq = [...p];
    for (let t = 0; t < 8; t++) {
      const all = ar.logits([seq]).data;
      const last = all.subarray((seq.length - 1) * cfg.vocabSize, seq.length * cfg.vocabSize);
      seq.push(inverseCdf(softmax64(last), noise.next()));
    }
    assert.deepEqual(res.tokens[i], seq.slice(p.length), `prompt ${i}`);
  });
});

test('AR and PFLM: a ragged batch equals each prompt alone; same seed same tokens', () => {
  for (const [name, model, k] of [['ar', ar, undefined], ['pflm', pflm, 3]] as const) {
    const all = generate(model.decoder(), prompts, { maxNewTokens: 9, seed: 5, k });
    const again = generate(model.decoder(), prompts, { maxNewTokens: 9, seed: 5, k });
    assert.deepEqual(again.tokens, all.tokens, `${name} repeat`);
    prompts.forEach((p, i) => {
      const alone = generate(model.decoder(), [p], { maxNewTokens: 9, seed: 5, streamIds: [i], k });
      assert.deepEqual(alone.tokens[0], all.tokens[i], `${name} prompt ${i}`);
    });
    assert.ok(new Set(all.tokens.map((t) => t.join(','))).size > 1, `${name}: outputs differ between prompts`);
  }
});

test('PFLM: generation equals the model\'s own penalised generate with the same uniforms', () => {
  for (const k of [1, 2, 4]) {
    const lambda = 0.5;
    const mine = generate(pflm.decoder(), prompts, { maxNewTokens: 10, seed: 9, k, penalty: lambda });
    const streams = prompts.map((_, i) => new NoiseStream(9, i));
    const theirs = pflm.generate(prompts, {
      newTokens: 10, k, frequencyPenalty: lambda,
      noise: (step) => streams.map((s) => { s.position = step * k; return s.take(Math.min(k, 10 - step * k)); }),
    });
    prompts.forEach((p, i) => assert.deepEqual(mine.tokens[i], theirs[i].slice(p.length), `k=${k} prompt ${i}`));
  }
});

test('PFLM: noise encoded ahead of its step gives the same tokens, and is reused', () => {
  for (const [batch, k] of [[1, 4], [1, 1], [3, 2]] as const) {
    const ps = prompts.slice(0, batch);
    const ahead = pflm.decoder();
    const on = generate(ahead, ps, { maxNewTokens: 23, seed: 4, k });
    const off = generate(pflm.decoder(), ps, { maxNewTokens: 23, seed: 4, k, encodeAhead: false });
    assert.deepEqual(on.tokens, off.tokens, `batch ${batch} k=${k}`);
    // All but the first step's rows of each 32-row pass come from the rows encoded ahead.
    assert.ok(ahead.stats().noiseRowsReused >= 23 * batch / 2, `batch ${batch} k=${k}: ${ahead.stats().noiseRowsReused} rows reused`);
  }
});
