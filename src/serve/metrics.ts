// Serving metrics in the Prometheus text exposition format (version 0.0.4). Counters and histograms are cumulative;
// the tokens/s gauge is computed over a sliding window so a scrape shows the current rate without a PromQL rate().

import type { DecoderStats } from '../model/types.ts';

const STEP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const REQUEST_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256];
const RATE_WINDOW_S = 10;

class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly buckets: number[]) {
    this.counts = new Array<number>(buckets.length).fill(0);
  }
  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]) this.counts[i]++;
  }
  render(name: string): string[] {
    const lines = this.buckets.map((b, i) => `${name}_bucket{le="${b}"} ${this.counts[i]}`);
    lines.push(`${name}_bucket{le="+Inf"} ${this.count}`, `${name}_sum ${this.sum}`, `${name}_count ${this.count}`);
    return lines;
  }
}

export type FinishReason = 'length' | 'stop' | 'cancelled' | 'error';

export class ServeMetrics {
  private readonly started = performance.now();
  /** The decoder's KV pool bookkeeping, read at each scrape (null: not reported). */
  kvSource: (() => DecoderStats) | null = null;
  private readonly responses = new Map<number, number>();
  private readonly finished = new Map<FinishReason, number>();
  promptTokens = 0;
  generatedTokens = 0;
  steps = 0;
  queueDepth = 0;
  activeSequences = 0;
  lastBatchSize = 0;
  private readonly stepLatency = new Histogram(STEP_BUCKETS);
  private readonly requestLatency = new Histogram(REQUEST_BUCKETS);
  private readonly batchSize = new Histogram(BATCH_BUCKETS);
  // (time ms, tokens) of recent steps, oldest first, for the windowed rate.
  private readonly recent: Array<[number, number]> = [];

  /** Counts one answered /v1/completions request by HTTP status. */
  response(status: number): void {
    this.responses.set(status, (this.responses.get(status) ?? 0) + 1);
  }

  finish(reason: FinishReason, seconds: number | null): void {
    this.finished.set(reason, (this.finished.get(reason) ?? 0) + 1);
    if (seconds !== null) this.requestLatency.observe(seconds);
  }

  step(seconds: number, batch: number, tokens: number): void {
    this.steps++;
    this.lastBatchSize = batch;
    this.generatedTokens += tokens;
    this.stepLatency.observe(seconds);
    this.batchSize.observe(batch);
    const now = performance.now();
    this.recent.push([now, tokens]);
    this.prune(now);
  }

  private prune(now: number): void {
    let drop = 0;
    while (drop < this.recent.length && now - this.recent[drop][0] > RATE_WINDOW_S * 1000) drop++;
    if (drop > 0) this.recent.splice(0, drop);
  }

  /** Generated tokens per second over the last RATE_WINDOW_S seconds (or since start, if younger). */
  tokensPerSecond(): number {
    const now = performance.now();
    this.prune(now);
    const span = Math.min(RATE_WINDOW_S, (now - this.started) / 1000);
    if (span <= 0) return 0;
    let sum = 0;
    for (const [, t] of this.recent) sum += t;
    return sum / span;
  }

  render(): string {
    const out: string[] = [];
    const metric = (name: string, type: string, help: string, lines: string[]): void => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...lines);
    };
    const statuses = [...this.responses.entries()].sort((a, b) => a[0] - b[0]);
    metric('kforce_requests_total', 'counter', 'Completion requests answered, by HTTP status.',
      statuses.length ? statuses.map(([s, n]) => `kforce_requests_total{code="${s}"} ${n}`) : ['kforce_requests_total{code="200"} 0']);
    const reasons: FinishReason[] = ['length', 'stop', 'cancelled', 'error'];
    metric('kforce_completions_total', 'counter', 'Sequences that left the batch, by finish reason.',
      reasons.map((r) => `kforce_completions_total{finish_reason="${r}"} ${this.finished.get(r) ?? 0}`));
    metric('kforce_prompt_tokens_total', 'counter', 'Prompt tokens admitted into the batch.', [`kforce_prompt_tokens_total ${this.promptTokens}`]);
    metric('kforce_generated_tokens_total', 'counter', 'Tokens generated.', [`kforce_generated_tokens_total ${this.generatedTokens}`]);
    metric('kforce_generated_tokens_per_second', 'gauge', `Generated tokens per second over the last ${RATE_WINDOW_S} s.`,
      [`kforce_generated_tokens_per_second ${this.tokensPerSecond().toFixed(3)}`]);
    metric('kforce_queue_depth', 'gauge', 'Requests waiting to join the batch.', [`kforce_queue_depth ${this.queueDepth}`]);
    metric('kforce_active_sequences', 'gauge', 'Sequences in the running batch.', [`kforce_active_sequences ${this.activeSequences}`]);
    metric('kforce_batch_size', 'gauge', 'Sequences in the most recent step.', [`kforce_batch_size ${this.lastBatchSize}`]);
    metric('kforce_steps_total', 'counter', 'Decoder steps (one forward pass each).', [`kforce_steps_total ${this.steps}`]);
    metric('kforce_step_batch_size', 'histogram', 'Sequences per step.', this.batchSize.render('kforce_step_batch_size'));
    metric('kforce_step_latency_seconds', 'histogram', 'Wall time of one decoder step (forward pass and token selection).',
      this.stepLatency.render('kforce_step_latency_seconds'));
    metric('kforce_request_latency_seconds', 'histogram', 'Time from admission to the queue to the last token.',
      this.requestLatency.render('kforce_request_latency_seconds'));
    if (this.kvSource) {
      const kv = this.kvSource();
      metric('kforce_kv_pages', 'gauge', `KV cache pages allocated (${kv.pageRows} positions of every layer each).`, [`kforce_kv_pages ${kv.pages}`]);
      metric('kforce_kv_pages_used', 'gauge', 'KV cache pages holding running sequences.', [`kforce_kv_pages_used ${kv.usedPages}`]);
      metric('kforce_kv_grows_total', 'counter', 'Times the KV pool was reallocated larger (each copies it), the start-up reservation included.',
        [`kforce_kv_grows_total ${kv.grows}`]);
      metric('kforce_kv_compactions_total', 'counter', 'Times the KV pool was compacted to make room above a sequence\'s last page.',
        [`kforce_kv_compactions_total ${kv.compactions}`]);
    }
    return out.join('\n') + '\n';
  }
}
