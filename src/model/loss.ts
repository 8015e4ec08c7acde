// Training losses with their gradients: the AR next-token loss (teacher training) and the K-Forcing distillation
// loss (KFORCING.md section 5: mean over the k slots of each slot's mean cross-entropy over the (batch, window)
// pairs whose target is not [MASK]). Flat variants work on typed arrays and the flat gradient buffer (what the
// trainer calls every step); the Map variants are the public API.
import type { FloatArray } from '../tensor/backend.ts';
import { arBackward, arForward } from './ar.ts';
import type { BaseModel } from './core.ts';
import { paramViews } from './params.ts';
import { stairBackward, stairForward } from './pflm.ts';
import type { Tensor } from './types.ts';
import { checkK, noiseCube, targetCube, tauVector, tokenBatch } from './validate.ts';

function checkGrads<T extends FloatArray>(fn: string, m: BaseModel<T>, grads: T | null): void {
  if (grads === null) return;
  if (grads.constructor !== m.params.constructor) {
    throw new Error(`${fn}: grads is a ${grads.constructor.name} but the model's parameters are ${m.params.constructor.name}`);
  }
  if (grads.length !== m.layout.total) throw new Error(`${fn}: grads has ${grads.length} elements, the model has ${m.layout.total} parameters`);
}

/**
 * Next-token cross-entropy of B sequences of T tokens (tokens [B*T]): the model reads tokens 0..T-2 of each row and
 * predicts 1..T-1; the loss is the mean over predicted tokens that are not [MASK] (mask-valued targets are padding).
 * With grads, d(loss)/d(params) is ADDED into grads (zero it first; accumulation serves gradient accumulation).
 */
export function arLossAndGrad<T extends FloatArray>(m: BaseModel<T>, tokens: Int32Array, B: number, T: number,
  grads: T | null): { loss: number; count: number } {
  const fn = 'arLossAndGrad';
  if (m.kind !== 'ar') throw new Error(`${fn}: expected an AR model, got kind '${m.kind}'`);
  if (!Number.isSafeInteger(T) || T < 2) throw new Error(`${fn}: T must be an integer >= 2 (one input and one target), got ${T}`);
  if (tokens.length !== B * T) throw new Error(`${fn}: tokens has ${tokens.length} ids, expected B*T = ${B}*${T}`);
  checkGrads(fn, m, grads);
  const N = T - 1;
  const V = m.V;
  const mask = m.config.maskIndex;
  const inputs = new Int32Array(B * N), targets = new Int32Array(B * N);
  for (let b = 0; b < B; b++) {
    inputs.set(tokens.subarray(b * T, b * T + N), b * N);
    targets.set(tokens.subarray(b * T + 1, b * T + T), b * N);
  }
  let count = 0;
  for (let i = 0; i < targets.length; i++) if (targets[i] !== mask) count++;
  const train = grads !== null && count > 0;
  const tr = arForward(m, inputs, B, N, train);
  const R = B * N;
  const losses = m.ws.get('ce.losses', R);
  const dlogits = train ? m.ws.get('ce.dlogits', R * V) : null;
  const scale = m.ws.get('ce.scale', R);
  scale.fill(count > 0 ? 1 / count : 0);
  m.backend().crossEntropy(losses, dlogits, tr.logits, targets, R, V, mask, scale);
  let sum = 0;
  for (let i = 0; i < R; i++) sum += losses[i];
  if (train) arBackward(m, tr, inputs, dlogits!, paramViews(m.layout, grads!));
  return { loss: count > 0 ? sum / count : 0, count };
}

/**
 * Distillation loss of the staircase pass: context [B*N], noise [B*N*k], tau [B], targets [B*N*k] (window t, slot a
 * predicts token t + a + 1). perSlot[a] = mean CE over windows whose slot-a target is not [MASK] (NaN when there are
 * none); loss = mean of perSlot over the slots that have targets (0 when none has). With grads, the gradient is
 * ADDED into grads.
 */
export function stairLossAndGrad<T extends FloatArray>(m: BaseModel<T>, context: Int32Array, B: number, N: number,
  noise: ArrayLike<number>, tau: ArrayLike<number>, targets: Int32Array, grads: T | null): { loss: number; perSlot: number[] } {
  const fn = 'stairLossAndGrad';
  if (m.kind !== 'pflm') throw new Error(`${fn}: expected a PFLM, got kind '${m.kind}'`);
  if (context.length !== B * N || B * N === 0) throw new Error(`${fn}: context has ${context.length} ids, expected B*N = ${B}*${N} > 0`);
  const k = noise.length / (B * N);
  if (!Number.isInteger(k)) throw new Error(`${fn}: noise has ${noise.length} values, not a multiple of B*N = ${B * N}`);
  checkK(fn, 'noise', k, m.config.maxK);
  if (targets.length !== B * N * k) throw new Error(`${fn}: targets has ${targets.length} ids, expected B*N*k = ${B}*${N}*${k}`);
  checkGrads(fn, m, grads);
  const V = m.V;
  const mask = m.config.maskIndex;
  const counts = new Array<number>(k).fill(0);
  for (let i = 0; i < targets.length; i++) {
    const t = targets[i];
    if (!(Number.isInteger(t) && t >= 0 && t < V)) throw new Error(`${fn}: targets[${i}] = ${t} is not a token id in [0, ${V})`);
    if (t !== mask) counts[i % k]++;
  }
  const active = counts.filter((c) => c > 0).length;
  const train = grads !== null && active > 0;
  const st = stairForward(m, context, B, N, noise, tau, k, train);
  const R = B * N * k;
  const losses = m.ws.get('ce.losses', R);
  const dlogits = train ? m.ws.get('ce.dlogits', R * V) : null;
  const scale = m.ws.get('ce.scale', R);
  for (let i = 0; i < R; i++) {
    const c = counts[i % k];
    scale[i] = c > 0 ? 1 / (active * c) : 0;
  }
  m.backend().crossEntropy(losses, dlogits, st.trace.logits, targets, R, V, mask, scale);
  const sums = new Array<number>(k).fill(0);
  for (let i = 0; i < R; i++) sums[i % k] += losses[i];
  const perSlot = sums.map((s, a) => (counts[a] > 0 ? s / counts[a] : NaN));
  let loss = 0;
  for (let a = 0; a < k; a++) if (counts[a] > 0) loss += perSlot[a] / active;
  if (train) stairBackward(m, st, dlogits!, paramViews(m.layout, grads!));
  return { loss, perSlot };
}

/** Gradients of a flat buffer as named tensors (reference names; inv_freq has none and is absent). */
export function gradTensors<T extends FloatArray>(m: BaseModel<T>, grads: T): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const e of m.layout.entries) {
    const g = grads.subarray(e.offset, e.offset + e.size);
    out.set(e.name, { shape: e.shape.slice(), data: g instanceof Float32Array ? g.slice() : Float32Array.from(g) });
  }
  return out;
}

/** Public distillation loss: context [B][N], noise [B][N][k], tau [B], targets [B][N][k]. */
export function distillationLoss(student: BaseModel<FloatArray>, context: number[][], noise: number[][][], tau: number[],
  targets: number[][][]): { loss: number; perSlot: number[]; grads: Map<string, Tensor> } {
  const fn = 'distillationLoss';
  if (!student || student.kind !== 'pflm') throw new Error(`${fn}: student must be a PFLM`);
  const { B, T: N, flat } = tokenBatch(fn, 'context', context, student.V, { rect: true });
  const { k, flat: nz } = noiseCube(fn, 'noise', noise, B, N);
  checkK(fn, 'noise', k, student.config.maxK);
  const tv = tauVector(fn, 'tau', tau, B);
  const tg = targetCube(fn, 'targets', targets, B, N, k, student.V);
  const grads = student.newGrads();
  const { loss, perSlot } = stairLossAndGrad(student, flat, B, N, nz, tv, tg, grads);
  return { loss, perSlot, grads: gradTensors(student, grads) };
}

/** Public AR next-token loss of rectangular token rows [B][T] with named gradients. */
export function nextTokenLoss(ar: BaseModel<FloatArray>, tokens: number[][]): { loss: number; grads: Map<string, Tensor> } {
  const fn = 'nextTokenLoss';
  if (!ar || ar.kind !== 'ar') throw new Error(`${fn}: expected an AR model`);
  const { B, T, flat } = tokenBatch(fn, 'tokens', tokens, ar.V, { rect: true, minLen: 2 });
  const grads = ar.newGrads();
  const { loss } = arLossAndGrad(ar, flat, B, T, grads);
  return { loss, grads: gradTensors(ar, grads) };
}
