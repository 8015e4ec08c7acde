import type { Command } from 'commander';
import os from 'node:os';
import { getBackend, nativeBackendError } from '../../tensor/select.ts';

export function registerInfo(program: Command): void {
  program
    .command('info')
    .description('print the compute backend in use (native or TypeScript), its threads and BLAS')
    .option('--json', 'print one JSON object')
    .action((opts: { json?: boolean }) => {
      const b = getBackend();
      const info = {
        backend: b.name,
        threads: b.threads,
        blas: b.blas,
        nativeError: nativeBackendError(),
        node: process.version,
        cpus: os.cpus().length,
        cpuModel: os.cpus()[0]?.model ?? 'unknown',
      };
      if (opts.json) {
        console.log(JSON.stringify(info));
        return;
      }
      console.log(`backend: ${info.backend} (${info.threads} threads, BLAS: ${info.blas})`);
      if (info.nativeError) console.log(`native addon not in use: ${info.nativeError}`);
      console.log(`node ${info.node}, ${info.cpus} CPUs (${info.cpuModel})`);
    });
}
