// Prints the kernel benchmarks of src/eval/bench-kernels.ts as tables, for iterating on the native kernels.
//   npx tsx scripts/bench-kernels.ts [--rows 1,8,64] [--shapes 1x768x3072,512x768x3072] [--no-decode] [--no-shapes]
import {
  PEAK_GFLOPS_2T, benchDecodeSweep, benchLinearShapes, measureFmaPeak, measureReadBandwidth, DEFAULT_LINEAR_SHAPES,
} from '../src/eval/bench-kernels.ts';
import { loadNativeBackend } from '../src/tensor/native.ts';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const has = (name: string) => process.argv.includes(name);
const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
const f1 = (x: number | null) => (x === null ? '-' : x.toFixed(1));
const f2 = (x: number | null) => (x === null ? '-' : x.toFixed(2));

const { backend, error } = loadNativeBackend();
if (!backend) {
  console.error(`native backend unavailable: ${error}`);
  process.exit(1);
}
const peak = measureFmaPeak().gflops;
console.log(`backend: ${backend.name}, ${backend.blas}, ${backend.threads} threads`);
console.log(`FMA peak measured now: ${peak.toFixed(0)} GFLOP/s on ${backend.threads} threads (ENGINEERING.md quotes ` +
  `${PEAK_GFLOPS_2T}; %peak below is against ${PEAK_GFLOPS_2T}, %meas against the measured figure)`);
const bw = measureReadBandwidth();
console.log(`DRAM read bandwidth: ${bw.gbPerS.toFixed(1)} GB/s (${(bw.bytes / 2 ** 20).toFixed(0)} MiB buffer, best of 5)\n`);

if (!has('--no-shapes')) {
  const shapes = arg('--shapes')?.split(',').map((s) => s.split('x').map(Number) as [number, number, number])
    ?? DEFAULT_LINEAR_SHAPES;
  console.log('linear [M,K]x[K,N]      kforce ms  GFLOP/s  %peak  %meas | OpenBLAS ms  GFLOP/s  %peak | speed-up');
  for (const r of benchLinearShapes({ shapes })) {
    const name = `[${r.M},${r.K}]x[${r.K},${r.N}]`.padEnd(22);
    console.log(`${name} ${r.kforceMs.toFixed(3).padStart(9)} ${f1(r.kforceGflops).padStart(8)} ` +
      `${pct(r.kforceGflops / PEAK_GFLOPS_2T).padStart(6)} ${pct(r.kforceGflops / peak).padStart(6)} |` +
      ` ${(r.blasMs === null ? '-' : r.blasMs.toFixed(3)).padStart(11)} ${f1(r.blasGflops).padStart(8)} ` +
      `${(r.blasGflops === null ? '-' : pct(r.blasGflops / PEAK_GFLOPS_2T)).padStart(6)} | ` +
      `${r.blasMs === null ? '-' : (r.blasMs / r.kforceMs).toFixed(2) + 'x'}`);
  }
  console.log();
}

if (!has('--no-decode')) {
  const rows = arg('--rows')?.split(',').map(Number);
  const d = benchDecodeSweep({ rows, bandwidthGBs: bw.gbPerS });
  console.log(`decode sweep: ${(d.weightBytes / 1e6).toFixed(0)} MB of weights per pass, DRAM bound ${d.boundMs.toFixed(2)} ms ` +
    `at ${d.bandwidthGBs.toFixed(1)} GB/s`);
  console.log('rows   ms/pass  best ms  %bound  ms/row  GFLOP/s  %peak | OpenBLAS ms  kforce speed-up');
  for (const r of d.rows) {
    console.log(`${String(r.rows).padStart(4)} ${f2(r.ms).padStart(9)} ${f2(r.bestMs).padStart(8)} ${pct(r.fractionOfBound).padStart(7)} ` +
      `${f2(r.ms / r.rows).padStart(7)} ${f1(r.gflops).padStart(8)} ${pct(r.gflops / PEAK_GFLOPS_2T).padStart(6)} | ` +
      `${f2(r.blasMs).padStart(11)} ${r.blasMs === null ? '' : (r.blasMs / r.ms).toFixed(2) + 'x'}`);
  }
}
