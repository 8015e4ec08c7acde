// Batched generation over a BatchDecoder, the same loop for AR and PFLM models. Every step is one forward pass over
// all active sequences; prompts of different lengths share the batch (each sequence feeds its own pending tokens),
// sequences leave at EOS or at their token budget and queued prompts take their place (continuous batching).
// Sequence i draws its uniforms from stream streamIds[i] (default i) of the seed, position t of its output using
// uniform t, so the output of a prompt depends on (model, prompt, seed, stream, options) only, not on the batch.
import type { BatchDecoder, SeqId } from '../model/types.ts';
import { NoiseStream } from './noise.ts';
import { TokenCounts, recommendedPenalty } from './sampling.ts';
import { decodeStep } from './step.ts';

export interface TokenEvent {
  /** Index of the prompt in the `prompts` argument. */
  index: number;
  /** Tokens emitted by this step (EOS excluded). */
  tokens: number[];
  /** Set on the sequence's last event. */
  finish?: FinishReason;
}

export type FinishReason = 'eos' | 'length';

export interface GenerateOptions {
  /** Token budget per sequence (generated tokens, EOS not counted beyond the stop). */
  maxNewTokens: number;
  seed?: number;
  /** Noise stream of each prompt (default: its index). Lets one prompt alone reproduce its row of a batch. */
  streamIds?: number[];
  /** Position in its noise stream at which each prompt starts (default 0): continuing a sequence whose first
   * tokens were generated elsewhere keeps the uniforms aligned to positions. */
  noiseStart?: number[];
  /** Tokens that end a sequence (not included in the output). Empty: run to the budget. */
  eos?: readonly number[];
  /** AR only: 0 = greedy, default 1. */
  temperature?: number;
  /** AR only: nucleus mass, default 1 (off). */
  topP?: number;
  /** PFLM only: tokens per step, 1..maxK, default maxK. */
  k?: number;
  /** PFLM only: the sampling temperature the PFLM imitates, default 1. */
  tau?: number;
  /** Frequency penalty lambda; default 0 for AR, the recommended value for the PFLM's k (KFORCING.md section 6). */
  penalty?: number;
  /** Most sequences in one step (default: all prompts at once). */
  maxBatch?: number;
  /** PFLM only: encode the noise of several future steps in one pass when a step has few noise rows (default
   * true). The output is the same either way; batch-1 decoding saves most of the noise encoder's weight reads. */
  encodeAhead?: boolean;
  /** Streaming callback, called after every step for every sequence that emitted tokens or finished. */
  onTokens?: (event: TokenEvent) => void;
}

export interface GenerateResult {
  /** Generated tokens per prompt (prompt and EOS excluded). */
  tokens: number[][];
  finish: FinishReason[];
  /** Forward passes (decoder steps) taken, all sequences together. */
  steps: number;
  /** Forward passes each sequence took part in. */
  seqSteps: number[];
  /** Wall time inside decoder.step (the forward passes) and in token selection (samplers, penalties), seconds. A
   * PFLM step picks its tokens inside the step (stepSelectPflm), so for a PFLM the selection is counted as forward
   * time and selectSeconds holds only the bookkeeping after it. */
  forwardSeconds: number;
  selectSeconds: number;
}

interface Active {
  index: number;
  id: SeqId;
  noise: NoiseStream;
  counts: TokenCounts;
  out: number[];
  steps: number;
}

function checkInt(name: string, v: number, lo: number, hi = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isInteger(v) || v < lo || v > hi) throw new Error(`generate: ${name} must be an integer in [${lo}, ${hi}], got ${v}`);
}

/** Resolved per-kind options, validated once. */
function resolve(decoder: BatchDecoder, opts: GenerateOptions) {
  const cfg = decoder.config;
  checkInt('maxNewTokens', opts.maxNewTokens, 1);
  const seed = opts.seed ?? 0;
  checkInt('seed', seed, 0);
  const temperature = opts.temperature ?? 1;
  if (!(temperature >= 0) || !Number.isFinite(temperature)) throw new Error(`generate: temperature must be >= 0, got ${temperature}`);
  const topP = opts.topP ?? 1;
  if (!(topP > 0 && topP <= 1)) throw new Error(`generate: topP must be in (0, 1], got ${topP}`);
  const tau = opts.tau ?? 1;
  if (!(tau > 0) || !Number.isFinite(tau)) throw new Error(`generate: tau must be > 0, got ${tau}`);
  let k = 1;
  if (decoder.kind === 'pflm') {
    k = opts.k ?? cfg.maxK;
    checkInt('k', k, 1, cfg.maxK);
  } else if (opts.k !== undefined && opts.k !== 1) {
    throw new Error(`generate: k = ${opts.k} needs a PFLM model; this model is AR (one token per step)`);
  }
  const penalty = opts.penalty ?? (decoder.kind === 'pflm' ? recommendedPenalty(k) : 0);
  if (!(penalty >= 0) || !Number.isFinite(penalty)) throw new Error(`generate: penalty must be >= 0, got ${penalty}`);
  const maxBatch = opts.maxBatch ?? Number.MAX_SAFE_INTEGER;
  checkInt('maxBatch', maxBatch, 1);
  for (const e of opts.eos ?? []) checkInt('eos token', e, 0, cfg.vocabSize - 1);
  return { seed, temperature, topP, tau, k, penalty, maxBatch, eos: new Set(opts.eos ?? []) };
}

/** Generates a continuation of every prompt. Deterministic for a given seed (and backend). */
export function generate(decoder: BatchDecoder, prompts: number[][], opts: GenerateOptions): GenerateResult {
  const o = resolve(decoder, opts);
  const V = decoder.config.vocabSize;
  const streamIds = opts.streamIds ?? prompts.map((_, i) => i);
  if (streamIds.length !== prompts.length) {
    throw new Error(`generate: streamIds has ${streamIds.length} entries for ${prompts.length} prompts`);
  }
  const noiseStart = opts.noiseStart ?? prompts.map(() => 0);
  if (noiseStart.length !== prompts.length) {
    throw new Error(`generate: noiseStart has ${noiseStart.length} entries for ${prompts.length} prompts`);
  }
  noiseStart.forEach((n) => checkInt('noiseStart', n, 0));
  prompts.forEach((p, i) => {
    if (p.length === 0) throw new Error(`generate: prompt ${i} is empty (start it with a BOS token)`);
  });
  const result: GenerateResult = {
    tokens: prompts.map(() => []),
    finish: prompts.map(() => 'length' as FinishReason),
    steps: 0,
    seqSteps: prompts.map(() => 0),
    forwardSeconds: 0,
    selectSeconds: 0,
  };
  const scratch = new Float64Array(V);
  let nextPrompt = 0;
  let active: Active[] = [];
  try {
    while (nextPrompt < prompts.length || active.length > 0) {
      while (active.length < o.maxBatch && nextPrompt < prompts.length) {
        const index = nextPrompt++;
        active.push({
          index,
          id: decoder.open(prompts[index]),
          noise: new NoiseStream(o.seed, streamIds[index], noiseStart[index]),
          counts: new TokenCounts(V),
          out: [],
          steps: 0,
        });
      }
      const t0 = process.hrtime.bigint();
      const { tokens: chosen, forwardSeconds } = decodeStep(decoder, active.map((a) => ({
        id: a.id, noise: a.noise, counts: a.counts,
        // the last step keeps only the slots it still needs; the uniforms stay aligned to positions
        slots: Math.min(o.k, opts.maxNewTokens - a.out.length), noiseEnd: noiseStart[a.index] + opts.maxNewTokens,
        temperature: decoder.kind === 'pflm' ? o.tau : o.temperature, topP: o.topP, penalty: o.penalty,
      })), { k: o.k, encodeAhead: opts.encodeAhead, scratch });
      result.steps++;
      result.forwardSeconds += forwardSeconds;
      const still: Active[] = [];
      // the first failing row's error is thrown
      for (const c of chosen) if (c instanceof Error) throw c;
      active.forEach((a, i) => {
        a.steps++;
        let emitted = chosen[i] as number[];
        if (decoder.kind === 'ar') a.counts.add(emitted[0]);
        let finish: FinishReason | undefined;
        const stop = emitted.findIndex((t) => o.eos.has(t));
        if (stop >= 0) {
          emitted = emitted.slice(0, stop);
          finish = 'eos';
        }
        a.out.push(...emitted);
        if (!finish && a.out.length >= opts.maxNewTokens) finish = 'length';
        if (emitted.length > 0 || finish) opts.onTokens?.({ index: a.index, tokens: emitted, finish });
        if (finish) {
          decoder.close(a.id);
          result.tokens[a.index] = a.out;
          result.finish[a.index] = finish;
          result.seqSteps[a.index] = a.steps;
        } else {
          decoder.append(a.id, emitted);
          still.push(a);
        }
      });
      active = still;
      result.selectSeconds += Number(process.hrtime.bigint() - t0) / 1e9 - forwardSeconds;
    }
  } finally {
    for (const a of active) decoder.close(a.id);
  }
  return result;
}
