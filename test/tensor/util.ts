// Shared fixtures for the tensor tests: seeded random buffers and the K-Forcing staircase mask.
import type { AttentionMask, FloatArray } from '../../src/tensor/backend.ts';
import { Rng } from '../../src/tensor/rng.ts';

export function randn(rng: Rng, n: number, std = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal(0, std);
  return a;
}

export function uniformArray(rng: Rng, n: number, lo: number, hi: number): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * rng.uniform();
  return a;
}

export function f32(a: ArrayLike<number>): Float32Array {
  return Float32Array.from(a);
}

/** Builds a CSR mask from per-query lists of [start, end) ranges. */
export function maskFromRanges(rows: Array<Array<[number, number]>>): AttentionMask {
  const rowPtr = new Int32Array(rows.length + 1);
  const flat: number[] = [];
  rows.forEach((rs, i) => {
    for (const [a, b] of rs) flat.push(a, b);
    rowPtr[i + 1] = rowPtr[i] + rs.length;
  });
  return { rowPtr, ranges: Int32Array.from(flat) };
}

/** The training ("staircase") mask of KFORCING.md section 4: nCtx context rows, then nCtx windows of k noise rows.
 * Noise (t, a) sees context [0, t] and noise (t, 1..a): two ranges per noise query. */
export function staircaseMask(nCtx: number, k: number): AttentionMask {
  const rows: Array<Array<[number, number]>> = [];
  for (let i = 0; i < nCtx; i++) rows.push([[0, i + 1]]);
  for (let t = 0; t < nCtx; t++) {
    for (let a = 1; a <= k; a++) {
      const base = nCtx + t * k;
      rows.push([[0, t + 1], [base, base + a]]);
    }
  }
  return maskFromRanges(rows);
}

/** Dense boolean view of a CSR mask, [nq][keyRows]. */
export function denseMask(mask: AttentionMask, nq: number, keyRows: number): boolean[][] {
  const out: boolean[][] = [];
  for (let i = 0; i < nq; i++) {
    const row = new Array<boolean>(keyRows).fill(false);
    for (let r = mask.rowPtr[i]; r < mask.rowPtr[i + 1]; r++) {
      for (let j = mask.ranges[2 * r]; j < mask.ranges[2 * r + 1]; j++) row[j] = true;
    }
    out.push(row);
  }
  return out;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Largest |a - b| / max(1, |b|): relative for large values, absolute near zero. */
export function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i]));
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

export function bitEqual(a: FloatArray, b: FloatArray): boolean {
  if (a.length !== b.length || a.constructor !== b.constructor) return false;
  const ua = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const ub = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return false;
  return true;
}
