// Shared pieces of the native-backend tests: the backend under test (or why it is missing), seeded buffers, and
// the error measure used for native-vs-TypeScript agreement.
import type { AttentionMask, Backend } from '../../src/tensor/backend.ts';
import { loadNativeBackend } from '../../src/tensor/native.ts';
import { Rng } from '../../src/tensor/rng.ts';
import { maskFromRanges } from '../tensor/util.ts';

const loaded = loadNativeBackend();
export const native: Backend | null = loaded.backend;
/** node:test `skip` option: false when the addon loaded, else a message saying why these tests cannot run. */
export const skip: string | false = loaded.backend ? false
  : `native addon not built (${loaded.error ?? 'unknown reason'}); run \`npm run build:native\``;

export function nat(): Backend {
  if (!native) throw new Error('native backend unavailable');
  return native;
}

export function rand32(rng: Rng, n: number, std = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal(0, std);
  return a;
}

export function ints(values: number[]): Int32Array {
  return Int32Array.from(values);
}

/** max |a - b| / max |b|: the error relative to the size of the reference result. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= num)) num = Number.isNaN(d) ? Infinity : d;
    den = Math.max(den, Math.abs(b[i]));
  }
  return den === 0 ? num : num / den;
}

export function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return false;
  return true;
}

// Mask builders are shared with the TypeScript-backend tests: one definition of the staircase layout.
export { maskFromRanges as maskOf, staircaseMask as staircase } from '../tensor/util.ts';

export function causalMask(n: number): AttentionMask {
  return maskFromRanges(Array.from({ length: n }, (_, i) => [[0, i + 1]] as Array<[number, number]>));
}

export { Rng };
