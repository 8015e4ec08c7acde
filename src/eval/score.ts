// Teacher forcing through an AR model's BatchDecoder: the model reads each prompt and then its continuation token by
// token, and a callback sees the logits that predict every continuation token. Sequences of all lengths share each
// step (one forward pass per step over the batch), so many samples cost about as many passes as the longest one.
import type { BatchDecoder, SeqId } from '../model/types.ts';
import { logProbAt } from './metrics.ts';

export interface ScoreOptions {
  /** Most sequences per step (default all). */
  maxBatch?: number;
}

/**
 * Calls visit(i, t, logits) with the raw logits of position t of continuation i (predicting continuations[i][t],
 * given prompt i and continuation tokens < t). The logits array is only valid during the call.
 */
export function teacherForce(decoder: BatchDecoder, prompts: number[][], continuations: number[][],
  visit: (i: number, t: number, logits: Float32Array) => void, opts: ScoreOptions = {}): void {
  if (decoder.kind !== 'ar') throw new Error('teacherForce: the scoring model must be an AR model');
  if (prompts.length !== continuations.length) {
    throw new Error(`teacherForce: ${prompts.length} prompts but ${continuations.length} continuations`);
  }
  const maxBatch = opts.maxBatch ?? Number.MAX_SAFE_INTEGER;
  if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new Error(`teacherForce: maxBatch must be >= 1, got ${maxBatch}`);
  const queue = continuations.map((_, i) => i).filter((i) => continuations[i].length > 0);
  let active: Array<{ i: number; id: SeqId; t: number }> = [];
  try {
    while (queue.length > 0 || active.length > 0) {
      while (active.length < maxBatch && queue.length > 0) {
        const i = queue.shift()!;
        active.push({ i, id: decoder.open(prompts[i]), t: 0 });
      }
      const logits = decoder.step(active.map((a) => a.id));
      const still: typeof active = [];
      active.forEach((a, j) => {
        const cont = continuations[a.i];
        visit(a.i, a.t, logits[j]);
        if (a.t + 1 < cont.length) {
          decoder.append(a.id, [cont[a.t]]);
          a.t++;
          still.push(a);
        } else {
          decoder.close(a.id);
        }
      });
      active = still;
    }
  } finally {
    for (const a of active) decoder.close(a.id);
  }
}

/** NLL (nats) of every continuation token; out[i][t] = -log p(continuations[i][t] | prompt_i, continuation_i[<t]). */
export function scoreContinuations(decoder: BatchDecoder, prompts: number[][], continuations: number[][],
  opts: ScoreOptions = {}): number[][] {
  const out = continuations.map((c) => new Array<number>(c.length));
  teacherForce(decoder, prompts, continuations, (i, t, logits) => {
    out[i][t] = -logProbAt(logits, continuations[i][t]);
  }, opts);
  return out;
}
