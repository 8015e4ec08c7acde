// Attention layouts over packed rows: which keys each query row sees (a CSR list of key ranges, backend.ts
// AttentionMask) and each row's RoPE position. Every builder costs O(rows) (at most a few ranges per query), never a
// dense [rows, rows] matrix; the attention kernels then cost O(allowed pairs).
import type { AttentionMask } from '../tensor/backend.ts';

/** A mask being built one query at a time. */
export class MaskBuilder {
  private rowPtr: Int32Array;
  private ranges: Int32Array;
  private nq = 0;
  private nr = 0;

  constructor(queries: number, rangesHint: number) {
    this.rowPtr = new Int32Array(queries + 1);
    this.ranges = new Int32Array(2 * Math.max(1, rangesHint));
  }

  /** Adds [start, end) to the current query (ranges must be ascending and disjoint; empty ones are dropped). */
  range(start: number, end: number): void {
    if (end <= start) return;
    if (2 * this.nr + 2 > this.ranges.length) {
      const r = new Int32Array(this.ranges.length * 2);
      r.set(this.ranges);
      this.ranges = r;
    }
    this.ranges[2 * this.nr] = start;
    this.ranges[2 * this.nr + 1] = end;
    this.nr++;
  }

  /** Closes the current query. */
  endQuery(): void {
    this.nq++;
    if (this.nq >= this.rowPtr.length) {
      const r = new Int32Array(this.rowPtr.length * 2);
      r.set(this.rowPtr);
      this.rowPtr = r;
    }
    this.rowPtr[this.nq] = this.nr;
  }

  build(): AttentionMask {
    return { rowPtr: this.rowPtr.slice(0, this.nq + 1), ranges: this.ranges.slice(0, 2 * this.nr) };
  }
}

export interface RowLayout {
  rows: number;
  positions: Int32Array;
  mask: AttentionMask;
}

/** B causal sequences of T rows each, packed b-major: row b*T + t sees rows b*T .. b*T + t; position t. */
export function causalLayout(B: number, T: number): RowLayout {
  const R = B * T;
  const rowPtr = new Int32Array(R + 1);
  const ranges = new Int32Array(2 * R);
  const positions = new Int32Array(R);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const r = b * T + t;
      rowPtr[r + 1] = r + 1;
      ranges[2 * r] = b * T;
      ranges[2 * r + 1] = r + 1;
      positions[r] = t;
    }
  }
  return { rows: R, positions, mask: { rowPtr, ranges } };
}

/** Row index helpers of the staircase layout (KFORCING.md section 4) for B sequences of N context tokens and windows
 * of w extra rows: first all context rows (b-major), then all window rows, b-major, window-major within b:
 * context (b, i) -> b*N + i; window row (b, t, a), a = 0..w-1 -> B*N + (b*N + t)*w + a. */
export function stairRow(B: number, N: number, w: number, b: number, t: number, a: number): number {
  return B * N + (b * N + t) * w + a;
}

/**
 * Staircase layout: context i sees context j <= i; window row (t, a) sees context j <= t and rows (t, b <= a) of its
 * own window; positions are i for context and t + 1 + a for window row a (0-based, so slot a+1 of the spec). The
 * same layout serves the PFLM training pass (w = k noise rows) and the double pass (w = 2k: the teacher's k tokens
 * F1 then k noise rows F2; F2 then sees all of F1 of its window, as the spec's double forward requires).
 */
export function staircaseLayout(B: number, N: number, w: number): RowLayout {
  const R = B * N * (1 + w);
  const rowPtr = new Int32Array(R + 1);
  const ranges = new Int32Array(2 * (B * N + 2 * B * N * w));
  const positions = new Int32Array(R);
  let nr = 0;
  let q = 0;
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < N; i++) {
      ranges[2 * nr] = b * N;
      ranges[2 * nr + 1] = b * N + i + 1;
      nr++;
      positions[q] = i;
      rowPtr[++q] = nr;
    }
  }
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < N; t++) {
      const w0 = stairRow(B, N, w, b, t, 0);
      for (let a = 0; a < w; a++) {
        ranges[2 * nr] = b * N;
        ranges[2 * nr + 1] = b * N + t + 1;
        nr++;
        ranges[2 * nr] = w0;
        ranges[2 * nr + 1] = w0 + a + 1;
        nr++;
        positions[q] = t + 1 + a;
        rowPtr[++q] = nr;
      }
    }
  }
  return { rows: R, positions, mask: { rowPtr, ranges } };
}
