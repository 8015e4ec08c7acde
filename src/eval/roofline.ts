// Roofline model of one decode step and of a whole fixed-length generation, for AR (k = 0) and PFLM (k >= 1).
// A step runs its kernels one after another, so its time is bounded below by the sum over its phases of
// max(bytes moved / DRAM bandwidth, FLOPs / GEMM rate), both rates measured in the same run as the benchmark: the
// block matmuls, the output layer, the noise encoder, attention over the KV cache, the logits handed to the sampler.
// (Session 11; before it the whole step was bounded by one max(bytes, FLOPs), which lets a memory-bound phase such as
// attention over a long cache hide under the matmuls' compute at large batches although nothing overlaps them.)
// What a step moves: every weight once (packed rows, ENGINEERING.md), the KV cache of every sequence once, the new
// K/V, the logits written and read back by the sampler. What it computes: the block matmuls for every row, attention
// over the visible keys, the output layer for the rows that need logits (1 per sequence for AR, the k noise rows for
// the PFLM: its k context rows need none), and the noise encoder for the noise rows.
// Per step AR feeds 1 token per sequence; the PFLM feeds 2k (the k tokens of the previous block plus k noises).
// A PFLM step with the screened output layer (src/decode/screen.ts) reads the int8 copy of the output weights (1 byte
// a weight, plus 16 bytes of bounds per row) instead of the fp32 matrix; its dot products (one int8 part of each
// activation, 4 multiply-adds per int32 lane per instruction) take a quarter of the instructions of the fp32 ones, at
// the host's int8 / fp32 instruction rate ratio (MachineRates.int8Ratio, measured by the benchmark: about 0.5 on the
// Zen 4 hosts of session 12, 1.0 on the Zen 5 hosts of session 16), so they count as 1 / (2 ratio) FLOPs per
// multiply-add against 2 for fp32; the candidates' second round and exact recomputation (a few hundred KB) are left
// out. Only steps of up to SCREEN_MAX_ROWS noise rows are screened (larger ones, unmeasured, compute the fp32 layer),
// and so the roofline.
import type { ModelConfig } from '../model/types.ts';
import { SCREEN_MAX_ROWS } from '../decode/screen.ts';
import { NOISE_ROWS_PER_PASS } from '../decode/noise.ts';

export interface MachineRates {
  /** DRAM read bandwidth, bytes per second. */
  bandwidth: number;
  /** Dense matmul rate, FLOP per second. */
  flops: number;
  /** int8 dot-product instructions (64 multiply-adds) per fp32 FMA instruction (16) on one core; absent: 0.5. */
  int8Ratio?: number;
}

/** The int8 / fp32 instruction rate ratio a roofline assumes when none was measured (session 12's hosts). */
export const DEFAULT_INT8_RATIO = 0.5;

/** The better of two readings, limit by limit (each a limit of the machine that other tenants can only push down). */
export function bestRates(a: MachineRates, b: MachineRates): MachineRates {
  const r: MachineRates = { bandwidth: Math.max(a.bandwidth, b.bandwidth), flops: Math.max(a.flops, b.flops) };
  const ratios = [a.int8Ratio, b.int8Ratio].filter((x): x is number => x !== undefined);
  if (ratios.length > 0) r.int8Ratio = Math.max(...ratios);
  return r;
}

/** Parameter counts of the parts a decode step reads. */
export function paramCounts(cfg: ModelConfig): { block: number; blocks: number; output: number; noiseEncoder: number; embedding: number } {
  const D = cfg.hiddenSize;
  const V = cfg.vocabSize;
  // qkv 3D^2 + out D^2 + mlp 8D^2 + mlp biases 5D + two norm weights 2D
  const block = 12 * D * D + 7 * D;
  // combined_proj (2D -> D, bias), norm (weight, bias), mlp D -> 4D -> D with biases
  const noiseEncoder = 2 * D * D + D + 2 * D + 4 * D * D + 4 * D + 4 * D * D + D;
  return { block, blocks: block * cfg.nBlocks, output: V * D + V + D, noiseEncoder, embedding: V * D };
}

export interface StepShape {
  /** Sequences in the step. */
  batch: number;
  /** Context tokens fed per sequence (committed to the cache). */
  newContext: number;
  /** Cache length per sequence before the step. */
  cached: number;
  /** Noise tokens per sequence (0 for AR). */
  noise: number;
  /** Rows per sequence that need logits: 1 for AR, the noise count for the PFLM. */
  outRows: number;
}

/** One kernel phase of a step: it runs alone, so it takes at least max(bytes / bandwidth, flops / GEMM rate). */
export interface StepPhase {
  name: 'blocks' | 'output' | 'noiseEncoder' | 'attention' | 'logits';
  bytes: number;
  flops: number;
}

export interface StepCost {
  rows: number;
  bytes: number;
  flops: number;
  /** Bytes of weights alone (the part independent of batch and context). */
  weightBytes: number;
  /** Bytes of KV cache read. */
  kvBytes: number;
  /** The same bytes and FLOPs by phase (they sum to `bytes` and `flops`). */
  phases: StepPhase[];
}

/**
 * Bytes moved and FLOPs of one step. `bytesPerWeight` is the storage width of the weights (4 for float32);
 * activations and the cache are float32. `screened`: a PFLM step's output layer is the int8 screen, whose
 * multiply-adds count as 1 / (2 int8Ratio) FLOPs each.
 */
export function stepCost(cfg: ModelConfig, s: StepShape, bytesPerWeight = 4, screened = false,
  int8Ratio = DEFAULT_INT8_RATIO): StepCost {
  if (!(int8Ratio > 0)) throw new Error(`stepCost: int8Ratio must be > 0, got ${int8Ratio}`);
  const D = cfg.hiddenSize;
  const V = cfg.vocabSize;
  const L = cfg.nBlocks;
  const p = paramCounts(cfg);
  const rowsPer = s.newContext + s.noise;
  const rows = s.batch * rowsPer;
  const outRows = s.batch * s.outRows;
  const screen = screened && s.noise > 0 && outRows > 0 && outRows <= SCREEN_MAX_ROWS;
  const blockBytes = (p.blocks + s.batch * s.newContext * D) * bytesPerWeight; // gathered embedding rows only
  const outputBytes = outRows === 0 ? 0 : screen
    // the screen: int8 weights, fp32 bias and final norm, four fp32 values per row (scale, bounds, sum)
    ? V * D + (V + D) * bytesPerWeight + V * 16
    : p.output * bytesPerWeight;
  // The decoders encode the noise of the next steps ahead (src/decode/noise.ts noiseAhead): one encoder pass, hence
  // one read of its weights, per floor(NOISE_ROWS_PER_PASS / (batch * noise)) steps (8 at batch 1, k = 4). Until
  // session 12 every step was charged the whole read (24 MB for the official shape), which made the PFLM's batch-1
  // prediction ~5% low.
  const aheadSteps = s.noise > 0 ? Math.max(1, Math.floor(NOISE_ROWS_PER_PASS / (s.batch * s.noise))) : 1;
  const noiseBytes = s.noise > 0 ? (p.noiseEncoder * bytesPerWeight) / aheadSteps : 0;
  const weightBytes = blockBytes + outputBytes + noiseBytes;
  const keysAfter = s.cached + s.newContext;
  const kvBytes = s.batch * L * keysAfter * 2 * D * 4;
  const kvWrite = s.batch * L * s.newContext * 2 * D * 4;
  const logitsBytes = 2 * outRows * V * 4;

  // Visible keys per row: context row i (0-based within the new ones) sees cached + i + 1 keys; noise row j sees all
  // cached and new context keys plus noises 1..j.
  let ctxKeys = 0, noiseKeys = 0;
  for (let i = 0; i < s.newContext; i++) ctxKeys += s.cached + i + 1;
  for (let j = 0; j < s.noise; j++) noiseKeys += keysAfter + j + 1;
  // A PFLM step's context rows stop after the last block's QKV projection (their K/V is all that is kept): no
  // attention, attention output or MLP there (backboneForward).
  const ctxLayers = s.noise > 0 ? L - 1 : L;
  const attnFlops = s.batch * 4 * D * (ctxKeys * ctxLayers + noiseKeys * L);
  const ctxRows = s.batch * s.newContext, noiseRows = s.batch * s.noise;
  const blockFlops = 2 * (12 * D * D) * (noiseRows * L + ctxRows * ctxLayers) + (L - ctxLayers) * 2 * ctxRows * 3 * D * D;
  const outFlops = (screen ? 1 / (2 * int8Ratio) : 2) * outRows * D * V;
  const noiseFlops = 2 * noiseRows * (10 * D * D);
  const all: StepPhase[] = [
    { name: 'blocks', bytes: blockBytes, flops: blockFlops },
    { name: 'output', bytes: outputBytes, flops: outFlops },
    { name: 'noiseEncoder', bytes: noiseBytes, flops: noiseFlops },
    { name: 'attention', bytes: kvBytes + kvWrite, flops: attnFlops },
    { name: 'logits', bytes: logitsBytes, flops: 0 },
  ];
  const phases = all.filter((ph) => ph.bytes > 0 || ph.flops > 0);
  return {
    rows, bytes: weightBytes + kvBytes + kvWrite + logitsBytes, flops: blockFlops + attnFlops + outFlops + noiseFlops,
    weightBytes, kvBytes, phases,
  };
}

/** Lower bound on a step's time: over its phases, the sum of the larger of each one's memory and compute time. */
export function stepSeconds(c: StepCost, m: MachineRates): number {
  let t = 0;
  for (const ph of c.phases) t += Math.max(ph.bytes / m.bandwidth, ph.flops / m.flops);
  return t;
}

/** Whether a step's bound is mostly memory time: its memory-bound phases take at least half of it. */
export function stepMemoryBound(c: StepCost, m: MachineRates): boolean {
  let mem = 0, comp = 0;
  for (const ph of c.phases) {
    const a = ph.bytes / m.bandwidth, b = ph.flops / m.flops;
    if (a >= b) mem += a;
    else comp += b;
  }
  return mem >= comp;
}

export interface RunShape {
  batch: number;
  /** 0 = AR, else the PFLM's tokens per step. */
  k: number;
  promptLength: number;
  newTokens: number;
}

export interface RunPrediction {
  steps: number;
  seconds: number;
  tokensPerSecond: number;
  /** Forward passes per generated token (per sequence). */
  passesPerToken: number;
  /** Cost of the first step after the prompt step (the steady state at short context). */
  typicalStep: StepCost;
  /** Whether that typical step is bandwidth bound. */
  memoryBound: boolean;
  /** Mean bytes and FLOPs per step over the run. */
  meanBytes: number;
  meanFlops: number;
}

/** Sums the step bounds over a whole generation of `newTokens` per sequence after a prompt of `promptLength`. */
export function predictRun(cfg: ModelConfig, r: RunShape, m: MachineRates, bytesPerWeight = 4, screened = false): RunPrediction {
  if (!(r.batch >= 1 && r.newTokens >= 1 && r.promptLength >= 1 && r.k >= 0)) {
    throw new Error(`predictRun: batch, newTokens and promptLength must be >= 1 and k >= 0, got ${JSON.stringify(r)}`);
  }
  const shapes: StepShape[] = [];
  if (r.k === 0) {
    for (let t = 0; t < r.newTokens; t++) {
      shapes.push(t === 0
        ? { batch: r.batch, newContext: r.promptLength, cached: 0, noise: 0, outRows: 1 }
        : { batch: r.batch, newContext: 1, cached: r.promptLength + t - 1, noise: 0, outRows: 1 });
    }
  } else {
    let done = 0;
    let prevBlock = 0;
    while (done < r.newTokens) {
      const kk = Math.min(r.k, r.newTokens - done);
      shapes.push(done === 0
        ? { batch: r.batch, newContext: r.promptLength, cached: 0, noise: kk, outRows: kk }
        : { batch: r.batch, newContext: prevBlock, cached: r.promptLength + done - prevBlock, noise: kk, outRows: kk });
      prevBlock = kk;
      done += kk;
    }
  }
  let seconds = 0;
  let bytes = 0;
  let flops = 0;
  const costs = shapes.map((s) => stepCost(cfg, s, bytesPerWeight, screened, m.int8Ratio ?? DEFAULT_INT8_RATIO));
  for (const c of costs) {
    seconds += stepSeconds(c, m);
    bytes += c.bytes;
    flops += c.flops;
  }
  const typical = costs[Math.min(1, costs.length - 1)];
  return {
    steps: shapes.length,
    seconds,
    tokensPerSecond: (r.batch * r.newTokens) / seconds,
    passesPerToken: shapes.length / r.newTokens,
    typicalStep: typical,
    memoryBound: stepMemoryBound(typical, m),
    meanBytes: bytes / shapes.length,
    meanFlops: flops / shapes.length,
  };
}

/** Predicted speedup of PFLM k over AR at the same batch size and lengths. */
export function predictSpeedup(cfg: ModelConfig, shape: Omit<RunShape, 'k'>, k: number, m: MachineRates, bytesPerWeight = 4,
  screened = false): number {
  const ar = predictRun(cfg, { ...shape, k: 0 }, m, bytesPerWeight);
  const pf = predictRun(cfg, { ...shape, k }, m, bytesPerWeight, screened);
  return ar.seconds / pf.seconds;
}
