// Machine rates for the roofline prediction of the serving benchmark, measured through the compute backend in the
// same run (bandwidth on shared machines varies between runs, ENGINEERING.md): the weight-streaming rate of a
// one-row linear over a matrix far larger than the L3 cache, and the matmul rate of a many-row linear.
import { getBackend } from '../tensor/select.ts';
import type { MachineRates } from '../eval/roofline.ts';

function bestSeconds(reps: number, fn: () => void): number {
  fn(); // warm-up: page faults, thread start-up
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    fn();
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  return best;
}

function filled(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    a[i] = (x / 4294967296 - 0.5) * 0.1;
  }
  return a;
}

/** Measures bandwidth (bytes/s) and matmul rate (FLOP/s) as the backend achieves them. Takes about a second. */
export function measureMachineRates(reps = 5): MachineRates {
  const b = getBackend();
  const K = 768;
  // 256 MiB of float32 weights: 8x the 32 MiB L3, so every read comes from DRAM.
  const Nbw = Math.floor((64 << 20) / K);
  const wBig = filled(Nbw * K, 1);
  const x1 = filled(K, 2);
  const out1 = new Float32Array(Nbw);
  const tBw = bestSeconds(reps, () => b.linear(out1, x1, wBig, null, 1, K, Nbw));
  const M = 256;
  const N = 3072;
  const w = filled(N * K, 3);
  const x = filled(M * K, 4);
  const out = new Float32Array(M * N);
  const tMm = bestSeconds(reps, () => b.linear(out, x, w, null, M, K, N));
  return { bandwidth: (Nbw * K * 4) / tBw, flops: (2 * M * K * N) / tMm };
}
