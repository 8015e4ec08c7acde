// Chooses the compute backend once per process: the native addon when it loads, else portable TypeScript.
// KFORCE_BACKEND=ts|native forces one (native fails loudly if the addon is missing).
// The chosen backend is wrapped with argument checks (checked.ts); KFORCE_UNCHECKED=1 skips them for benchmarks.
import type { Backend } from './backend.ts';
import { withChecks } from './checked.ts';
import { tsBackend } from './ts-backend.ts';
import { loadNativeBackend } from './native.ts';

let current: Backend | null = null;
let nativeError: string | null = null;

export function getBackend(): Backend {
  if (current) return current;
  const raw = chooseBackend();
  return (current = process.env.KFORCE_UNCHECKED === '1' ? raw : withChecks(raw));
}

function chooseBackend(): Backend {
  const want = process.env.KFORCE_BACKEND;
  if (want && want !== 'ts' && want !== 'native') {
    throw new Error(`KFORCE_BACKEND must be 'ts' or 'native', got '${want}'`);
  }
  if (want === 'ts') return tsBackend;
  const loaded = loadNativeBackend();
  if (loaded.backend) return loaded.backend;
  nativeError = loaded.error;
  if (want === 'native') throw new Error(`KFORCE_BACKEND=native but the native addon did not load: ${loaded.error}`);
  return tsBackend;
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
