// Token selection, written once for every model kind (the models only produce logits). Two rules exist:
//  - AR: temperature sampling as inverse-CDF on a uniform u (softmax in float64, cumulative sum in vocabulary-index
//    order, the smallest v with cdf[v] >= u), optionally restricted to the top-p nucleus; temperature 0 is greedy.
//    The normaliser and the cumulative sum up to the sampled token's block of 64 are summed in 8 lanes (blockSum),
//    not strictly left to right: a serial float64 sum over 50k tokens waits on every add's latency (the native
//    kernel's batch-64 sampling took 4.1-4.3 ms per step with serial sums, 3.4 with lanes; the exponentials are
//    most of the rest). Within the last block the scan is serial, so a zero-probability token is never picked.
//  - PFLM: y_j = argmax(logits_j - lambda * count(token)) per slot, sequentially within the block
//    (KFORCING.md section 6).
// Both apply the same logits processors first (mask suppression, frequency penalty), so every decoding feature
// reaches both kinds. The AR rule equals the teacher targets of KFORCING.md section 5, so an AR rollout and a PFLM
// block driven by the same uniforms are directly comparable.
// sampleArRows / selectPflmRows apply a rule to every row of a decode step at once; with the native backend they run
// the addon's kernels (native/sample.c: same arithmetic, both cores), which give exactly the tokens of the per-row
// functions below.
import { getBackend } from '../tensor/select.ts';
import { nativeSelect, type NativeSelect } from '../tensor/native.ts';

/** The value the [MASK] logit is replaced with in every output (KFORCING.md section 2). */
export const MASK_LOGIT = -1000;

/** Generated-token counts of one sequence (prompt tokens are not counted), for the frequency penalty. */
export class TokenCounts {
  readonly counts: Int32Array;
  private readonly seen: number[] = [];

  constructor(readonly vocabSize: number) {
    this.counts = new Int32Array(vocabSize);
  }

  add(token: number): void {
    if (!(token >= 0 && token < this.vocabSize)) throw new Error(`TokenCounts: token ${token} outside [0, ${this.vocabSize})`);
    if (this.counts[token]++ === 0) this.seen.push(token);
  }

  get(token: number): number {
    return this.counts[token];
  }

  /** Distinct tokens counted so far, in first-seen order. */
  distinct(): readonly number[] {
    return this.seen;
  }
}

// ---- logits processors (in place on one row of logits) ---------------------------------------------------------

/** Replaces the [MASK] logit (never a valid output) with MASK_LOGIT. */
export function suppressMask(logits: Float32Array, maskIndex: number): void {
  if (maskIndex >= 0 && maskIndex < logits.length) logits[maskIndex] = MASK_LOGIT;
}

/**
 * logits[v] -= lambda * count(v), in float32 arithmetic like the model's own penalised argmax (so the two agree to
 * the bit). Only the distinct counted tokens change, so the cost is tiny.
 */
export function applyFrequencyPenalty(logits: Float32Array, counts: TokenCounts, lambda: number): void {
  if (lambda === 0) return;
  const lam = Math.fround(lambda);
  for (const v of counts.distinct()) logits[v] = logits[v] - Math.fround(lam * counts.get(v));
}

// ---- distributions --------------------------------------------------------------------------------------------

/** e[v] = exp(logits[v] / temperature - max) in float64; returns the sum Z (laneSum). The one place both softmax64
 * and sampleSoftmax exponentiate, so their probabilities (e_v * (1 / Z)) are bit-identical. */
function expShifted(logits: ArrayLike<number>, temperature: number, e: Float64Array, op: string): number {
  const V = logits.length;
  const invT = 1 / temperature;
  let m = -Infinity;
  for (let v = 0; v < V; v++) {
    const x = logits[v] * invT;
    if (x > m) m = x;
  }
  for (let v = 0; v < V; v++) e[v] = Math.exp(logits[v] * invT - m);
  const z = laneSum(e, V);
  if (!Number.isFinite(z) || !Number.isFinite(m)) throw new Error(`${op}: logits contain NaN or infinite values`);
  return z;
}

/**
 * Sum of x[0, V) in the order of an 8-lane vector loop: lane l adds x[l], x[l + 8], ... over the whole groups of 8,
 * the lanes combine as ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)), then the last V % 8 values are added in
 * order. native/sample.c sums the same way, so both give the same bits.
 */
export function laneSum(x: ArrayLike<number>, V: number): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
  let v = 0;
  for (; v + 8 <= V; v += 8) {
    s0 += x[v]; s1 += x[v + 1]; s2 += x[v + 2]; s3 += x[v + 3];
    s4 += x[v + 4]; s5 += x[v + 5]; s6 += x[v + 6]; s7 += x[v + 7];
  }
  let z = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
  for (; v < V; v++) z += x[v];
  return z;
}

/** Tokens per block of the blocked inverse-CDF scan (sampleSoftmax, native/sample.c). */
export const CDF_BLOCK = 64;

/**
 * Sum of e[v] * invZ over the block [v0, v0 + 64): lane l (0..7) adds the products at v0 + l, v0 + l + 8, ...,
 * v0 + l + 56 in that order; the lanes combine like laneSum's.
 */
function blockSum(e: ArrayLike<number>, invZ: number, v0: number): number {
  let s0 = e[v0] * invZ, s1 = e[v0 + 1] * invZ, s2 = e[v0 + 2] * invZ, s3 = e[v0 + 3] * invZ;
  let s4 = e[v0 + 4] * invZ, s5 = e[v0 + 5] * invZ, s6 = e[v0 + 6] * invZ, s7 = e[v0 + 7] * invZ;
  for (let v = v0 + 8; v < v0 + CDF_BLOCK; v += 8) {
    s0 += e[v] * invZ; s1 += e[v + 1] * invZ; s2 += e[v + 2] * invZ; s3 += e[v + 3] * invZ;
    s4 += e[v + 4] * invZ; s5 += e[v + 5] * invZ; s6 += e[v + 6] * invZ; s7 += e[v + 7] * invZ;
  }
  return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
}

/** softmax(logits / temperature) in float64 (max-subtracted). Throws when the row holds NaN or infinities. */
export function softmax64(logits: ArrayLike<number>, temperature = 1, out?: Float64Array): Float64Array {
  if (!(temperature > 0)) throw new Error(`softmax64: temperature must be > 0, got ${temperature}`);
  const V = logits.length;
  const p = out ?? new Float64Array(V);
  if (p.length < V) throw new Error(`softmax64: output length ${p.length} < vocabulary ${V}`);
  const invZ = 1 / expShifted(logits, temperature, p, 'softmax64');
  for (let v = 0; v < V; v++) p[v] *= invZ;
  return p;
}

/** Smallest v with cumsum(probs)[v] >= u, in vocabulary-index order; V-1 when rounding leaves the total below u. */
export function inverseCdf(probs: ArrayLike<number>, u: number, V = probs.length): number {
  if (!(u > 0 && u <= 1)) throw new Error(`inverseCdf: uniform must be in (0, 1], got ${u}`);
  let c = 0;
  for (let v = 0; v < V; v++) {
    c += probs[v];
    if (c >= u) return v;
  }
  return V - 1;
}

/**
 * Keeps the smallest set of most probable tokens whose total reaches p (ties broken by lower index), zeroes the rest
 * and renormalises in place. p >= 1 keeps everything.
 */
export function topPFilter(probs: Float64Array, p: number, V = probs.length): void {
  if (!(p > 0 && p <= 1)) throw new Error(`topP must be in (0, 1], got ${p}`);
  if (p >= 1) return;
  const order = new Int32Array(V);
  for (let v = 0; v < V; v++) order[v] = v;
  order.sort((a, b) => probs[b] - probs[a] || a - b);
  let c = 0;
  let keep = 0;
  while (keep < V && c < p) c += probs[order[keep++]];
  for (let i = keep; i < V; i++) probs[order[i]] = 0;
  const inv = 1 / c;
  for (let i = 0; i < keep; i++) probs[order[i]] *= inv;
}

/** Index of the largest value of row[offset, offset + V) (first one on ties). */
export function argmax(row: ArrayLike<number>, offset = 0, V = row.length - offset): number {
  let best = 0;
  let bestVal = -Infinity;
  for (let v = 0; v < V; v++) {
    const x = row[offset + v];
    if (x > bestVal) {
      bestVal = x;
      best = v;
    }
  }
  if (bestVal === -Infinity && Number.isNaN(row[offset])) throw new Error('argmax: logits contain NaN');
  return best;
}

// ---- the two selection rules ---------------------------------------------------------------------------------

export interface ArSamplingOptions {
  /** 0 = greedy (argmax); > 0 = inverse-CDF sampling of softmax(logits / temperature). */
  temperature: number;
  /** Nucleus mass in (0, 1]; 1 disables it. */
  topP: number;
  /** Frequency penalty lambda (0 disables it). */
  penalty: number;
  maskIndex: number;
}

/**
 * One AR token from one row of logits and one uniform. The row is modified in place (processors). `scratch` may be
 * passed to avoid an allocation per token.
 */
export function sampleAr(logits: Float32Array, u: number, counts: TokenCounts | null, opts: ArSamplingOptions,
  scratch?: Float64Array): number {
  suppressMask(logits, opts.maskIndex);
  if (counts) applyFrequencyPenalty(logits, counts, opts.penalty);
  if (opts.temperature === 0) return argmax(logits);
  if (opts.topP < 1) {
    const p = softmax64(logits, opts.temperature, scratch);
    topPFilter(p, opts.topP, logits.length);
    return inverseCdf(p, u, logits.length);
  }
  return sampleSoftmax(logits, opts.temperature, u, scratch);
}

/**
 * The AR rule's sample of softmax(logits / temperature) at u: the blocks of 64 tokens are skipped while the running
 * sum of their blockSums stays below u; from the first block that would reach u the scan goes on token by token
 * (c += e_v * (1 / Z), the probabilities of softmax64), returning the first v with c >= u, or V - 1 when rounding
 * leaves the total below u. Equal to inverseCdf(softmax64(logits, temperature), u) except where u lies within
 * rounding of a cumulative sum at a block boundary (the prefix before the block is summed in lanes, not serially).
 */
export function sampleSoftmax(logits: Float32Array, temperature: number, u: number, scratch?: Float64Array): number {
  if (!(temperature > 0)) throw new Error(`sampleSoftmax: temperature must be > 0, got ${temperature}`);
  if (!(u > 0 && u <= 1)) throw new Error(`sampleSoftmax: uniform must be in (0, 1], got ${u}`);
  const V = logits.length;
  const e = scratch && scratch.length >= V ? scratch : new Float64Array(V);
  const invZ = 1 / expShifted(logits, temperature, e, 'sampleSoftmax');
  let c = 0;
  let v = 0;
  for (; v + CDF_BLOCK <= V; v += CDF_BLOCK) {
    const next = c + blockSum(e, invZ, v);
    if (next >= u) break;
    c = next;
  }
  for (; v < V; v++) {
    c += e[v] * invZ;
    if (c >= u) return v;
  }
  return V - 1;
}

/**
 * PFLM block selection: `slotLogits` is [k * V] (as BatchDecoder.step returns); slot j takes
 * argmax(logits_j - lambda * count) (float32 arithmetic, first maximum on ties) where count includes the tokens
 * chosen for slots < j. `counts` is updated with
 * the chosen tokens. Only the first `take` slots are used (the last step keeps the first k' slots).
 */
export function selectPflm(slotLogits: Float32Array, V: number, counts: TokenCounts, lambda: number,
  maskIndex: number, take = Math.floor(slotLogits.length / V)): number[] {
  const k = Math.floor(slotLogits.length / V);
  if (k * V !== slotLogits.length) throw new Error(`selectPflm: logits length ${slotLogits.length} is not a multiple of V = ${V}`);
  if (take > k) throw new Error(`selectPflm: asked for ${take} slots, logits hold ${k}`);
  const out: number[] = [];
  const c = counts.counts;
  const lam = Math.fround(lambda);
  for (let j = 0; j < take; j++) {
    const row = slotLogits.subarray(j * V, (j + 1) * V);
    suppressMask(row, maskIndex);
    let best = 0;
    if (lambda === 0) {
      best = argmax(row);
    } else {
      let bestVal = -Infinity;
      for (let v = 0; v < V; v++) {
        const x = c[v] === 0 ? row[v] : Math.fround(row[v] - Math.fround(lam * c[v]));
        if (x > bestVal) {
          bestVal = x;
          best = v;
        }
      }
      if (bestVal === -Infinity && Number.isNaN(row[0])) throw new Error('selectPflm: logits contain NaN');
    }
    counts.add(best);
    out.push(best);
  }
  return out;
}

// ---- batched selection (one call per decode step) ------------------------------------------------------------

/** Which implementation the batched rules use: 'auto' = the native kernels when the process backend is native and
 * KFORCE_SELECT is not 'ts' (that variable lets benchmarks measure the TypeScript rules on the native backend). */
export type SelectImpl = 'auto' | 'ts' | 'native';

let nativeCache: NativeSelect | null | undefined;

function selectKernels(impl: SelectImpl, fn: string): NativeSelect | null {
  if (impl === 'ts') return null;
  if (impl === 'auto' && (getBackend().name !== 'native' || process.env.KFORCE_SELECT === 'ts')) return null;
  if (nativeCache === undefined) nativeCache = nativeSelect();
  if (!nativeCache && impl === 'native') throw new Error(`${fn}: the native addon is unavailable`);
  return nativeCache;
}

const errorOf = (e: unknown): Error => (e instanceof Error ? e : new Error(String(e)));

/**
 * sampleAr for every row of a step: row i with uniform us[i], counts[i] (or none) and opts[i] (or one options object
 * for all). Rows are processed in place as sampleAr does. Returns per row the token, or the Error sampleAr throws for
 * that row (the other rows are unaffected).
 */
export function sampleArRows(rows: Float32Array[], us: ArrayLike<number>, counts: readonly (TokenCounts | null)[] | null,
  opts: ArSamplingOptions | readonly ArSamplingOptions[], impl: SelectImpl = 'auto', scratch?: Float64Array): (number | Error)[] {
  const n = rows.length;
  const optsAt = (i: number): ArSamplingOptions => (Array.isArray(opts) ? (opts as ArSamplingOptions[])[i] : opts as ArSamplingOptions);
  if (us.length !== n) throw new Error(`sampleArRows: ${us.length} uniforms for ${n} rows`);
  if (counts && counts.length !== n) throw new Error(`sampleArRows: ${counts.length} count tables for ${n} rows`);
  if (Array.isArray(opts) && opts.length !== n) throw new Error(`sampleArRows: ${opts.length} option sets for ${n} rows`);
  const res: (number | Error)[] = new Array<number | Error>(n);
  const single = (i: number): void => {
    try {
      res[i] = sampleAr(rows[i], us[i], counts ? counts[i] : null, optsAt(i), scratch);
    } catch (e) {
      res[i] = errorOf(e);
    }
  };
  const k = selectKernels(impl, 'sampleArRows');
  if (!k) {
    for (let i = 0; i < n; i++) single(i);
    return res;
  }
  // Rows the kernel takes: valid options (anything else goes through sampleAr, which throws its own message).
  const idx: number[] = [];
  for (let i = 0; i < n; i++) {
    const o = optsAt(i);
    const T = o.temperature;
    const ok = rows[i] instanceof Float32Array && rows[i].length > 0 && Number.isFinite(T) && T >= 0 &&
      (T === 0 || (us[i] > 0 && us[i] <= 1 && !(o.topP <= 0)));
    if (ok) idx.push(i);
    else single(i);
  }
  if (idx.length === 0) return res;
  const V = rows[idx[0]].length;
  const kr: Float32Array[] = [];
  const temps = new Float64Array(idx.length), topPs = new Float64Array(idx.length), uk = new Float64Array(idx.length);
  idx.forEach((i, j) => {
    const o = optsAt(i);
    const row = rows[i];
    suppressMask(row, o.maskIndex);
    const c = counts ? counts[i] : null;
    if (c) applyFrequencyPenalty(row, c, o.penalty);
    kr.push(row);
    temps[j] = o.temperature;
    topPs[j] = o.topP < 1 ? o.topP : 1; // sampleAr filters only when topP < 1 (NaN included in "not")
    uk[j] = o.temperature === 0 ? 1 : us[i];
  });
  const out = new Int32Array(idx.length);
  // Rows of another length than the first go one by one (the kernel takes one V).
  const same = kr.every((r) => r.length === V);
  if (same) {
    k.sampleAr(kr, V, temps, topPs, uk, out);
  } else {
    out.fill(-3);
  }
  idx.forEach((i, j) => {
    if (out[j] >= 0) {
      res[i] = out[j];
      return;
    }
    // NaN/inf logits (or a kernel that could not run): the TS rule on the processed row gives its exact error, or
    // the token. Processors are idempotent only for the mask, so the penalty is not applied twice.
    const o = optsAt(i);
    try {
      res[i] = sampleAr(rows[i], us[i], null, { ...o, penalty: 0 }, scratch);
    } catch (e) {
      res[i] = errorOf(e);
    }
  });
  return res;
}

/**
 * selectPflm for every sequence of a step: blocks[i] ([k * V] slot logits), its counts (updated with the chosen
 * tokens, like selectPflm), frequency penalty lambdas[i] and takes[i] slots. Returns per sequence the tokens, or the
 * Error selectPflm throws (its counts then hold the slots before the failing one, as selectPflm leaves them).
 */
export function selectPflmRows(blocks: Float32Array[], V: number, counts: readonly TokenCounts[], lambdas: ArrayLike<number>,
  maskIndex: number, takes: ArrayLike<number>, impl: SelectImpl = 'auto'): (number[] | Error)[] {
  const n = blocks.length;
  if (counts.length !== n || lambdas.length !== n || takes.length !== n) {
    throw new Error(`selectPflmRows: ${n} blocks need as many count tables, penalties and slot counts (got ${counts.length}, ${lambdas.length}, ${takes.length})`);
  }
  const res: (number[] | Error)[] = new Array<number[] | Error>(n);
  const single = (i: number): void => {
    try {
      res[i] = selectPflm(blocks[i], V, counts[i], lambdas[i], maskIndex, takes[i]);
    } catch (e) {
      res[i] = errorOf(e);
    }
  };
  const k = selectKernels(impl, 'selectPflmRows');
  if (!k) {
    for (let i = 0; i < n; i++) single(i);
    return res;
  }
  const idx: number[] = [];
  let kmax = 0;
  for (let i = 0; i < n; i++) {
    const b = blocks[i];
    const t = takes[i];
    const kb = b instanceof Float32Array ? Math.floor(b.length / V) : -1;
    const ok = Number.isInteger(V) && V > 0 && kb * V === b.length && Number.isInteger(t) && t >= 0 && t <= kb &&
      lambdas[i] >= 0 && Number.isFinite(lambdas[i]) && counts[i].vocabSize === V && !idx.some((j) => counts[j] === counts[i]);
    if (ok) {
      idx.push(i);
      kmax = Math.max(kmax, t);
    } else {
      single(i);
    }
  }
  if (idx.length === 0) return res;
  const out = new Int32Array(idx.length * kmax);
  k.selectPflm(idx.map((i) => blocks[i]), idx.map((i) => counts[i].counts), Int32Array.from(idx, (i) => takes[i]),
    Float64Array.from(idx, (i) => lambdas[i]), V, kmax, maskIndex, out);
  idx.forEach((i, j) => {
    const toks: number[] = [];
    for (let s = 0; s < takes[i]; s++) toks.push(out[j * kmax + s]);
    if (toks.some((t) => t < 0)) {
      // A NaN row: the kernel left the counts untouched, so selectPflm over the block records the slots before it
      // and throws its own error.
      single(i);
      return;
    }
    for (const t of toks) counts[i].add(t);
    res[i] = toks;
  });
  return res;
}

/** The paper's recommended frequency penalty per k (KFORCING.md section 6); 0 for k = 1. */
export function recommendedPenalty(k: number): number {
  if (k <= 1) return 0;
  if (k === 2) return 0.25;
  if (k === 3) return 0.45;
  return 0.5;
}
