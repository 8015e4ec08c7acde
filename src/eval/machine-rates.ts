// The two machine limits a roofline needs, measured in the same process as the benchmark they explain (bandwidth on
// these shared machines drifts between runs, ENGINEERING.md): DRAM read bandwidth over a buffer larger than the
// caches (ideally the model's own weights, the bytes a decode step streams) and the GEMM rate of the backend's
// `linear` on a large shape; with the int8 screen kernels, also their instruction rate against fp32 FMAs (the
// screened output layer's share of the roofline).
import { getBackend } from '../tensor/select.ts';
import { loadNativeBackend, nativeScreen } from '../tensor/native.ts';
import { benchLinearShapes, measureReadBandwidth } from './bench-kernels.ts';
import type { MachineRates } from './roofline.ts';

const haveNative = (): boolean => loadNativeBackend().backend !== null;

let readSink = 0;

/** Sum of the last JS-fallback read (exported only so the read loop has an observable result). */
export function lastReadSum(): number {
  return readSink;
}

/** Best-of-`reps` streaming read of `buf`, bytes per second (the kernels' multi-threaded reader, else a JS loop). */
export function measureBandwidth(buf: Float32Array, reps = 3): number {
  if (buf.length === 0) throw new Error('measureBandwidth: empty buffer');
  if (haveNative()) return measureReadBandwidth({ buffer: buf, reps }).gbPerS * 1e9;
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    let s = 0;
    for (let i = 0; i < buf.length; i++) s += buf[i];
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
    readSink = s; // kept observable so the loop cannot be dropped
  }
  return (buf.length * 4) / best;
}

/** FLOP/s of backend.linear on x[M,K] @ w[N,K]^T: the kernels' benchmark (median) when native, else best of reps. */
export function measureLinear(M: number, K: number, N: number, reps = 3): number {
  if (haveNative()) return benchLinearShapes({ shapes: [[M, K, N]], minMs: 200 })[0].kforceGflops * 1e9;
  const b = getBackend();
  const x = new Float32Array(M * K);
  const w = new Float32Array(N * K);
  const out = new Float32Array(M * N);
  for (let i = 0; i < x.length; i++) x[i] = ((i * 7919) % 1000) / 1000 - 0.5;
  for (let i = 0; i < w.length; i++) w[i] = ((i * 104729) % 1000) / 1000 - 0.5;
  b.linear(out, x, w, null, M, K, N); // warm-up (thread pool, page faults)
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    b.linear(out, x, w, null, M, K, N);
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return (2 * M * K * N) / best;
}

/**
 * Rates for a decode roofline: bandwidth over `weights` (at least 256 MiB is read, repeating a smaller buffer's
 * size would measure caches, so a small model's buffer is replaced by a 256 MiB one), the GEMM rate on
 * [512, hidden] x [hidden, 4 hidden] (hidden at least 768 so small models get the machine's rate, not overheads), and
 * where the int8 screen kernels exist their int8 / fp32 instruction rate ratio.
 */
export function measureDecodeRates(weights: Float32Array, hidden: number): MachineRates {
  const minBytes = 256 * 2 ** 20;
  const buf = weights.length * 4 >= minBytes ? weights : new Float32Array(minBytes / 4).fill(1);
  const D = Math.max(768, hidden);
  const rates: MachineRates = { bandwidth: measureBandwidth(buf), flops: measureLinear(512, D, 4 * D) };
  const screen = nativeScreen();
  if (screen) rates.int8Ratio = screen.int8Ratio();
  return rates;
}
