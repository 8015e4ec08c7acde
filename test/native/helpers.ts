// Shared pieces of the native-backend tests: the backend under test (or why it is missing), seeded buffers, and
// the error measure used for native-vs-TypeScript agreement.
import type { AttentionMask, Backend } from '../../src/tensor/backend.ts';
import { loadNativeBackend } from '../../src/tensor/native.ts';
import { Rng } from '../../src/tensor/rng.ts';

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

export function maskOf(rows: Array<Array<[number, number]>>): AttentionMask {
  const rowPtr = new Int32Array(rows.length + 1);
  const flat: number[] = [];
  rows.forEach((rs, i) => {
    for (const [a, b] of rs) flat.push(a, b);
    rowPtr[i + 1] = rowPtr[i] + rs.length;
  });
  return { rowPtr, ranges: Int32Array.from(flat) };
}

export function causalMask(n: number): AttentionMask {
  return maskOf(Array.from({ length: n }, (_, i) => [[0, i + 1]] as Array<[number, number]>));
}

/** KFORCING.md section 4's training mask: nCtx causal context rows, then per position t, k noise rows that see
 * context [0, t] and noise rows (t, 1..a). */
export function staircase(nCtx: number, k: number): AttentionMask {
  const rows: Array<Array<[number, number]>> = [];
  for (let i = 0; i < nCtx; i++) rows.push([[0, i + 1]]);
  for (let t = 0; t < nCtx; t++) {
    for (let a = 1; a <= k; a++) {
      const base = nCtx + t * k;
      rows.push([[0, t + 1], [base, base + a]]);
    }
  }
  return maskOf(rows);
}

export { Rng };
