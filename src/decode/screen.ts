// A decode step together with its token choice, for callers that want the tokens only (generate, the server): the
// PFLM rule (selectPflmRows) and greedy AR (sampleAr at temperature 0). Both are an argmax, so with the native
// kernels the step skips the exact output layer: an int8 copy of its weights (a quarter of the bytes of the ~30% of
// the model it is) bounds every logit, and only the few logits that can still be the maximum are computed exactly
// (native/screen.c has the proof of the bound). The tokens are those of the full step and the rule, bit for bit. AR
// sampling at a temperature needs every logit (the softmax normaliser) and gets no such shortcut. KFORCE_SCREEN=0
// turns it off.
import type { BatchDecoder, SeqId, StepOptions } from '../model/types.ts';
import { alignedFloat32, nativeScreen, SCREEN_META, type NativeScreen } from '../tensor/native.ts';
import { getBackend } from '../tensor/select.ts';
import { sampleArRows, selectPflmRows, type TokenCounts } from './sampling.ts';

interface Prepared {
  wq: Int8Array;
  meta: Float32Array;
}

// By decoder: the int8 copy of its output layer (null: it cannot be screened), made on first use. Per decoder, not
// per weight matrix: a decoder belongs to the weights it started with (its KV cache was computed with them), so a
// model trained further gets a fresh copy with its next decoder.
const prepared = new WeakMap<object, Prepared | null>();
// By decoder: scratch for the approximate (integer) logits.
const approxScratch = new WeakMap<object, Int32Array>();

/** Steps with more output rows (PFLM noise rows, AR sequences) than this compute the full output layer. Up to session
 * 11 this was 8: the screen's two-part int8 pass grew with the rows and lost to the compute-bound fp32 layer from 16
 * rows on. With one part and the candidates' second round (session 12) it wins at every batch size measured, official
 * shape, k=4, 122 tokens, on/off alternating in one process (scripts/screen-ab.ts): batch 4 (16 rows) 28.9-30.8 against
 * 31.6-33.0 ms per step, batch 16 107.8-112.9 against 117.2-121.8, batch 64 (256 rows) 421.5-439.2 against
 * 446.0-461.0, same tokens. Larger steps are unmeasured, and the integer sums take 4 bytes per row and token. */
export const SCREEN_MAX_ROWS = 256;

/** Output layers smaller than this (fp32 bytes) are not screened unless KFORCE_SCREEN=1: they stay in this host's
 * 32 MB L3 cache, where the fp32 layer is as fast (a 4096 x 256 model, k=4, batch 1: 0.86-0.93 ms per step screened
 * against 0.74-1.0 plain, alternating). */
export const SCREEN_MIN_BYTES = 32 * 2 ** 20;

let kernels: NativeScreen | null | undefined;

function screenKernels(): NativeScreen | null {
  // Only on the native backend (the exact candidates are computed with its linear kernel, so they carry the bits of
  // its full layer), and not when token selection is asked to run the TypeScript rules.
  if (process.env.KFORCE_SCREEN === '0' || process.env.KFORCE_SELECT === 'ts' || getBackend().name !== 'native') return null;
  if (kernels === undefined) kernels = nativeScreen();
  return kernels;
}

/** Whether this process screens a PFLM output layer of V x D weights (native backend with int8 kernels, KFORCE_SCREEN
 * not 0, KFORCE_SELECT not ts, and the layer at least SCREEN_MIN_BYTES in fp32 unless KFORCE_SCREEN=1), in steps of up
 * to SCREEN_MAX_ROWS noise rows. For predictions made away from the decoder (the serving benchmark). */
export function screensLayer(V: number, D: number): boolean {
  return screenKernels() !== null && sizeWanted(V, D);
}

function sizeWanted(V: number, D: number): boolean {
  return process.env.KFORCE_SCREEN === '1' || V * D * 4 >= SCREEN_MIN_BYTES;
}

function preparedFor(decoder: BatchDecoder, k: NativeScreen): Prepared | null {
  const N = decoder.config.vocabSize, K = decoder.config.hiddenSize;
  if (!decoder.stepHidden || !decoder.outputLayer || !sizeWanted(N, K)) return null;
  const { w } = decoder.outputLayer();
  if (!(w instanceof Float32Array)) return null;
  let p = prepared.get(decoder);
  if (p === undefined) {
    const n = k.bytes(N, K);
    const buf = alignedFloat32(Math.ceil(n / 4)); // cache-line aligned, like the model's own weights
    const wq = new Int8Array(buf.buffer, buf.byteOffset, n);
    const meta = new Float32Array(SCREEN_META * N);
    p = k.prepare(w, N, K, wq, meta) ? { wq, meta } : null;
    prepared.set(decoder, p);
  }
  return p;
}

/** Whether stepSelectPflm and stepGreedyAr skip the exact output layer for this decoder (native int8 kernels,
 * float32 model with finite output weights of at least SCREEN_MIN_BYTES, or any size with KFORCE_SCREEN=1;
 * KFORCE_SCREEN=0: never) in steps of at most SCREEN_MAX_ROWS output rows. Prepares the int8 copy on first call
 * (~39 MB for the official architecture). */
export function screensOutput(decoder: BatchDecoder): boolean {
  const k = screenKernels();
  return k !== null && preparedFor(decoder, k) !== null;
}

/** decoder.step, without the logits copy where the decoder offers that (for callers that use the logits before the
 * decoder's next step). */
export function stepLogits(decoder: BatchDecoder, ids: SeqId[], opts?: StepOptions): Float32Array[] {
  return decoder.stepShared ? decoder.stepShared(ids, opts) : decoder.step(ids, opts);
}

/**
 * One PFLM step (decoder.step with opts) and the PFLM rule on its logits: per sequence the tokens of
 * selectPflmRows(logits, counts[i], penalties[i]) for all of its slots (counts updated the same way), or the Error
 * that rule gives (a NaN row).
 */
export function stepSelectPflm(decoder: BatchDecoder, ids: SeqId[], opts: StepOptions, counts: readonly TokenCounts[],
  penalties: readonly number[]): (number[] | Error)[] {
  const cfg = decoder.config;
  const V = cfg.vocabSize;
  perSequence('stepSelectPflm', ids, counts, penalties);
  const rows = (opts.noise ?? []).reduce((n, r) => n + (Array.isArray(r) ? r.length : 0), 0);
  const k = rows <= SCREEN_MAX_ROWS ? screenKernels() : null;
  const prep = k && screenable(decoder, k, counts, penalties);
  if (!k || !prep) {
    const outs = stepLogits(decoder, ids, opts);
    return selectPflmRows(outs, V, counts, penalties, cfg.maskIndex, outs.map((o) => o.length / V));
  }
  const { rows: h, slots } = decoder.stepHidden!(ids, opts);
  return screenedTokens(decoder, k, prep, h, slots, counts, penalties).map((toks, i) => {
    if (toks === null) {
      // A row the rule rejects (NaN) or no scratch memory: the exact logits of this sequence and the rule itself.
      const { logits, maskIndex } = exactLogits(decoder, h, slots, i);
      return selectPflmRows([logits], V, [counts[i]], [penalties[i]], maskIndex, [slots[i]])[0];
    }
    for (const t of toks) counts[i].add(t);
    return toks;
  });
}

/**
 * Greedy AR (temperature 0) through the screen: one AR step for `ids` and each sequence's token, the one sampleAr
 * picks at temperature 0 (argmax of the logits with the [MASK] logit suppressed and penalties[i] applied to
 * counts[i]; the counts are not updated, the caller adds the token as after sampleArRows), or that rule's Error (a
 * NaN row). null when the screen does not apply (no int8 kernels, more than SCREEN_MAX_ROWS sequences, a small
 * output layer): the caller takes the plain step, nothing has run.
 */
export function stepGreedyAr(decoder: BatchDecoder, ids: SeqId[], counts: readonly TokenCounts[],
  penalties: readonly number[]): (number[] | Error)[] | null {
  if (decoder.kind !== 'ar' || ids.length > SCREEN_MAX_ROWS) return null;
  perSequence('stepGreedyAr', ids, counts, penalties);
  const k = screenKernels();
  const prep = k && screenable(decoder, k, counts, penalties);
  if (!k || !prep) return null;
  const { rows: h, slots } = decoder.stepHidden!(ids);
  return screenedTokens(decoder, k, prep, h, slots, counts, penalties).map((toks, i) => {
    if (toks !== null) return toks;
    const { logits, maskIndex } = exactLogits(decoder, h, slots, i);
    const t = sampleArRows([logits], [0.5], [counts[i]], [{ temperature: 0, topP: 1, penalty: penalties[i], maskIndex }])[0];
    return t instanceof Error ? t : [t];
  });
}

function perSequence(fn: string, ids: SeqId[], counts: readonly TokenCounts[], penalties: readonly number[]): void {
  if (counts.length !== ids.length || penalties.length !== ids.length) {
    throw new Error(`${fn}: ${ids.length} sequences need as many count tables and penalties (got ${counts.length}, ${penalties.length})`);
  }
}

/** The decoder's int8 copy when the screen can take this step's counts and penalties; inputs the plain rules would
 * reject or treat one by one (a bad penalty, a count table of the wrong size or shared by two sequences) go the
 * plain way, so that their errors stay the same. */
function screenable(decoder: BatchDecoder, k: NativeScreen, counts: readonly TokenCounts[], penalties: readonly number[]): Prepared | null {
  const V = decoder.config.vocabSize;
  if (penalties.some((l) => !(l >= 0 && Number.isFinite(l)))) return null;
  if (counts.some((c, i) => c.vocabSize !== V || counts.indexOf(c) !== i)) return null;
  return preparedFor(decoder, k);
}

/** Per sequence its tokens by the PFLM rule on h w^T + bias (one per slot; counts as found), or null where the
 * kernels could not bound a row (NaN) or ran out of memory. */
function screenedTokens(decoder: BatchDecoder, k: NativeScreen, prep: Prepared, h: Float32Array, slots: number[],
  counts: readonly TokenCounts[], penalties: readonly number[]): (number[] | null)[] {
  const V = decoder.config.vocabSize, K = decoder.config.hiddenSize;
  const { w, bias, maskIndex } = decoder.outputLayer!() as { w: Float32Array; bias: Float32Array; maskIndex: number };
  const M = h.length / K;
  let isum = approxScratch.get(decoder);
  if (!isum || isum.length < M * V) {
    isum = new Int32Array(M * V);
    approxScratch.set(decoder, isum);
  }
  const S = slots.length;
  const rowStart = new Int32Array(S);
  let kmax = 0;
  for (let i = 0, r = 0; i < S; i++) {
    rowStart[i] = r;
    r += slots[i];
    kmax = Math.max(kmax, slots[i]);
  }
  const out = new Int32Array(S * kmax);
  k.select(h, M, K, V, prep.wq, prep.meta, w, bias, isum, rowStart, Int32Array.from(slots),
    counts.map((c) => c.counts), Float64Array.from(penalties), maskIndex, kmax, out);
  return slots.map((n, i) => {
    const toks = Array.from(out.subarray(i * kmax, i * kmax + n));
    return toks.some((t) => t < 0) ? null : toks;
  });
}

/** Sequence i's exact logits (its rows of h through the full output layer). */
function exactLogits(decoder: BatchDecoder, h: Float32Array, slots: number[], i: number): { logits: Float32Array; maskIndex: number } {
  const V = decoder.config.vocabSize, K = decoder.config.hiddenSize;
  const { w, bias, maskIndex } = decoder.outputLayer!() as { w: Float32Array; bias: Float32Array; maskIndex: number };
  let r0 = 0;
  for (let q = 0; q < i; q++) r0 += slots[q];
  const n = slots[i];
  const logits = new Float32Array(n * V);
  getBackend().linear(logits, h.subarray(r0 * K, (r0 + n) * K), w, bias, n, K, V);
  return { logits, maskIndex };
}
