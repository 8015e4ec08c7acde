// The continuous-batching loop. One loop owns the BatchDecoder; every iteration (1) drops cancelled sequences,
// (2) admits queued requests into free batch slots (their prompts are simply pending tokens, so they are prefilled by
// the same forward pass that decodes everyone else), (3) runs ONE decoder step for the whole batch, (4) hands each
// sequence its new tokens and retires the finished ones, then (5) yields to the event loop for a few setImmediate turns
// so HTTP parsing, new arrivals and disconnects are handled between steps. The step itself is synchronous compute.
//
// Token selection reuses src/decode: sequence noise comes from NoiseStream(seed, stream 0), position t of the output
// reading uniform t, so a request's completion depends on (model, prompt, seed, options) only, never on what else is
// in the batch, and equals `generate(decoder, [prompt], { seed })`.
import type { BatchDecoder, SeqId } from '../model/types.ts';
import { NoiseStream } from '../decode/noise.ts';
import { TokenCounts } from '../decode/sampling.ts';
import { decodeStep } from '../decode/step.ts';
import { ApiError } from './errors.ts';
import type { FinishReason, ServeMetrics } from './metrics.ts';

export interface Job {
  prompt: number[];
  maxTokens: number;
  /** Non-negative safe integer; the noise stream of the request. */
  seed: number;
  /** AR: sampling temperature (0 = greedy). PFLM: the temperature tau it imitates (> 0). */
  temperature: number;
  /** AR only: nucleus mass in (0, 1]. */
  topP: number;
  /** Frequency penalty lambda (>= 0). */
  penalty: number;
  /**
   * Called after every step in which the sequence emitted tokens (EOS excluded). Returning true ends the sequence
   * with finish reason 'stop' (a stop sequence matched). Runs inside the loop, so it must be quick; a throw ends the
   * request with finish reason 'error'.
   */
  onTokens?: (tokens: number[]) => boolean | void;
}

export interface JobResult {
  tokens: number[];
  finishReason: FinishReason;
  /** Set when finishReason is 'error'. */
  error?: Error;
  promptTokens: number;
  /** Decoder steps this sequence took part in. */
  steps: number;
  /** Seconds from submit to finish. */
  seconds: number;
}

export interface SchedulerOptions {
  /** Most sequences in one step. */
  maxBatch: number;
  /** Most requests waiting for a slot; beyond maxBatch + maxQueue requests are refused with 429. */
  maxQueue: number;
  /** PFLM: tokens per step (1..maxK). Ignored for AR. */
  k: number;
  /** Token ids that end a sequence (not part of its output). */
  eos: number[];
  metrics: ServeMetrics;
}

interface Entry {
  job: Job;
  submitted: number;
  id: SeqId | null;
  noise: NoiseStream;
  counts: TokenCounts;
  out: number[];
  steps: number;
  cancelled: boolean;
  resolve: (r: JobResult) => void;
}

export interface JobHandle {
  readonly done: Promise<JobResult>;
  /** Ends the request: a queued one leaves at once, a running one frees its slot before the next step. */
  cancel(): void;
}

const yieldToEventLoop = (): Promise<void> => new Promise((r) => setImmediate(r));

/**
 * Event-loop turns granted to HTTP between two steps. A request needs several turns from its socket to the queue
 * (body, parsing, hooks), and one that misses the gap waits a whole step: with 0.5 s steps (k=4, 64 clients, official
 * architecture) one turn per gap left the batch at 33 of 64 on average, 4 turns at 47, 16 at 47-63 (three runs on a
 * noisy host). A turn with nothing to do costs microseconds, so long steps get 16 and steps under 10 ms (small
 * models) 2.
 */
function turnsBetweenSteps(stepSeconds: number): number {
  return stepSeconds >= 0.01 ? 16 : 2;
}

export class Scheduler {
  private readonly queue: Entry[] = [];
  private active: Entry[] = [];
  private loopScheduled = false;
  private draining = false;
  private drainWaiters: Array<() => void> = [];
  private readonly eos: Set<number>;
  private readonly scratch: Float64Array;
  /** Exponential moving average of the step time (seconds), for Retry-After. */
  private stepEma = 0;

  constructor(readonly decoder: BatchDecoder, readonly opts: SchedulerOptions) {
    const cfg = decoder.config;
    if (!Number.isInteger(opts.maxBatch) || opts.maxBatch < 1) throw new Error(`scheduler: maxBatch must be an integer >= 1, got ${opts.maxBatch}`);
    if (!Number.isInteger(opts.maxQueue) || opts.maxQueue < 0) throw new Error(`scheduler: maxQueue must be an integer >= 0, got ${opts.maxQueue}`);
    if (decoder.kind === 'pflm' && !(Number.isInteger(opts.k) && opts.k >= 1 && opts.k <= cfg.maxK)) {
      throw new Error(`scheduler: k must be an integer in [1, ${cfg.maxK}] for this PFLM, got ${opts.k}`);
    }
    for (const e of opts.eos) {
      if (!Number.isInteger(e) || e < 0 || e >= cfg.vocabSize) throw new Error(`scheduler: eos token ${e} is outside [0, ${cfg.vocabSize})`);
    }
    this.eos = new Set(opts.eos);
    this.scratch = new Float64Array(cfg.vocabSize);
  }

  /** Tokens one step emits per sequence. */
  get tokensPerStep(): number {
    return this.decoder.kind === 'pflm' ? this.opts.k : 1;
  }

  get queued(): number {
    return this.queue.length;
  }

  get running(): number {
    return this.active.length;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /** Queues a request. Throws ApiError 429 (full, with Retry-After) or 503 (draining). */
  submit(job: Job): JobHandle {
    if (this.draining) throw new ApiError(503, 'the server is shutting down', { retryAfter: 1 });
    if (this.queue.length + this.active.length >= this.opts.maxBatch + this.opts.maxQueue) {
      throw new ApiError(429, `the server is at capacity (${this.active.length} running, ${this.queue.length} queued); retry later`,
        { retryAfter: this.retryAfterSeconds() });
    }
    let resolve!: (r: JobResult) => void;
    const done = new Promise<JobResult>((r) => (resolve = r));
    const entry: Entry = {
      job,
      submitted: performance.now(),
      id: null,
      noise: new NoiseStream(job.seed, 0),
      counts: new TokenCounts(this.decoder.config.vocabSize),
      out: [],
      steps: 0,
      cancelled: false,
      resolve,
    };
    this.queue.push(entry);
    this.opts.metrics.queueDepth = this.queue.length;
    this.scheduleLoop();
    return {
      done,
      cancel: () => {
        if (entry.cancelled) return;
        entry.cancelled = true;
        const qi = this.queue.indexOf(entry);
        if (qi >= 0) {
          this.queue.splice(qi, 1);
          this.opts.metrics.queueDepth = this.queue.length;
          this.finish(entry, 'cancelled');
          this.settleDrain();
        }
      },
    };
  }

  /** Refuses new requests and resolves once every queued and running request has finished. */
  drain(): Promise<void> {
    this.draining = true;
    return new Promise((r) => {
      this.drainWaiters.push(r);
      this.settleDrain();
    });
  }

  private settleDrain(): void {
    if (!this.draining || this.queue.length > 0 || this.active.length > 0) return;
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const r of w) r();
  }

  private retryAfterSeconds(): number {
    // A slot frees when the closest-to-done running sequence ends; queued requests are ahead of the caller too.
    let minSteps = Infinity;
    for (const e of this.active) minSteps = Math.min(minSteps, Math.ceil((e.job.maxTokens - e.out.length) / this.tokensPerStep));
    if (!Number.isFinite(minSteps)) minSteps = 1;
    const rounds = 1 + Math.floor(this.queue.length / this.opts.maxBatch);
    return Math.min(60, Math.max(1, Math.ceil(minSteps * rounds * this.stepEma)));
  }

  private scheduleLoop(): void {
    if (this.loopScheduled) return;
    this.loopScheduled = true;
    // Started on a later turn so that requests arriving together join the same first step.
    setImmediate(() => {
      this.loop().catch((err: unknown) => this.failAll(err));
    });
  }

  /** Last resort for a bug in the loop itself: fail every request rather than leave clients hanging. */
  private failAll(err: unknown): void {
    for (const e of this.active) this.retire(e, 'error', err);
    for (const e of this.queue) this.finish(e, 'error', err);
    this.active = [];
    this.queue.length = 0;
    this.opts.metrics.queueDepth = 0;
    this.opts.metrics.activeSequences = 0;
    this.settleDrain();
  }

  private async loop(): Promise<void> {
    try {
      for (;;) {
        this.reap();
        this.admit();
        if (this.active.length === 0) break;
        this.step();
        this.settleDrain();
        for (let t = turnsBetweenSteps(this.stepEma); t > 0; t--) await yieldToEventLoop();
      }
    } finally {
      this.loopScheduled = false;
      this.opts.metrics.activeSequences = this.active.length;
      this.settleDrain();
      // A request may have been queued after the last admit of a loop that then found nothing to do.
      if (this.queue.length > 0) this.scheduleLoop();
    }
  }

  private reap(): void {
    if (!this.active.some((e) => e.cancelled)) return;
    const keep: Entry[] = [];
    for (const e of this.active) {
      if (e.cancelled) this.retire(e, 'cancelled');
      else keep.push(e);
    }
    this.active = keep;
  }

  private admit(): void {
    while (this.active.length < this.opts.maxBatch && this.queue.length > 0) {
      const e = this.queue.shift()!;
      try {
        e.id = this.decoder.open(e.job.prompt);
      } catch (err) {
        this.finish(e, 'error', err);
        continue;
      }
      this.opts.metrics.promptTokens += e.job.prompt.length;
      this.active.push(e);
    }
    this.opts.metrics.queueDepth = this.queue.length;
    this.opts.metrics.activeSequences = this.active.length;
  }

  private step(): void {
    const batch = this.active;
    const pflm = this.decoder.kind === 'pflm';
    const t0 = performance.now();
    let chosen: (number[] | Error)[];
    try {
      chosen = decodeStep(this.decoder, batch.map((e) => ({
        id: e.id!, noise: e.noise, counts: e.counts,
        // the last step keeps only the slots it still needs (KFORCING.md section 6)
        slots: Math.min(this.opts.k, e.job.maxTokens - e.out.length), noiseEnd: e.job.maxTokens,
        temperature: e.job.temperature, topP: e.job.topP, penalty: e.job.penalty,
      })), { k: this.opts.k, scratch: this.scratch }).tokens;
    } catch (err) {
      // A failed forward pass fails the requests in it, not the process.
      for (const e of batch) this.retire(e, 'error', err);
      this.active = [];
      return;
    }
    let emittedTotal = 0;
    const keep: Entry[] = [];
    // a row that fails fails only its request
    for (let i = 0; i < batch.length; i++) {
      const e = batch[i];
      e.steps++;
      const c = chosen[i];
      if (c instanceof Error) {
        this.retire(e, 'error', c);
        continue;
      }
      let emitted = c;
      if (!pflm) e.counts.add(emitted[0]);
      emittedTotal += emitted.length;
      let reason: FinishReason | null = null;
      const eosAt = emitted.findIndex((t) => this.eos.has(t));
      if (eosAt >= 0) {
        emitted = emitted.slice(0, eosAt);
        reason = 'stop';
      }
      for (const t of emitted) e.out.push(t);
      if (emitted.length > 0 && e.job.onTokens) {
        try {
          if (e.job.onTokens(emitted) === true) reason = 'stop';
        } catch (err) {
          this.retire(e, 'error', err);
          continue;
        }
      }
      if (e.cancelled) reason = 'cancelled';
      if (reason === null && e.out.length >= e.job.maxTokens) reason = 'length';
      if (reason !== null) {
        this.retire(e, reason);
      } else {
        this.decoder.append(e.id!, emitted);
        keep.push(e);
      }
    }
    this.active = keep;
    const seconds = (performance.now() - t0) / 1000;
    this.stepEma = this.stepEma === 0 ? seconds : 0.8 * this.stepEma + 0.2 * seconds;
    this.opts.metrics.step(seconds, batch.length, emittedTotal);
    this.opts.metrics.activeSequences = this.active.length;
  }

  /** Frees a running sequence's cache and resolves its request. */
  private retire(e: Entry, reason: FinishReason, err?: unknown): void {
    if (e.id !== null) {
      this.decoder.close(e.id);
      e.id = null;
    }
    this.finish(e, reason, err);
  }

  private finish(e: Entry, reason: FinishReason, err?: unknown): void {
    const seconds = (performance.now() - e.submitted) / 1000;
    this.opts.metrics.finish(reason, reason === 'cancelled' || reason === 'error' ? null : seconds);
    const result: JobResult = { tokens: e.out, finishReason: reason, promptTokens: e.job.prompt.length, steps: e.steps, seconds };
    if (reason === 'error') result.error = err instanceof Error ? err : new Error(String(err));
    e.resolve(result);
  }
}
