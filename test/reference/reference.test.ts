// The TypeScript models against the independent PyTorch reference (scripts/reference/kforcing_ref.py, fixtures made
// by scripts/reference/make_fixtures.py): dense-mask float32 CPU PyTorch vs packed rows, structured masks and KV
// caches here. Real-valued outputs must agree to a relative error below 1e-4 (max abs difference over max abs
// reference value, [MASK] column checked separately); token outputs must be equal. Every suite runs on each backend
// that loads (TypeScript always, the native addon when built).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  distillationLoss, inverseCdfTargets, loadModel, noiseInversionIntervals, readSafetensors, selfForcingTargets,
  setBackend,
} from '../../src/index.ts';
import type { ArModel, PflmModel, Tensor, BatchDecoder, SeqId } from '../../src/index.ts';
import { tsBackend } from '../../src/tensor/ts-backend.ts';
import { loadNativeBackend } from '../../src/tensor/native.ts';
import { withChecks } from '../../src/tensor/checked.ts';
import type { Backend } from '../../src/tensor/backend.ts';
import { sampleAr, selectPflm, TokenCounts } from '../../src/decode/sampling.ts';

const FIX = 'test/fixtures';
const TOL = 1e-4;

/* eslint-disable @typescript-eslint/no-explicit-any */
const J: any = JSON.parse(readFileSync(join(FIX, 'reference.json'), 'utf-8'));
const R: Map<string, Tensor> = await readSafetensors(join(FIX, 'reference.safetensors'));

function ref(name: string): Tensor {
  const t = R.get(name);
  if (!t) throw new Error(`reference.safetensors has no tensor '${name}'`);
  return t;
}

/** max |got - want| / max |want| over all elements except the [MASK] column (when maskIndex is given), which must
 * be exactly -1000 in logits (`maskLogit`) or agree relatively on its own. */
function relErr(got: ArrayLike<number>, want: Tensor, V?: number, maskIndex?: number, maskLogit = false): number {
  assert.equal(got.length, want.data.length, 'element count');
  let diff = 0, scale = 0, maskWorst = 0;
  for (let i = 0; i < got.length; i++) {
    const w = want.data[i];
    if (V !== undefined && i % V === maskIndex) {
      if (maskLogit) assert.equal(got[i], -1000, `[MASK] logit at ${i}`);
      else maskWorst = Math.max(maskWorst, Math.abs(got[i] - w) / Math.abs(w));
      continue;
    }
    diff = Math.max(diff, Math.abs(got[i] - w));
    scale = Math.max(scale, Math.abs(w));
  }
  return Math.max(diff / Math.max(scale, 1e-30), maskWorst);
}

function close(got: ArrayLike<number>, name: string, V?: number, maskIndex?: number, maskLogit = false): void {
  const e = relErr(got, ref(name), V, maskIndex, maskLogit);
  assert.ok(e < TOL, `${name}: relative error ${e.toExponential(3)} >= ${TOL}`);
}

const backends: Array<[string, Backend]> = [['ts', withChecks(tsBackend)]];
const native = loadNativeBackend();
if (native.backend) backends.push(['native', withChecks(native.backend)]);

const ar = (await loadModel(join(FIX, J.models.ar.file), { maskIndex: J.models.ar.maskIndex })) as ArModel;
const pf = (await loadModel(join(FIX, J.models.pflm.file))) as PflmModel;
const V = ar.V;

test('fixture models load with the reference configs', () => {
  assert.equal(ar.kind, 'ar');
  assert.equal(pf.kind, 'pflm');
  for (const [k, v] of Object.entries(J.models.ar.config)) assert.equal((ar.config as any)[k], v, `ar ${k}`);
  for (const [k, v] of Object.entries(J.models.pflm.config)) assert.equal((pf.config as any)[k], v, `pflm ${k}`);
});

/** Replays a session schedule (open / append / step / close) on a BatchDecoder. */
function replay(dec: BatchDecoder, ops: any[], pflm: boolean): void {
  const ids = new Map<string, SeqId>();
  for (const op of ops) {
    if (op.op === 'open') ids.set(op.seq, dec.open(op.prompt));
    else if (op.op === 'append') dec.append(ids.get(op.seq)!, op.tokens);
    else if (op.op === 'close') dec.close(ids.get(op.seq)!);
    else if (op.op === 'step') {
      const seqIds = op.seqs.map((s: string) => ids.get(s)!);
      const out = pflm ? dec.step(seqIds, { noise: op.noise, tau: op.tau }) : dec.step(seqIds);
      op.outputs.forEach((name: string, i: number) => close(out[i], name, V, dec.config.maskIndex, true));
    } else throw new Error(`unknown session op ${op.op}`);
  }
}

for (const [bname, backend] of backends) {
  describe(`reference outputs (${bname} backend)`, () => {
    test('setup', () => setBackend(backend));

    test('AR logits and log-probs at T = 0.7', () => {
      const toks = J.ar.tokens as number[];
      close(ar.logits([toks]).data, 'ar.logits', V, ar.config.maskIndex, true);
      close(ar.logProbs([toks], J.ar.temperature).data, 'ar.logprobs_t0.7', V, ar.config.maskIndex);
    });

    test('AR continuous-batching session (ragged prompts, joins, leaves)', () => {
      replay(ar.decoder(), J.ar_session.ops, false);
    });

    test('AR generation: inverse-CDF sampling at T = 0.7 driven by the given uniforms', () => {
      const g = J.ar_generate;
      g.prompts.forEach((prompt: number[], b: number) => {
        const dec = ar.decoder();
        const id = dec.open(prompt);
        const out: number[] = [];
        for (let i = 0; i < g.maxNewTokens; i++) {
          const logits = dec.step([id])[0].slice();
          const y = sampleAr(logits, g.noise[b][i], null, { temperature: g.temperature, topP: 1, penalty: 0, maskIndex: ar.config.maskIndex });
          out.push(y);
          dec.append(id, [y]);
        }
        dec.close(id);
        assert.deepEqual(out, g.tokens[b], `prompt ${b}`);
      });
    });

    test('stage-1 inverse-CDF targets (tau 1 and 0.7)', () => {
      for (const s of J.stage1) {
        const got = inverseCdfTargets(ar, [s.data.slice(0, -1)], [s.u], [s.tau]);
        assert.deepEqual(got[0], s.targets, `tau ${s.tau}`);
      }
    });

    test('noise-inversion intervals', () => {
      const { lower, upper } = noiseInversionIntervals(ar, [J.noise_inversion.data]);
      close(lower[0], 'noise_inversion.lower');
      close(upper[0], 'noise_inversion.upper');
    });

    test('noise-encoder embeddings (tau 1 and 0.7)', () => {
      const u = J.noise_embed.u as number[];
      close(pf.noiseEmbeddings([u], [1]).data, 'noise.embed');
      close(pf.noiseEmbeddings([u], [0.7]).data, 'noise.embed_tau0.7');
    });

    test('staircase logits (k = 4; k = 2 at tau 0.7)', () => {
      for (const s of J.stair) close(pf.stairLogits([s.context], [s.noise], [s.tau]).data, s.tensor, V, pf.config.maskIndex, true);
    });

    test('PFLM continuous-batching session (k varies by step, tau per sequence)', () => {
      replay(pf.decoder(), J.pflm_session.ops, true);
    });

    test('PFLM generation with frequency penalty and a short last step (model API and decode-path selection)', () => {
      const g = J.pflm_generate;
      const got = pf.generate(g.prompts, {
        newTokens: g.maxNewTokens, k: g.k, frequencyPenalty: g.lambda, tau: g.tau,
        noise: (step) => g.prompts.map((_: number[], b: number) => g.noise[b][step]),
      });
      got.forEach((row, b) => assert.deepEqual(row.slice(g.prompts[b].length), g.tokens[b], `model.generate prompt ${b}`));
      g.prompts.forEach((prompt: number[], b: number) => {
        const dec = pf.decoder();
        const id = dec.open(prompt);
        const counts = new TokenCounts(V);
        const out: number[] = [];
        for (let step = 0; out.length < g.maxNewTokens; step++) {
          const take = Math.min(g.k, g.maxNewTokens - out.length);
          const logits = dec.step([id], { noise: [g.noise[b][step].slice(0, take)], tau: [g.tau] })[0].slice();
          const ys = selectPflm(logits, V, counts, g.lambda, pf.config.maskIndex, take);
          out.push(...ys);
          dec.append(id, ys);
        }
        dec.close(id);
        assert.deepEqual(out, g.tokens[b], `decode-path selection prompt ${b}`);
      });
    });

    test('self-forcing targets (teacher k = 2 -> 2k = 4: staircase pass + double forward)', () => {
      J.selfforce.forEach((s: any, b: number) => {
        const got = selfForcingTargets(pf, [s.context], [s.noise], [s.tau]);
        assert.deepEqual(got[0], s.targets, `sequence ${b}`);
      });
    });

    test('distillation loss, per-slot losses and every parameter gradient', () => {
      const d = J.distill;
      const res = distillationLoss(pf, d.context, d.noise, d.context.map(() => d.tau), d.targets);
      close([res.loss], 'distill.loss');
      close(res.perSlot, 'distill.perSlot');
      assert.deepEqual([...res.grads.keys()].sort(), [...d.gradients].sort(), 'gradient names (no inv_freq)');
      for (const name of d.gradients) close(res.grads.get(name)!.data, `grad.${name}`);
    });
  });
}
