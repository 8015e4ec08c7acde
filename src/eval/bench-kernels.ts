// Kernel-level benchmarks of the native backend, measured side by side in one run (bandwidth on these shared
// machines drifts between runs, so every ratio here uses a bound measured in the same process):
//  - DRAM read bandwidth (2-thread streaming sum over a 512 MB buffer);
//  - GFLOP/s of kforce `linear` and of OpenBLAS alone (sgemv for one row, sgemm otherwise) on the model's shapes;
//  - the decode matmul sweep: every weight matrix of the official architecture streamed once per pass for a given
//    number of rows, against the time DRAM needs to deliver those weights.
// Library functions only; `kforce bench` and scripts/bench-kernels.ts print them.
import { alignedFloat32, blasLinear, fmaPeak, loadNativeBackend, readBandwidth } from '../tensor/native.ts';
import type { Backend } from '../tensor/backend.ts';

/** The fp32 FMA peak ENGINEERING.md quotes for 2 threads. On the Zen 5 hosts seen so far (two 512-bit FMAs per cycle)
 * one core alone reaches it, so the 2-thread peak is about twice this: benchmarks also measure it (measureFmaPeak). */
export const PEAK_GFLOPS_2T = 231;

export interface PeakResult {
  /** Best of the repetitions: independent FMA chains on all native threads, GFLOP/s. */
  gflops: number;
}

export interface BandwidthResult {
  bytes: number;
  /** Best of the repetitions, GB/s (1e9 bytes/s). */
  gbPerS: number;
}

export interface LinearShapeResult {
  M: number; K: number; N: number;
  /** Median ms per call after warm-up. */
  kforceMs: number;
  kforceGflops: number;
  /** OpenBLAS alone on the same shape; null when the addon was built without BLAS. */
  blasMs: number | null;
  blasGflops: number | null;
}

export interface DecodeSweepRow {
  rows: number;
  /** Median ms per pass over all weight matrices. */
  ms: number;
  /** Fastest pass. */
  bestMs: number;
  /** Weight bytes / measured bandwidth: the DRAM-bound time of one pass. */
  boundMs: number;
  /** boundMs / ms: 1.0 means the pass runs at the measured read bandwidth. */
  fractionOfBound: number;
  gflops: number;
  /** ms per pass with OpenBLAS alone (null when not measured or no BLAS). */
  blasMs: number | null;
}

export interface DecodeSweepResult {
  weightBytes: number;
  bandwidthGBs: number;
  boundMs: number;
  matrices: Array<{ name: string; N: number; K: number; bias: boolean; count: number }>;
  rows: DecodeSweepRow[];
}

export interface KernelBenchResult {
  backend: { name: string; blas: string; threads: number };
  peak: PeakResult;
  bandwidth: BandwidthResult;
  linear: LinearShapeResult[];
  decode: DecodeSweepResult;
}

function requireNative(): Backend {
  const { backend, error } = loadNativeBackend();
  if (!backend) throw new Error(`bench-kernels: the native backend is required (${error})`);
  return backend;
}

/** Whether the addon was built with a BLAS (blasLinear is a no-op returning false otherwise). */
function hasBlas(): boolean {
  const t = new Float32Array(1);
  return blasLinear(t, t.slice(), t.slice(), 1, 1, 1);
}

function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Deterministic pseudo-random fill in [-0.5, 0.5) (values do not matter for speed, only that they are not 0/denormal). */
function fill(a: Float32Array, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  for (let i = 0; i < a.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 4294967296 - 0.5;
  }
  return a;
}

/** Runs fn `warmup` times, then times it until `reps` runs and at least `minMs` have passed; returns all times. */
function timeIt(fn: () => void, opts: { warmup: number; reps: number; minMs: number; maxReps?: number }): number[] {
  for (let i = 0; i < opts.warmup; i++) fn();
  const times: number[] = [];
  const t0 = nowMs();
  const maxReps = opts.maxReps ?? 1000;
  while (times.length < opts.reps || (nowMs() - t0 < opts.minMs && times.length < maxReps)) {
    const t = nowMs();
    fn();
    times.push(nowMs() - t);
  }
  return times;
}

/** Compute peak available right now: FMA chains on all native threads, best of `reps` runs of `ms` each. */
export function measureFmaPeak(opts: { ms?: number; reps?: number } = {}): PeakResult {
  requireNative();
  let best = 0;
  for (let i = 0; i < (opts.reps ?? 3); i++) best = Math.max(best, fmaPeak(opts.ms ?? 150));
  return { gflops: best };
}

/** DRAM read bandwidth: 2-thread streaming sum over a buffer much larger than the 32 MiB L3. */
export function measureReadBandwidth(opts: { megabytes?: number; reps?: number; buffer?: Float32Array } = {}): BandwidthResult {
  requireNative();
  const buf = opts.buffer ?? fill(alignedFloat32(((opts.megabytes ?? 512) << 20) / 4), 1);
  readBandwidth(buf, 1); // page in
  return { bytes: buf.length * 4, gbPerS: readBandwidth(buf, opts.reps ?? 5) };
}

export const DEFAULT_LINEAR_SHAPES: ReadonlyArray<readonly [number, number, number]> = [
  [1, 768, 3072], [8, 768, 3072], [64, 768, 3072], [512, 768, 3072],
];

/** GFLOP/s of kforce `linear` and of OpenBLAS for shapes [M,K] x [K,N] (weights [N,K]); median after warm-up. */
export function benchLinearShapes(opts: { shapes?: ReadonlyArray<readonly [number, number, number]>; minMs?: number } = {}):
  LinearShapeResult[] {
  const be = requireNative();
  const out: LinearShapeResult[] = [];
  for (const [M, K, N] of opts.shapes ?? DEFAULT_LINEAR_SHAPES) {
    const x = fill(alignedFloat32(M * K), 2), w = fill(alignedFloat32(N * K), 3), o = alignedFloat32(M * N);
    const flops = 2 * M * K * N;
    const minMs = opts.minMs ?? 400;
    const reps = Math.max(5, Math.min(200, Math.ceil(2e9 / flops)));
    const tk = median(timeIt(() => be.linear(o, x, w, null, M, K, N), { warmup: 3, reps, minMs }));
    const tb = hasBlas() ? median(timeIt(() => blasLinear(o, x, w, M, K, N), { warmup: 3, reps, minMs })) : null;
    out.push({
      M, K, N, kforceMs: tk, kforceGflops: flops / tk / 1e6,
      blasMs: tb, blasGflops: tb === null ? null : flops / tb / 1e6,
    });
  }
  return out;
}

/** Weight matrices of one decode step of the official architecture (12 blocks, D = 768, V = 50258). */
export function officialDecodeMatrices(cfg: { nBlocks?: number; D?: number; V?: number } = {}) {
  const L = cfg.nBlocks ?? 12, D = cfg.D ?? 768, V = cfg.V ?? 50258;
  return [
    { name: 'attn_qkv', N: 3 * D, K: D, bias: false, count: L },
    { name: 'attn_out', N: D, K: D, bias: false, count: L },
    { name: 'mlp.0', N: 4 * D, K: D, bias: true, count: L },
    { name: 'mlp.2', N: D, K: 4 * D, bias: true, count: L },
    { name: 'output_layer', N: V, K: D, bias: true, count: 1 },
  ];
}

/** Streams all decode weights once per pass for each row count (kforce `linear`; optionally OpenBLAS too). */
export function benchDecodeSweep(opts: {
  rows?: number[]; reps?: number; blasUpTo?: number; bandwidthGBs?: number;
  config?: { nBlocks?: number; D?: number; V?: number };
} = {}): DecodeSweepResult {
  const be = requireNative();
  const matrices = officialDecodeMatrices(opts.config);
  // One separate buffer per matrix instance, as in a real model: nothing is re-read from cache between layers.
  const weights = matrices.flatMap((m, mi) => Array.from({ length: m.count }, (_, i) => ({
    m, w: fill(alignedFloat32(m.N * m.K), 100 + mi * 50 + i), b: m.bias ? fill(alignedFloat32(m.N), 7) : null,
  })));
  const weightBytes = weights.reduce((s, { m }) => s + m.N * m.K * 4, 0) +
    weights.reduce((s, { m }) => s + (m.bias ? m.N * 4 : 0), 0);
  const rowsList = opts.rows ?? [1, 2, 4, 8, 16, 32, 64, 128, 512];
  const maxRows = Math.max(...rowsList);
  const maxK = Math.max(...matrices.map((m) => m.K)), maxN = Math.max(...matrices.map((m) => m.N));
  const x = fill(alignedFloat32(maxRows * maxK), 5), y = alignedFloat32(maxRows * maxN);
  const flopsPerRow = weights.reduce((s, { m }) => s + 2 * m.N * m.K, 0);
  // Bandwidth over a buffer as large as the weights, measured right before the sweep.
  const bw = opts.bandwidthGBs ?? measureReadBandwidth({ megabytes: Math.max(256, Math.round(weightBytes / 2 ** 20)) }).gbPerS;
  const boundMs = weightBytes / (bw * 1e9) * 1e3;
  const result: DecodeSweepRow[] = [];
  for (const rows of rowsList) {
    const pass = () => {
      for (const { m, w, b } of weights) be.linear(y.subarray(0, rows * m.N), x.subarray(0, rows * m.K), w, b, rows, m.K, m.N);
    };
    const reps = opts.reps ?? (rows >= 128 ? 3 : 7);
    const times = timeIt(pass, { warmup: 1, reps, minMs: 0 });
    let blasMs: number | null = null;
    if (rows <= (opts.blasUpTo ?? 64)) {
      const blasPass = () => {
        for (const { m, w } of weights) blasLinear(y.subarray(0, rows * m.N), x.subarray(0, rows * m.K), w, rows, m.K, m.N);
      };
      if (hasBlas()) blasMs = median(timeIt(blasPass, { warmup: 1, reps, minMs: 0 }));
    }
    const ms = median(times);
    result.push({
      rows, ms, bestMs: Math.min(...times), boundMs, fractionOfBound: boundMs / ms,
      gflops: (flopsPerRow * rows) / ms / 1e6, blasMs,
    });
  }
  return { weightBytes, bandwidthGBs: bw, boundMs, matrices, rows: result };
}

/** Everything above, in one run. */
export function benchKernels(opts: { decodeRows?: number[]; shapes?: ReadonlyArray<readonly [number, number, number]> } = {}):
  KernelBenchResult {
  const be = requireNative();
  const peak = measureFmaPeak();
  const bandwidth = measureReadBandwidth();
  const linear = benchLinearShapes({ shapes: opts.shapes });
  const decode = benchDecodeSweep({ rows: opts.decodeRows, bandwidthGBs: bandwidth.gbPerS });
  return { backend: { name: be.name, blas: be.blas, threads: be.threads }, peak, bandwidth, linear, decode };
}
