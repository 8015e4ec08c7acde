// Chooses the compute backend once per process: the native addon when it loads, else portable TypeScript.
// KFORCE_BACKEND=ts|native forces one (native fails loudly if the addon is missing).
import type { Backend } from './backend.ts';
import { tsBackend } from './ts-backend.ts';
import { loadNativeBackend } from './native.ts';

let current: Backend | null = null;
let nativeError: string | null = null;

export function getBackend(): Backend {
  if (current) return current;
  const want = process.env.KFORCE_BACKEND;
  if (want && want !== 'ts' && want !== 'native') {
    throw new Error(`KFORCE_BACKEND must be 'ts' or 'native', got '${want}'`);
  }
  if (want === 'ts') return (current = tsBackend);
  const loaded = loadNativeBackend();
  if (loaded.backend) return (current = loaded.backend);
  nativeError = loaded.error;
  if (want === 'native') throw new Error(`KFORCE_BACKEND=native but the native addon did not load: ${loaded.error}`);
  return (current = tsBackend);
}

/** Why the native backend is not in use (null when it is, or when it was never tried). */
export function nativeBackendError(): string | null {
  getBackend();
  return nativeError;
}

/** For tests and benchmarks that compare backends side by side. */
export function setBackend(b: Backend): void {
  current = b;
}
