// Finite-difference checks of the full model gradients in float64 (TypeScript backend): AR next-token loss and the
// staircase distillation loss, sampled over every parameter tensor (token embedding, every block tensor, output
// layer, noise encoder).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { arLossAndGrad, initModel, stairLossAndGrad, distillationLoss } from '../../src/index.ts';
import type { BaseModel } from '../../src/model/core.ts';
import { checkGradient } from '../../src/tensor/gradcheck.ts';
import { TINY, tokenRows, uniforms } from './reference.ts';

/** A few indices of every tensor (first, last and some in between). */
function sampleIndices(m: BaseModel<Float64Array>, perTensor: number, used?: Set<number>): number[] {
  const out: number[] = [];
  for (const e of m.layout.entries) {
    for (let j = 0; j < perTensor; j++) {
      const i = e.offset + Math.floor(((j + 0.5) / perTensor) * e.size);
      if (!used || used.has(i)) out.push(i);
    }
  }
  return out;
}

test('AR loss gradient matches central differences (float64), mask targets ignored', () => {
  const cfg = { ...TINY, maxK: 0 };
  const m = initModel(cfg, 'ar', 11, { dtype: 'float64', std: 0.3 });
  const B = 2, T = 6;
  const rows = tokenRows(B, T, cfg.vocabSize, 9, cfg.maskIndex);
  rows[1][3] = cfg.maskIndex; // one ignored target
  const tokens = Int32Array.from(rows.flat());
  const grads = m.newGrads();
  const { loss, count } = arLossAndGrad(m, tokens, B, T, grads);
  assert.equal(count, B * (T - 1) - 1);
  assert.ok(loss > 0 && Number.isFinite(loss));
  const f = (): number => arLossAndGrad(m, tokens, B, T, null).loss;
  // Embedding rows of tokens that never occur have a zero gradient; sample all tensors anyway (zeros must match).
  const r = checkGradient('AR loss', f, m.params, grads, { indices: sampleIndices(m, 7), tol: 1e-6 });
  assert.ok(r.checked > 100);
  // Gradient accumulation: a second call adds the same gradient again.
  const g2 = Float64Array.from(grads);
  arLossAndGrad(m, tokens, B, T, g2);
  for (let i = 0; i < g2.length; i += 97) assert.ok(Math.abs(g2[i] - 2 * grads[i]) <= 1e-12 * Math.max(1, Math.abs(grads[i])));
});

test('distillation (staircase) loss gradient matches central differences (float64), k = 3', () => {
  const m = initModel(TINY, 'pflm', 12, { dtype: 'float64', std: 0.3 });
  const B = 2, N = 4, k = 3, V = TINY.vocabSize;
  const context = Int32Array.from(tokenRows(B, N, V, 10).flat());
  const noise = Float64Array.from(uniforms(B * N * k, 3));
  const tau = Float64Array.from([1, 0.8]);
  const targets = Int32Array.from(tokenRows(1, B * N * k, V, 11)[0]);
  targets[4] = TINY.maskIndex;
  targets[5] = TINY.maskIndex;
  const grads = m.newGrads();
  const { loss, perSlot } = stairLossAndGrad(m, context, B, N, noise, tau, targets, grads);
  assert.equal(perSlot.length, k);
  assert.ok(Math.abs(loss - (perSlot[0] + perSlot[1] + perSlot[2]) / 3) < 1e-12);
  const f = (): number => stairLossAndGrad(m, context, B, N, noise, tau, targets, null).loss;
  checkGradient('distillation loss', f, m.params, grads, { indices: sampleIndices(m, 6), tol: 1e-6 });
});

test('public distillationLoss: named gradients, no inv_freq entry, perSlot means over non-[MASK] targets', () => {
  const m = initModel(TINY, 'pflm', 13, { std: 0.3 });
  const B = 2, N = 3, k = 2, V = TINY.vocabSize;
  const context = tokenRows(B, N, V, 1);
  const u = uniforms(B * N * k, 5);
  const noise = Array.from({ length: B }, (_, b) => Array.from({ length: N }, (_, t) => u.slice((b * N + t) * k, (b * N + t + 1) * k)));
  const flatT = tokenRows(1, B * N * k, V, 2, TINY.maskIndex)[0];
  const targets = Array.from({ length: B }, (_, b) => Array.from({ length: N }, (_, t) => flatT.slice((b * N + t) * k, (b * N + t + 1) * k)));
  targets[0][0][1] = TINY.maskIndex;
  const res = distillationLoss(m, context, noise, [1, 1], targets);
  assert.ok(!res.grads.has('rotary_emb.inv_freq'));
  assert.deepEqual(res.grads.get('blocks.1.attn_qkv.weight')!.shape, [48, 16]);
  assert.equal(res.grads.size, m.layout.entries.length);
  // Slot means from stairLogits by hand.
  const lg = m.stairLogits(context, noise, [1, 1]).data;
  const slotSum = [0, 0], slotN = [0, 0];
  for (let b = 0; b < B; b++) for (let t = 0; t < N; t++) for (let a = 0; a < k; a++) {
    const tg = targets[b][t][a];
    if (tg === TINY.maskIndex) continue;
    const o = ((b * N + t) * k + a) * V;
    const row = Array.from(lg.subarray(o, o + V));
    const mx = Math.max(...row);
    const lse = mx + Math.log(row.reduce((s, x) => s + Math.exp(x - mx), 0));
    slotSum[a] += lse - row[tg];
    slotN[a]++;
  }
  assert.equal(slotN[1], B * N - 1);
  for (let a = 0; a < k; a++) assert.ok(Math.abs(res.perSlot[a] - slotSum[a] / slotN[a]) < 1e-5);
  assert.ok(Math.abs(res.loss - (res.perSlot[0] + res.perSlot[1]) / 2) < 1e-6);
  assert.throws(() => distillationLoss(m, context, noise, [1, 1], targets.slice(0, 1)), /targets/);
});
