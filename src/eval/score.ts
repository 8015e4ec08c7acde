// Teacher-forced scoring of continuations under an AR model through its BatchDecoder: per-token negative
// log-likelihoods of each continuation given its prompt. Sequences of all lengths share each step (one forward pass
// per step over the batch), so scoring many samples costs about as many passes as the longest continuation.
import type { BatchDecoder, SeqId } from '../model/types.ts';
import { logProbAt } from './metrics.ts';

export interface ScoreOptions {
  /** Most sequences per step (default all). */
  maxBatch?: number;
  /** Called after each step with the number of tokens scored so far. */
  onProgress?: (scored: number, total: number) => void;
}

/** NLL (nats) of every continuation token; out[i][t] = -log p(continuations[i][t] | prompt_i, continuation_i[<t]). */
export function scoreContinuations(decoder: BatchDecoder, prompts: number[][], continuations: number[][],
  opts: ScoreOptions = {}): number[][] {
  if (decoder.kind !== 'ar') throw new Error('scoreContinuations: the scoring model must be an AR model');
  if (prompts.length !== continuations.length) {
    throw new Error(`scoreContinuations: ${prompts.length} prompts but ${continuations.length} continuations`);
  }
  const maxBatch = opts.maxBatch ?? Number.MAX_SAFE_INTEGER;
  if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new Error(`scoreContinuations: maxBatch must be >= 1, got ${maxBatch}`);
  const out = continuations.map(() => [] as number[]);
  const total = continuations.reduce((s, c) => s + c.length, 0);
  const queue = continuations.map((c, i) => i).filter((i) => continuations[i].length > 0);
  let scored = 0;
  let active: Array<{ i: number; id: SeqId }> = [];
  try {
    while (queue.length > 0 || active.length > 0) {
      while (active.length < maxBatch && queue.length > 0) {
        const i = queue.shift()!;
        active.push({ i, id: decoder.open(prompts[i]) });
      }
      const logits = decoder.step(active.map((a) => a.id));
      const still: typeof active = [];
      active.forEach((a, j) => {
        const cont = continuations[a.i];
        const t = out[a.i].length;
        out[a.i].push(-logProbAt(logits[j], cont[t]));
        scored++;
        if (t + 1 < cont.length) {
          decoder.append(a.id, [cont[t]]);
          still.push(a);
        } else {
          decoder.close(a.id);
        }
      });
      active = still;
      opts.onProgress?.(scored, total);
    }
  } finally {
    for (const a of active) decoder.close(a.id);
  }
  return out;
}
