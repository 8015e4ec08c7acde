// Distillation targets (KFORCING.md section 5). All of them are computed from one forward per chunk of whole
// sequences; since every backend forward op is row-invariant, a sequence's targets do not depend on which other
// sequences share its batch or chunk, and nothing here reduces across rows.
import type { FloatArray } from '../tensor/backend.ts';
import { arForward, LOGITS_CHUNK_ELEMENTS } from './ar.ts';
import type { BaseModel } from './core.ts';
import { doubleForward, stairForward } from './pflm.ts';
import { checkK, checkUnit, noiseCube, tauVector, tokenBatch } from './validate.ts';

function requireKind(fn: string, m: BaseModel<FloatArray>, kind: 'ar' | 'pflm'): void {
  if (!m || typeof m !== 'object' || m.kind !== kind) {
    throw new Error(`${fn}: expected ${kind === 'ar' ? 'an AR model' : 'a PFLM'} (kind '${kind}'), got ${m && typeof m === 'object' ? `kind '${String(m.kind)}'` : typeof m}`);
  }
}

/**
 * Inverse-CDF sample of one logits row: p = softmax(logits / tau) in float64, cdf = cumulative sum of p in
 * vocabulary order, result = smallest v with cdf[v] >= u, clamped to V - 1 (u may exceed the rounded total).
 * `scratch` holds at least V float64s.
 */
export function inverseCdfSample(logits: ArrayLike<number>, off: number, V: number, tau: number, u: number,
  scratch: Float64Array): number {
  let mx = -Infinity;
  for (let v = 0; v < V; v++) {
    const z = logits[off + v] / tau;
    scratch[v] = z;
    if (z > mx) mx = z;
  }
  let sum = 0;
  for (let v = 0; v < V; v++) {
    const e = Math.exp(scratch[v] - mx);
    scratch[v] = e;
    sum += e;
  }
  let cdf = 0;
  for (let v = 0; v < V; v++) {
    cdf += scratch[v] / sum;
    if (cdf >= u) return v;
  }
  return V - 1;
}

/** First index of the largest value of logits[off, off + V). */
export function argmaxRow(logits: ArrayLike<number>, off: number, V: number): number {
  let best = 0;
  let bv = -Infinity;
  for (let v = 0; v < V; v++) {
    const x = logits[off + v];
    if (x > bv) {
      bv = x;
      best = v;
    }
  }
  return best;
}

/** Stage-1 targets: for each window t (context position), the teacher's inverse-CDF token at noise[b*N + t].
 * context [B*N], noise [B*N], tau [B]; returns [B*N]. */
export function inverseCdfTargetsFlat<T extends FloatArray>(ar: BaseModel<T>, context: Int32Array, B: number, N: number,
  noise: ArrayLike<number>, tau: ArrayLike<number>): Int32Array {
  const fn = 'inverseCdfTargets';
  requireKind(fn, ar, 'ar');
  const V = ar.V;
  if (context.length !== B * N) throw new Error(`${fn}: context has ${context.length} ids, expected B*N = ${B}*${N}`);
  if (noise.length !== B * N) throw new Error(`${fn}: noise has ${noise.length} values, expected B*N = ${B}*${N}`);
  if (tau.length !== B) throw new Error(`${fn}: tau has ${tau.length} values, expected B = ${B}`);
  const out = new Int32Array(B * N);
  const scratch = new Float64Array(V);
  const per = Math.max(1, Math.floor(LOGITS_CHUNK_ELEMENTS / (N * V)));
  for (let b0 = 0; b0 < B; b0 += per) {
    const nb = Math.min(per, B - b0);
    const logits = arForward(ar, context.subarray(b0 * N, (b0 + nb) * N), nb, N, false).logits;
    for (let i = 0; i < nb * N; i++) {
      const b = b0 + Math.floor(i / N);
      out[b0 * N + i] = inverseCdfSample(logits, i * V, V, tau[b], noise[b0 * N + i], scratch);
    }
  }
  return out;
}

export function inverseCdfTargets(ar: BaseModel<FloatArray>, context: number[][], noise: number[][], tau: number[]): number[][] {
  const fn = 'inverseCdfTargets';
  requireKind(fn, ar, 'ar');
  const { B, T: N, flat } = tokenBatch(fn, 'context', context, ar.V, { rect: true });
  if (!Array.isArray(noise) || noise.length !== B) throw new Error(`${fn}: noise must be an array [B = ${B}][N = ${N}]`);
  const u = new Float64Array(B * N);
  noise.forEach((row, b) => {
    if (!Array.isArray(row) || row.length !== N) throw new Error(`${fn}: noise[${b}] must have N = ${N} values (shape [B, N])`);
    row.forEach((x, t) => { u[b * N + t] = checkUnit(fn, `noise[${b}][${t}]`, x); });
  });
  const tv = tauVector(fn, 'tau', tau, B);
  const res = inverseCdfTargetsFlat(ar, flat, B, N, u, tv);
  return Array.from({ length: B }, (_, b) => Array.from(res.subarray(b * N, (b + 1) * N)));
}

/**
 * Self-forcing targets: noise [B*N*2k] per window (first half, second half). Teacher pass 1 (staircase with the
 * first k noises) -> argmax tokens y_1..y_k; pass 2 (double forward: those tokens, then the second k noises) ->
 * argmax y_{k+1}..y_{2k}. Returns [B*N*2k].
 */
export function selfForcingTargetsFlat<T extends FloatArray>(teacher: BaseModel<T>, context: Int32Array, B: number,
  N: number, noise: ArrayLike<number>, tau: ArrayLike<number>, k: number): Int32Array {
  const fn = 'selfForcingTargets';
  requireKind(fn, teacher, 'pflm');
  checkK(fn, 'noise (half of the 2k values per window)', k, teacher.config.maxK);
  const V = teacher.V;
  const k2 = 2 * k;
  if (context.length !== B * N) throw new Error(`${fn}: context has ${context.length} ids, expected B*N = ${B}*${N}`);
  if (noise.length !== B * N * k2) throw new Error(`${fn}: noise has ${noise.length} values, expected B*N*2k = ${B}*${N}*${k2}`);
  if (tau.length !== B) throw new Error(`${fn}: tau has ${tau.length} values, expected B = ${B}`);
  const out = new Int32Array(B * N * k2);
  const per = Math.max(1, Math.floor(LOGITS_CHUNK_ELEMENTS / (N * k * V)));
  for (let b0 = 0; b0 < B; b0 += per) {
    const nb = Math.min(per, B - b0);
    const W = nb * N;
    const n1 = new Float64Array(W * k), n2 = new Float64Array(W * k);
    for (let w = 0; w < W; w++) {
      for (let a = 0; a < k; a++) {
        n1[w * k + a] = noise[(b0 * N + w) * k2 + a];
        n2[w * k + a] = noise[(b0 * N + w) * k2 + k + a];
      }
    }
    const ctx = context.subarray(b0 * N, (b0 + nb) * N);
    const tv = Array.from({ length: nb }, (_, b) => tau[b0 + b]);
    const l1 = stairForward(teacher, ctx, nb, N, n1, tv, k, false).trace.logits;
    const y1 = new Int32Array(W * k);
    for (let i = 0; i < W * k; i++) y1[i] = argmaxRow(l1, i * V, V);
    const l2 = doubleForward(teacher, ctx, nb, N, y1, n2, tv, k);
    for (let w = 0; w < W; w++) {
      for (let a = 0; a < k; a++) {
        out[(b0 * N + w) * k2 + a] = y1[w * k + a];
        out[(b0 * N + w) * k2 + k + a] = argmaxRow(l2, (w * k + a) * V, V);
      }
    }
  }
  return out;
}

export function selfForcingTargets(teacher: BaseModel<FloatArray>, context: number[][], noise: number[][][],
  tau: number[]): number[][][] {
  const fn = 'selfForcingTargets';
  requireKind(fn, teacher, 'pflm');
  const { B, T: N, flat } = tokenBatch(fn, 'context', context, teacher.V, { rect: true });
  const { k: k2, flat: nz } = noiseCube(fn, 'noise', noise, B, N);
  if (k2 % 2 !== 0) throw new Error(`${fn}: noise has ${k2} values per window; expected an even number 2k`);
  const tv = tauVector(fn, 'tau', tau, B);
  const res = selfForcingTargetsFlat(teacher, flat, B, N, nz, tv, k2 / 2);
  return Array.from({ length: B }, (_, b) => Array.from({ length: N }, (_, t) =>
    Array.from(res.subarray((b * N + t) * k2, (b * N + t + 1) * k2))));
}

/**
 * Noise-inversion intervals: for each position t < T-1 of tokens [B*T], the interval of u that the teacher's
 * inverse CDF maps to the observed token x_{t+1}, with the vocabulary in descending-probability order (softmax of
 * the logits in float64, tau = 1). Ties in probability rank the lower token id first. lower = total probability of
 * the tokens ranked strictly above x_{t+1} (compensated summation, so intervals of all tokens tile [0, 1] to
 * rounding), upper = lower + p(x_{t+1}). Returns [B*(T-1)] each.
 */
export function noiseInversionIntervalsFlat<T extends FloatArray>(ar: BaseModel<T>, tokens: Int32Array, B: number,
  T: number): { lower: Float64Array; upper: Float64Array } {
  const fn = 'noiseInversionIntervals';
  requireKind(fn, ar, 'ar');
  const V = ar.V;
  if (tokens.length !== B * T) throw new Error(`${fn}: tokens has ${tokens.length} ids, expected B*T = ${B}*${T}`);
  const N = T - 1;
  const lower = new Float64Array(B * N), upper = new Float64Array(B * N);
  if (N <= 0) return { lower, upper };
  const ctx = new Int32Array(B * N);
  for (let b = 0; b < B; b++) ctx.set(tokens.subarray(b * T, b * T + N), b * N);
  const p = new Float64Array(V);
  const per = Math.max(1, Math.floor(LOGITS_CHUNK_ELEMENTS / (N * V)));
  for (let b0 = 0; b0 < B; b0 += per) {
    const nb = Math.min(per, B - b0);
    const logits = arForward(ar, ctx.subarray(b0 * N, (b0 + nb) * N), nb, N, false).logits;
    for (let i = 0; i < nb * N; i++) {
      const b = b0 + Math.floor(i / N), t = i % N;
      const x = tokens[b * T + t + 1];
      tokenInterval(logits, i * V, V, x, p, lower, upper, b * N + t);
    }
  }
  return { lower, upper };
}

/** Interval of token x in one logits row (see noiseInversionIntervalsFlat); p is float64 scratch [V]. */
export function tokenInterval(logits: ArrayLike<number>, off: number, V: number, x: number, p: Float64Array,
  lower: Float64Array, upper: Float64Array, at: number): void {
  let mx = -Infinity;
  for (let v = 0; v < V; v++) if (logits[off + v] > mx) mx = logits[off + v];
  let sum = 0;
  for (let v = 0; v < V; v++) {
    const e = Math.exp(logits[off + v] - mx);
    p[v] = e;
    sum += e;
  }
  for (let v = 0; v < V; v++) p[v] /= sum;
  const px = p[x];
  // Neumaier summation: the result is within a few ulps of the exact sum whatever the order.
  let s = 0, c = 0;
  for (let v = 0; v < V; v++) {
    const q = p[v];
    if (q > px || (q === px && v < x)) {
      const t = s + q;
      c += Math.abs(s) >= Math.abs(q) ? (s - t) + q : (q - t) + s;
      s = t;
    }
  }
  lower[at] = s + c;
  upper[at] = lower[at] + px;
}

export function noiseInversionIntervals(ar: BaseModel<FloatArray>, tokens: number[][]): { lower: number[][]; upper: number[][] } {
  const fn = 'noiseInversionIntervals';
  requireKind(fn, ar, 'ar');
  const { B, T, flat } = tokenBatch(fn, 'tokens', tokens, ar.V, { rect: true });
  const { lower, upper } = noiseInversionIntervalsFlat(ar, flat, B, T);
  const N = T - 1;
  const rows = (a: Float64Array): number[][] => Array.from({ length: B }, (_, b) => Array.from(a.subarray(b * N, (b + 1) * N)));
  return { lower: rows(lower), upper: rows(upper) };
}
