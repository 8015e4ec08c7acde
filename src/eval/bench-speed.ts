// Decode throughput of AR vs PFLM k = 1..K (KFORCING.md section 7): 6-token prefixes completed to a fixed length at
// several batch sizes, warm-up excluded, every configuration measured in the same run (AR first, then each k,
// repeated in rounds so drifting machine bandwidth hits all of them alike), with the roofline prediction computed
// from the DRAM bandwidth and GEMM rate measured in this same run.
import os from 'node:os';
import type { BatchDecoder, ModelConfig } from '../model/types.ts';
import { generate } from '../decode/generate.ts';
import { screensOutput } from '../decode/screen.ts';
import { Rng } from '../tensor/rng.ts';
import { hugePages, packedLinears } from '../tensor/native.ts';
import { median } from './metrics.ts';
import { bestRates, DEFAULT_INT8_RATIO, predictRun, type MachineRates, type RunPrediction } from './roofline.ts';
import { markdownTable, num, textTable, type Cell } from './report.ts';
import { lineChart } from './svg.ts';

export interface SpeedModels {
  ar: BatchDecoder;
  pflm: BatchDecoder;
  /** Bytes per stored weight (4 for float32). */
  bytesPerWeight?: number;
  /** What the models are, for reports (e.g. 'random weights, 12 blocks, D=768, V=50258'). */
  description: string;
}

export interface SpeedOptions {
  batches: number[];
  /** PFLM k values (default 1..maxK). */
  ks?: number[];
  newTokens: number;
  promptLength?: number;
  /** Timed rounds per configuration; the median is reported. */
  repeats?: number;
  /** Tokens generated per configuration before timing (JIT, workspaces, KV arena). */
  warmupTokens?: number;
  seed?: number;
  /** First token of every prompt (BOS); the rest are random non-mask ids. Default: random too. */
  bos?: number;
  /** Measures the machine's rates; called after the warm-up of every batch size. The roofline uses the best of these
   * readings: a limit of the machine, which other tenants of a shared host can only push down for a while. */
  measureRates: () => MachineRates;
  onProgress?: (message: string) => void;
}

export interface SpeedResult {
  batch: number;
  /** 0 = AR. */
  k: number;
  tokensPerSecond: number;
  /** tokens/s over the AR tokens/s of the same batch size and run. */
  speedup: number;
  predictedSpeedup: number;
  predictedTokensPerSecond: number;
  /** Median wall time of one generation of batch x newTokens tokens. */
  seconds: number;
  /** Forward passes per generated token per sequence (1 for AR, ceil(N/k)/N for the PFLM). */
  passesPerToken: number;
  /** Share of the wall time spent selecting tokens (samplers, penalties) rather than in forward passes. */
  selectShare: number;
  /** Roofline of the typical (second) step. */
  stepBytes: number;
  stepFlops: number;
  memoryBound: boolean;
}

export interface SpeedReport {
  description: string;
  config: ModelConfig;
  newTokens: number;
  promptLength: number;
  repeats: number;
  /** The roofline's rates: the best bandwidth, GEMM rate and int8 / fp32 instruction rate among rateSamples. */
  rates: MachineRates;
  /** The readings taken in the run, one after the warm-up of each batch size. */
  rateSamples: MachineRates[];
  /** Whether the PFLM's steps used the screened output layer (src/decode/screen.ts), which the roofline then models. */
  screenedOutput: boolean;
  /** Whether the native backend placed large buffers and weights on transparent huge pages (tensor/native.ts). */
  hugePages: boolean;
  /** Whether the native linear ran 9-64-row calls from packed weight copies (tensor/native.ts packedLinears). */
  packedLinears: boolean;
  results: SpeedResult[];
}

/** Random prompts of `length` tokens (BOS first when given), never the [MASK] id. */
export function randomPrompts(n: number, length: number, cfg: ModelConfig, seed: number, bos?: number): number[][] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => Array.from({ length }, (_, i) => {
    if (i === 0 && bos !== undefined) return bos;
    let t = rng.int(cfg.vocabSize - 1);
    if (t >= cfg.maskIndex) t++;
    return t;
  }));
}

/**
 * Upper estimate of the KV memory the benchmark's two decoders (AR and PFLM, each kept for reuse) can hold at once: a
 * sequence's cache segment grows by doubling from 16 rows, and an arena may transiently hold its old and new copy.
 */
export function kvMemoryEstimate(cfg: ModelConfig, batch: number, rowsPerSeq: number): number {
  let cap = 16;
  while (cap < rowsPerSeq) cap *= 2;
  return 2 * 2 * batch * cap * cfg.nBlocks * 2 * cfg.hiddenSize * 4;
}

function checkList(name: string, xs: number[], lo: number, hi = Number.MAX_SAFE_INTEGER): void {
  if (!Array.isArray(xs) || xs.length === 0) throw new Error(`bench speed: ${name} must be a non-empty list`);
  for (const x of xs) {
    if (!Number.isInteger(x) || x < lo || x > hi) throw new Error(`bench speed: ${name} value ${x} is outside ${lo}..${hi}`);
  }
}

export function runSpeedBench(models: SpeedModels, opts: SpeedOptions): SpeedReport {
  const { ar, pflm } = models;
  if (ar.kind !== 'ar' || pflm.kind !== 'pflm') throw new Error('bench speed: needs an AR model and a PFLM');
  const cfg = pflm.config;
  for (const f of ['vocabSize', 'hiddenSize', 'nHeads', 'nBlocks'] as const) {
    if (ar.config[f] !== cfg[f]) throw new Error(`bench speed: AR and PFLM differ in ${f} (${ar.config[f]} vs ${cfg[f]}); compare the same architecture`);
  }
  const ks = opts.ks ?? Array.from({ length: cfg.maxK }, (_, i) => i + 1);
  checkList('batch sizes', opts.batches, 1);
  checkList('k values', ks, 1, cfg.maxK);
  const N = opts.newTokens;
  if (!Number.isInteger(N) || N < 1) throw new Error(`bench speed: newTokens must be an integer >= 1, got ${N}`);
  const P = opts.promptLength ?? 6;
  const repeats = opts.repeats ?? 1;
  if (!Number.isInteger(repeats) || repeats < 1) throw new Error(`bench speed: repeats must be >= 1, got ${repeats}`);
  const warm = Math.min(N, opts.warmupTokens ?? 8);
  const seed = opts.seed ?? 0;
  const log = opts.onProgress ?? (() => {});
  const bpw = models.bytesPerWeight ?? 4;
  const configs = [0, ...ks];
  const maxB = Math.max(...opts.batches);
  const kvBytes = kvMemoryEstimate(cfg, maxB, P + N + Math.max(...ks));
  if (kvBytes > 0.75 * os.totalmem()) {
    throw new Error(`bench speed: batch ${maxB} x ${P + N} tokens needs up to ${(kvBytes / 2 ** 30).toFixed(1)} GiB of KV cache, ` +
      `more than this machine's ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB allows; lower --batch or --new-tokens`);
  }
  const run = (k: number, prompts: number[][], n: number) => (k === 0
    ? generate(ar, prompts, { maxNewTokens: n, seed, eos: [] })
    : generate(pflm, prompts, { maxNewTokens: n, seed, k, eos: [] }));

  let rates: MachineRates | null = null;
  const samples: MachineRates[] = [];
  const timed: Array<{ B: number; times: Map<number, number[]>; passes: Map<number, number>; shares: Map<number, number[]> }> = [];
  for (const B of opts.batches) {
    const prompts = randomPrompts(B, P, cfg, seed + B, opts.bos);
    // Warm-up: JIT, workspaces, and a KV cache sized for the whole run, so the first timed round does not pay for
    // growing it (measured: ~10% of a 1018-token k=4 round at batch 1).
    ar.preallocate?.(B, P + N + 1);
    pflm.preallocate?.(B, P + N + Math.max(...ks));
    for (const k of configs) {
      log(`batch ${B}: warm-up ${k === 0 ? 'AR' : `k=${k}`} (${warm} tokens)`);
      run(k, prompts, warm);
    }
    log('measuring DRAM read bandwidth and GEMM rate');
    const m = opts.measureRates();
    samples.push(m);
    rates = rates ? bestRates(rates, m) : m;
    log(`bandwidth ${(m.bandwidth / 1e9).toFixed(1)} GB/s, GEMM ${(m.flops / 1e9).toFixed(0)} GFLOP/s` +
      (m.int8Ratio !== undefined ? `, int8 / fp32 instruction rate ${m.int8Ratio.toFixed(2)}` : '') +
      (samples.length > 1 ? ` (best so far ${(rates.bandwidth / 1e9).toFixed(1)} GB/s, ${(rates.flops / 1e9).toFixed(0)} GFLOP/s)` : ''));
    const times = new Map<number, number[]>(configs.map((k) => [k, []]));
    const passes = new Map<number, number>();
    const shares = new Map<number, number[]>(configs.map((k) => [k, []]));
    for (let r = 0; r < repeats; r++) {
      for (const k of configs) {
        const t0 = process.hrtime.bigint();
        const g = run(k, prompts, N);
        const s = Number(process.hrtime.bigint() - t0) / 1e9;
        times.get(k)!.push(s);
        passes.set(k, g.seqSteps[0] / N);
        shares.get(k)!.push(g.selectSeconds / s);
        log(`batch ${B} ${k === 0 ? 'AR ' : `k=${k}`} round ${r + 1}/${repeats}: ${s.toFixed(2)} s, ${((B * N) / s).toFixed(1)} tok/s`);
      }
    }
    timed.push({ B, times, passes, shares });
  }
  // Predictions once every reading is in, so that all batch sizes share one roofline.
  const screened = screensOutput(pflm);
  const results: SpeedResult[] = [];
  for (const { B, times, passes, shares } of timed) {
    const pred = new Map<number, RunPrediction>(configs.map((k) => [k, predictRun(cfg, { batch: B, k, promptLength: P, newTokens: N }, rates!, bpw, screened)]));
    const arSeconds = median(times.get(0)!);
    for (const k of configs) {
      const s = median(times.get(k)!);
      const p = pred.get(k)!;
      results.push({
        batch: B, k,
        tokensPerSecond: (B * N) / s,
        speedup: arSeconds / s,
        predictedSpeedup: pred.get(0)!.seconds / p.seconds,
        predictedTokensPerSecond: p.tokensPerSecond,
        seconds: s,
        passesPerToken: passes.get(k)!,
        selectShare: median(shares.get(k)!),
        stepBytes: p.typicalStep.bytes,
        stepFlops: p.typicalStep.flops,
        memoryBound: p.memoryBound,
      });
    }
  }
  return {
    description: models.description, config: cfg, newTokens: N, promptLength: P, repeats, rates: rates!, rateSamples: samples,
    screenedOutput: screened, hugePages: hugePages(), packedLinears: packedLinears(), results,
  };
}

// ---- reports -------------------------------------------------------------------------------------------------

const label = (k: number) => (k === 0 ? 'AR' : `PFLM k=${k}`);

function rows(r: SpeedReport): Cell[][] {
  return r.results.map((x) => [
    x.batch, label(x.k), x.tokensPerSecond, x.speedup, x.predictedSpeedup, x.k === 0 ? '-' : num(x.speedup / x.predictedSpeedup, 2),
    x.predictedTokensPerSecond, x.tokensPerSecond / x.predictedTokensPerSecond, x.passesPerToken,
    `${(x.selectShare * 100).toFixed(0)}%`, x.stepBytes / 1e6, x.stepFlops / 1e9,
    x.memoryBound ? 'memory' : 'compute',
  ]);
}

const HEADERS = ['batch', 'model', 'tokens/s', 'speedup', 'predicted speedup', 'measured / predicted', 'roofline tokens/s', '% of roofline',
  'passes/token', 'selection time', 'MB/step', 'GFLOP/step', 'bound'];

export function speedText(r: SpeedReport): string {
  const rs = rows(r).map((row) => row.map((c, j) => (j === 7 ? `${((c as number) * 100).toFixed(0)}%` : c)));
  return textTable(HEADERS, rs);
}

/** A narrow table for the demo: throughput, speedup (measured and predicted) and passes per token. */
export function speedTextCompact(r: SpeedReport): string {
  return textTable(['batch', 'model', 'tokens/s', 'speedup', 'predicted', 'passes/token'],
    r.results.map((x) => [x.batch, label(x.k), x.tokensPerSecond, x.speedup, x.predictedSpeedup, x.passesPerToken]));
}

/** The run's bandwidth / GEMM readings, as text. */
function rateReadings(r: SpeedReport): string {
  const gb = r.rateSamples.map((m) => num(m.bandwidth / 1e9)).join(', ');
  const gf = r.rateSamples.map((m) => num(m.flops / 1e9)).join(', ');
  return `${r.rateSamples.length} reading(s), one per batch size: ${gb} GB/s; ${gf} GFLOP/s`;
}

export function speedMarkdown(r: SpeedReport): string {
  const rs = rows(r).map((row) => row.map((c, j) => (j === 7 ? `${((c as number) * 100).toFixed(0)}%` : c)));
  const head = `Models: ${r.description}. ${r.promptLength}-token prefixes, ${r.newTokens} new tokens, median of ` +
    `${r.repeats} round(s) after warm-up. Roofline from this run: DRAM read ${num(r.rates.bandwidth / 1e9)} GB/s, ` +
    `GEMM ${num(r.rates.flops / 1e9)} GFLOP/s (best of ${rateReadings(r)}); a step is bounded by the sum over its phases (block matmuls, output layer, noise encoder, attention, logits) of max(bytes / bandwidth, FLOPs / GEMM rate), the noise encoder's weights counted once per encoder pass (the decoders encode up to 32 noise rows ahead); ` +
    'MB/step and GFLOP/step are for the second step (steady state); per step AR feeds 1 token per sequence, the ' +
    'PFLM 2k (k emitted + k noise). Selection time: share of the wall time spent choosing tokens (AR: float64 ' +
    'softmax and inverse CDF over the vocabulary per token; PFLM: penalised argmax per slot), outside the forward passes' +
    (r.screenedOutput
      ? '; the PFLM picks its tokens inside the step: its output layer is screened (int8 bounds on every logit, exact ' +
        'fp32 logits for the candidates only: the same tokens), and the roofline counts the int8 weights it reads and ' +
        `its int8 dot products at ${num(r.rates.int8Ratio ?? DEFAULT_INT8_RATIO, 2)} times the fp32 FMA instruction rate ` +
        `(${r.rates.int8Ratio === undefined ? 'assumed' : 'measured in this run'}: 1 / (2 x that) FLOPs per multiply-add).`
      : '.') +
    ` Memory: transparent huge pages ${r.hugePages ? 'on' : 'off'} (KFORCE_LIN_HUGE; see tensor/native.ts hugePages);` +
    ` packed weights for linears of 9-64 rows ${r.packedLinears ? 'on' : 'off'} (tensor/native.ts packedLinears).\n\n`;
  return head + markdownTable(HEADERS, rs);
}

export function speedChart(r: SpeedReport): string {
  const ks = [...new Set(r.results.map((x) => x.k))].filter((k) => k > 0).sort((a, b) => a - b);
  const batches = [...new Set(r.results.map((x) => x.batch))].sort((a, b) => a - b);
  const log2 = batches.every((b) => b > 0) && batches.length > 1;
  return lineChart({
    title: `PFLM speedup over AR (${r.newTokens} new tokens)`,
    xLabel: 'batch size', yLabel: 'speedup (tokens/s over AR)',
    xScale: log2 ? 'log2' : 'linear', xTicks: batches,
    series: [
      ...ks.map((k) => ({ name: `k=${k}`, points: r.results.filter((x) => x.k === k).map((x) => [x.batch, x.speedup] as [number, number]) })),
      ...(ks.length > 0 ? [{ name: `k=${ks[ks.length - 1]} predicted`, dashed: true, points: r.results.filter((x) => x.k === ks[ks.length - 1]).map((x) => [x.batch, x.predictedSpeedup] as [number, number]) }] : []),
    ],
    hLines: [{ y: 1, label: 'AR' }],
  });
}

/** The JSON object printed as the last line of `bench speed --json`. */
export function speedJson(r: SpeedReport): object {
  return {
    description: r.description,
    config: r.config,
    newTokens: r.newTokens,
    promptLength: r.promptLength,
    repeats: r.repeats,
    bandwidthGBs: r.rates.bandwidth / 1e9,
    gemmGflops: r.rates.flops / 1e9,
    ...(r.rates.int8Ratio !== undefined ? { int8Ratio: r.rates.int8Ratio } : {}),
    rateSamples: r.rateSamples.map((m) => ({ bandwidthGBs: m.bandwidth / 1e9, gemmGflops: m.flops / 1e9 })),
    screenedOutput: r.screenedOutput,
    hugePages: r.hugePages,
    packedLinears: r.packedLinears,
    results: r.results.map((x) => ({
      batch: x.batch, k: x.k, tokensPerSecond: x.tokensPerSecond, speedup: x.speedup, predictedSpeedup: x.predictedSpeedup,
      predictedTokensPerSecond: x.predictedTokensPerSecond, seconds: x.seconds, passesPerToken: x.passesPerToken,
      selectShare: x.selectShare,
      stepBytes: x.stepBytes, stepFlops: x.stepFlops, memoryBound: x.memoryBound,
    })),
  };
}
