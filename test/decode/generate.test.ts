// The generation loop on a model-free decoder (test/decode/toy-decoder.ts): exact token ids against a hand-written
// reference loop, determinism, ragged batches, EOS, budgets, continuous batching and streaming.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generate, type TokenEvent } from '../../src/decode/generate.ts';
import { NoiseStream } from '../../src/decode/noise.ts';
import { softmax64, inverseCdf } from '../../src/decode/sampling.ts';
import { ToyDecoder } from './toy-decoder.ts';

const prompts = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 0], [2, 2]];

test('AR generation equals inverse-CDF sampling of the model with the same uniforms', () => {
  const dec = new ToyDecoder('ar');
  const res = generate(dec, prompts, { maxNewTokens: 9, seed: 42, temperature: 0.8 });
  prompts.forEach((p, i) => {
    const noise = new NoiseStream(42, i);
    const ctx = [...p];
    const want: number[] = [];
    for (let t = 0; t < 9; t++) {
      const probs = softmax64(dec.logitsFor(ctx), 0.8);
      const tok = inverseCdf(probs, noise.next());
      want.push(tok);
      ctx.push(tok);
    }
    assert.deepEqual(res.tokens[i], want, `prompt ${i}`);
  });
  assert.equal(res.steps, 9);
  assert.deepEqual(res.seqSteps, [9, 9, 9, 9]);
  assert.equal(dec.openCount, 0, 'every sequence is closed');
  // Mask (index V-1) never appears.
  for (const row of res.tokens) assert.ok(!row.includes(dec.config.maskIndex));
});

test('same seed, same tokens; another seed, other tokens', () => {
  for (const kind of ['ar', 'pflm'] as const) {
    const a = generate(new ToyDecoder(kind), prompts, { maxNewTokens: 12, seed: 3 });
    const b = generate(new ToyDecoder(kind), prompts, { maxNewTokens: 12, seed: 3 });
    const c = generate(new ToyDecoder(kind), prompts, { maxNewTokens: 12, seed: 4 });
    assert.deepEqual(a.tokens, b.tokens);
    assert.notDeepEqual(a.tokens, c.tokens);
  }
});

test('PFLM: k tokens per step, argmax with sequential penalty, last step keeps k-prime slots', () => {
  const dec = new ToyDecoder('pflm');
  const lambda = 0.7;
  const res = generate(dec, prompts, { maxNewTokens: 10, seed: 9, k: 4, penalty: lambda });
  assert.equal(res.steps, 3); // 4 + 4 + 2
  assert.deepEqual(dec.log.map((r) => r.noise), [[4, 4, 4, 4], [4, 4, 4, 4], [2, 2, 2, 2]]);
  // Step 0 feeds the prompts; later steps feed the k tokens of the previous block.
  assert.deepEqual(dec.log.map((r) => r.pending), [[3, 1, 6, 2], [4, 4, 4, 4], [4, 4, 4, 4]]);
  prompts.forEach((p, i) => {
    const noise = new NoiseStream(9, i);
    const ctx = [...p];
    const counts = new Map<number, number>();
    const want: number[] = [];
    while (want.length < 10) {
      const u = noise.take(Math.min(4, 10 - want.length));
      const block: number[] = [];
      for (let j = 0; j < u.length; j++) {
        const l = dec.logitsFor(ctx, u.slice(0, j + 1));
        let best = 0;
        for (let v = 1; v < l.length; v++) {
          if (l[v] - lambda * (counts.get(v) ?? 0) > l[best] - lambda * (counts.get(best) ?? 0)) best = v;
        }
        counts.set(best, (counts.get(best) ?? 0) + 1);
        block.push(best);
      }
      want.push(...block);
      ctx.push(...block);
    }
    assert.deepEqual(res.tokens[i], want, `prompt ${i}`);
  });
  // PFLM default penalty follows k; k above maxK is refused.
  assert.throws(() => generate(new ToyDecoder('pflm'), prompts, { maxNewTokens: 4, k: 5 }), /k must be/);
  assert.throws(() => generate(new ToyDecoder('ar'), prompts, { maxNewTokens: 4, k: 2 }), /PFLM/);
});

test('ragged prompts in one batch equal each prompt run alone (AR and PFLM)', () => {
  for (const kind of ['ar', 'pflm'] as const) {
    const all = generate(new ToyDecoder(kind), prompts, { maxNewTokens: 11, seed: 5, k: kind === 'pflm' ? 3 : undefined });
    prompts.forEach((p, i) => {
      const alone = generate(new ToyDecoder(kind), [p], {
        maxNewTokens: 11, seed: 5, streamIds: [i], k: kind === 'pflm' ? 3 : undefined,
      });
      assert.deepEqual(alone.tokens[0], all.tokens[i], `${kind} prompt ${i}`);
    });
    // Continuous batching (two at a time) gives the same tokens too.
    const two = generate(new ToyDecoder(kind), prompts, { maxNewTokens: 11, seed: 5, maxBatch: 2, k: kind === 'pflm' ? 3 : undefined });
    assert.deepEqual(two.tokens, all.tokens);
  }
});

test('EOS stops a sequence (EOS excluded) while the others continue; streaming events add up', () => {
  for (const kind of ['ar', 'pflm'] as const) {
    const dec = new ToyDecoder(kind, 5, kind === 'pflm' ? 2 : 0, 1); // small vocabulary, flat logits: EOS comes soon
    const small = prompts.map((p) => p.map((t) => t % 4));
    const free = generate(new ToyDecoder(kind, 5, kind === 'pflm' ? 2 : 0, 1), small, { maxNewTokens: 30, seed: 1, eos: [] });
    const events: TokenEvent[] = [];
    const res = generate(dec, small, { maxNewTokens: 30, seed: 1, eos: [0], onTokens: (e) => events.push(e) });
    let sawEos = false;
    small.forEach((_, i) => {
      const cut = free.tokens[i].indexOf(0);
      if (cut >= 0) {
        sawEos = true;
        assert.equal(res.finish[i], 'eos');
        assert.deepEqual(res.tokens[i], free.tokens[i].slice(0, cut));
      } else {
        assert.equal(res.finish[i], 'length');
        assert.deepEqual(res.tokens[i], free.tokens[i]);
      }
      const mine = events.filter((e) => e.index === i);
      assert.deepEqual(mine.flatMap((e) => e.tokens), res.tokens[i]);
      assert.equal(mine.filter((e) => e.finish).length, 1);
      assert.equal(mine[mine.length - 1].finish, res.finish[i]);
    });
    assert.ok(sawEos, `${kind}: the test needs at least one EOS`);
    assert.equal(dec.openCount, 0);
  }
});

test('bad options are refused with the field named', () => {
  const dec = new ToyDecoder('ar');
  assert.throws(() => generate(dec, prompts, { maxNewTokens: 0 }), /maxNewTokens/);
  assert.throws(() => generate(dec, [[]], { maxNewTokens: 2 }), /prompt 0 is empty/);
  assert.throws(() => generate(dec, prompts, { maxNewTokens: 2, topP: 0 }), /topP/);
  assert.throws(() => generate(dec, prompts, { maxNewTokens: 2, temperature: -1 }), /temperature/);
  assert.throws(() => generate(dec, prompts, { maxNewTokens: 2, streamIds: [0] }), /streamIds/);
  assert.throws(() => generate(dec, prompts, { maxNewTokens: 2, eos: [99] }), /eos/);
});
