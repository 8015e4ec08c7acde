// PFLM generation with the screened output layer (src/decode/screen.ts) against the plain step + selectPflmRows
// (KFORCE_SCREEN=0): the same tokens for every k, penalty and batch shape, on peaked and on flat random models.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generate } from '../../src/decode/generate.ts';
import { SCREEN_MAX_ROWS, SCREEN_MIN_BYTES, screensOutput } from '../../src/decode/screen.ts';
import { randomModels } from '../../src/eval/random-model.ts';
import type { ModelConfig } from '../../src/model/types.ts';
import { nativeScreen, SCREEN_META } from '../../src/tensor/native.ts';
import { measureDecodeRates } from '../../src/eval/machine-rates.ts';

const skip = nativeScreen() ? false : 'no native int8 screen kernels: generation takes the plain path only';
const cfg: ModelConfig = { vocabSize: 3001, hiddenSize: 64, nHeads: 4, nBlocks: 2, maskIndex: 3000, maxK: 4, maxSeqLen: 64 };
const prompts = [[1, 2, 3, 4, 5, 6], [7], [8, 9, 10], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]];

function withScreen<T>(on: boolean, f: () => T): T {
  const prev = process.env.KFORCE_SCREEN;
  process.env.KFORCE_SCREEN = on ? '1' : '0';
  try {
    return f();
  } finally {
    if (prev === undefined) delete process.env.KFORCE_SCREEN;
    else process.env.KFORCE_SCREEN = prev;
  }
}

test('screened PFLM generation gives the tokens of the full output layer', { skip }, () => {
  // std 0.5: peaked logits (few candidates); 0.02: nearly flat ones (many candidates per slot).
  for (const std of [0.5, 0.02]) {
    const { pflm } = randomModels(cfg, 11, std);
    assert.ok(withScreen(true, () => screensOutput(pflm.decoder())));
    assert.ok(!withScreen(false, () => screensOutput(pflm.decoder())));
    for (const k of [1, 2, 3, 4]) {
      for (const penalty of [0, 0.5, 2]) {
        const opts = { maxNewTokens: 13, seed: 5, k, penalty, eos: [] };
        // all four prompts (steps of more than SCREEN_MAX_ROWS noise rows for k > 2 take the full layer), and as many
        // as fit one screened step
        const fit = prompts.slice(0, Math.floor(SCREEN_MAX_ROWS / k));
        const plain = withScreen(false, () => generate(pflm.decoder(), prompts, opts));
        const screened = withScreen(true, () => generate(pflm.decoder(), prompts, opts));
        assert.deepEqual(screened.tokens, plain.tokens, `std ${std}, k ${k}, penalty ${penalty}`);
        const fitScreened = withScreen(true, () => generate(pflm.decoder(), fit, opts));
        assert.deepEqual(fitScreened.tokens, plain.tokens.slice(0, fit.length), `std ${std}, k ${k}, penalty ${penalty}, ${fit.length} prompts`);
        // one sequence at a time too (a batch of one takes the same path)
        const alone = withScreen(true, () => generate(pflm.decoder(), prompts.slice(1, 2), { ...opts, streamIds: [1] }));
        assert.deepEqual(alone.tokens[0], plain.tokens[1]);
      }
    }
  }
});

test('by default only output layers that do not fit the cache are screened', { skip }, () => {
  const prev = process.env.KFORCE_SCREEN;
  delete process.env.KFORCE_SCREEN;
  try {
    const small = randomModels(cfg, 1).pflm;
    assert.ok(!screensOutput(small.decoder()), `${cfg.vocabSize} x ${cfg.hiddenSize} stays in cache`);
    const wide: ModelConfig = { vocabSize: 16384, hiddenSize: 512, nHeads: 8, nBlocks: 1, maskIndex: 16383, maxK: 4, maxSeqLen: 32 };
    assert.ok(wide.vocabSize * wide.hiddenSize * 4 >= SCREEN_MIN_BYTES);
    assert.ok(screensOutput(randomModels(wide, 1).pflm.decoder()));
  } finally {
    if (prev !== undefined) process.env.KFORCE_SCREEN = prev;
  }
});

// Counts the decoder's stepHidden calls (the screened path's step) while f runs.
function hiddenSteps<T>(dec: ReturnType<ReturnType<typeof randomModels>['ar']['decoder']>, f: () => T): [T, number] {
  const orig = dec.stepHidden.bind(dec);
  let n = 0;
  dec.stepHidden = (...a: Parameters<typeof orig>) => {
    n++;
    return orig(...a);
  };
  try {
    return [f(), n];
  } finally {
    dec.stepHidden = orig;
  }
}

test('screened greedy AR generation gives the tokens of the full output layer', { skip }, () => {
  const many = Array.from({ length: SCREEN_MAX_ROWS + 2 }, (_, i) => [1 + i, 2 * i + 3]);
  for (const std of [0.5, 0.02]) {
    const { ar } = randomModels(cfg, 13, std);
    assert.ok(withScreen(true, () => screensOutput(ar.decoder())));
    for (const penalty of [0, 0.5, 2]) {
      for (const ps of [prompts, prompts.slice(2, 3), many]) {
        const opts = { maxNewTokens: 11, seed: 3, temperature: 0, penalty, eos: [] };
        const plain = withScreen(false, () => generate(ar.decoder(), ps, opts));
        const dec = ar.decoder();
        const [screened, n] = hiddenSteps(dec, () => withScreen(true, () => generate(dec, ps, opts)));
        assert.deepEqual(screened.tokens, plain.tokens, `std ${std}, penalty ${penalty}, ${ps.length} prompts`);
        // batches of up to SCREEN_MAX_ROWS sequences take the screen for every step, larger ones the full layer
        assert.equal(n, ps.length <= SCREEN_MAX_ROWS ? plain.steps : 0, `${ps.length} prompts`);
      }
    }
    // sampling at a temperature needs every logit: never screened
    const dec = ar.decoder();
    const [, n] = hiddenSteps(dec, () => withScreen(true, () => generate(dec, prompts, { maxNewTokens: 5, seed: 3, eos: [] })));
    assert.equal(n, 0);
  }
});

test('screened greedy AR picks what the plain rule picks on NaN rows', { skip }, () => {
  const { ar } = randomModels(cfg, 17, 0.5);
  ar.w.normFinal[3] = NaN; // finite output weights (the int8 copy is made), NaN hidden rows and logits
  const run = (on: boolean) => withScreen(on, () => generate(ar.decoder(), prompts.slice(0, 2), { maxNewTokens: 4, temperature: 0, eos: [] }));
  const plain = run(false);
  // the rule's answer for a row of NaNs with the [MASK] logit at -1000 (sampleAr's argmax skips NaNs)
  assert.deepEqual(plain.tokens, [[cfg.maskIndex, cfg.maskIndex, cfg.maskIndex, cfg.maskIndex], [cfg.maskIndex, cfg.maskIndex, cfg.maskIndex, cfg.maskIndex]]);
  assert.deepEqual(run(true).tokens, plain.tokens);
});

// The integer pass's sums (screenSelect's isum scratch) for M rows of h: 8-16 rows take the lane-major int8 copy (25-32
// in two passes), others the dot form over the row-interleaved one (KFORCE_SCREEN_LANES=0: always the dot form).
test('the int8 screen gives the same integer sums from both of its weight layouts', { skip }, () => {
  const k = nativeScreen()!;
  // N not a multiple of the 12-row tiles nor of the 4-row groups; K not a multiple of 64 (zero padding in both)
  for (const [N, K] of [[3001, 100], [1213, 64]]) {
    const w = new Float32Array(N * K).map((_, i) => Math.sin(i * 0.7311) * (1 + (i % 7)));
    const wq = new Int8Array(k.bytes(N, K));
    const meta = new Float32Array(SCREEN_META * N);
    assert.ok(k.prepare(w, N, K, wq, meta));
    const sums = (h: Float32Array, M: number, lanes: boolean): Int32Array => {
      const isum = new Int32Array(M * N);
      const prev = process.env.KFORCE_SCREEN_LANES;
      process.env.KFORCE_SCREEN_LANES = lanes ? '1' : '0';
      try {
        // one sequence taking no slots: the integer pass runs, nothing is selected
        k.select(h, M, K, N, wq, meta, w, null, isum, Int32Array.of(0), Int32Array.of(0), [new Int32Array(N)],
          Float64Array.of(0), N - 1, 1, new Int32Array(1));
      } finally {
        if (prev === undefined) delete process.env.KFORCE_SCREEN_LANES;
        else process.env.KFORCE_SCREEN_LANES = prev;
      }
      return isum;
    };
    for (const M of [7, 8, 12, 16, 17, 25, 32, 33]) {
      const h = new Float32Array(M * K).map((_, i) => Math.cos(i * 1.37) * (1 + (i % 5)) - 0.3);
      const both = sums(h, M, true);
      assert.deepEqual(both, sums(h, M, false), `N ${N}, K ${K}, ${M} rows`);
      // and row by row, each row alone through the dot form: a row's sums depend on that row only
      for (const m of [0, M - 1]) {
        assert.deepEqual(both.subarray(m * N, (m + 1) * N), sums(h.subarray(m * K, (m + 1) * K), 1, false), `row ${m} of ${M}`);
      }
      assert.ok(both.some((x) => x !== 0));
    }
  }
});

test('the roofline reads the int8 screen kernels\' instruction rate from this host, and the bench reports it', { skip }, () => {
  const r = nativeScreen()!.int8Ratio();
  // Zen 4 hosts ~0.5, Zen 5 ~1.0; anything far outside means the measurement broke
  assert.ok(r > 0.2 && r < 3, `int8 / fp32 instruction rate ${r}`);
  assert.equal(nativeScreen()!.int8Ratio(), r, 'measured once per process');
  const m = measureDecodeRates(new Float32Array(1), 64);
  assert.equal(m.int8Ratio, r);
});
