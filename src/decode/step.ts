// One decode step of a batch together with its tokens: the part of a decoding loop that generate and the server's
// scheduler share (they differ in how sequences join, stream and leave). A PFLM step picks its tokens inside the step
// (stepSelectPflm: the screened output layer where it applies); greedy AR the same way (stepGreedyAr); AR sampling
// takes the step's logits and samples every row at once (sampleArRows).
import type { BatchDecoder, SeqId } from '../model/types.ts';
import { noiseAhead, type NoiseStream } from './noise.ts';
import { sampleArRows, type TokenCounts } from './sampling.ts';
import { stepGreedyAr, stepLogits, stepSelectPflm } from './screen.ts';

/** One sequence of the step, as its decoding loop holds it. */
export interface StepSequence {
  id: SeqId;
  /** Its uniforms: a PFLM step takes `slots` of them, an AR step one (greedy steps draw it too, so that the stream
   * stays where sampling would leave it). */
  noise: NoiseStream;
  /** Generated-token counts (frequency penalty). AR: the caller adds the chosen token; the PFLM rule adds its own. */
  counts: TokenCounts;
  /** PFLM: tokens this step may emit (the last step keeps only the slots it still needs). */
  slots: number;
  /** PFLM: the noise position after the sequence's last token (how far its uniforms may be encoded ahead). */
  noiseEnd: number;
  /** AR: sampling temperature (0 = greedy). PFLM: the tau it imitates. */
  temperature: number;
  topP: number;
  penalty: number;
}

export interface StepTokens {
  /** Per sequence its tokens (one for AR, up to k for a PFLM), or the Error its selection rule gave (a NaN row). */
  tokens: (number[] | Error)[];
  /** Seconds in the forward pass, including a PFLM's (or greedy AR's) token choice, which happens inside it. */
  forwardSeconds: number;
}

export interface DecodeStepOptions {
  /** The PFLM's tokens per step. */
  k: number;
  /** PFLM: encode the next steps' noise ahead of them (BatchDecoder.step's noiseAhead); default true. */
  encodeAhead?: boolean;
  /** AR sampling scratch of at least vocabSize float64s (avoids an allocation per step). */
  scratch?: Float64Array;
}

/** One step for `seqs` and each one's tokens. A failing forward pass throws; a failing row gives its Error. */
export function decodeStep(decoder: BatchDecoder, seqs: readonly StepSequence[], opts: DecodeStepOptions): StepTokens {
  const ids = seqs.map((s) => s.id);
  const counts = seqs.map((s) => s.counts);
  const penalties = seqs.map((s) => s.penalty);
  const t0 = process.hrtime.bigint();
  let picked: (number[] | Error)[] | null;
  let outs: Float32Array[] = [];
  if (decoder.kind === 'pflm') {
    const noise = seqs.map((s) => s.noise.take(s.slots));
    const ahead = opts.encodeAhead === false ? undefined
      : noiseAhead(seqs.map((s) => s.noise), seqs.map((s) => s.noiseEnd), opts.k);
    picked = stepSelectPflm(decoder, ids, { noise, tau: seqs.map((s) => s.temperature), noiseAhead: ahead }, counts,
      penalties);
  } else {
    picked = seqs.every((s) => s.temperature === 0) ? stepGreedyAr(decoder, ids, counts, penalties) : null;
    if (picked) seqs.forEach((s) => s.noise.next());
    else outs = stepLogits(decoder, ids); // consumed below, before the decoder's next step: no copy needed
  }
  const forwardSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (picked) return { tokens: picked, forwardSeconds };
  const maskIndex = decoder.config.maskIndex;
  // Every row at once (the native kernels use both cores).
  const tokens = sampleArRows(outs, seqs.map((s) => s.noise.next()), counts,
    seqs.map((s) => ({ temperature: s.temperature, topP: s.topP, penalty: s.penalty, maskIndex })), 'auto', opts.scratch)
    .map((t) => (t instanceof Error ? t : [t]));
  return { tokens, forwardSeconds };
}
