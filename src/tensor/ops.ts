// Small elementwise and indexing helpers that the model needs but that are too cheap to deserve a Backend method
// (memory-bound, no reduction-order question except bias gradients, which sum rows in ascending order in float64).
// Each validates its sizes and throws an Error naming the op, since unlike typed-array stores out-of-range reads
// would silently produce undefined/NaN.
import type { FloatArray } from './backend.ts';

function fail(op: string, msg: string): never {
  throw new Error(`${op}: ${msg}`);
}

function checkInt(op: string, name: string, n: number, min = 0): void {
  if (!Number.isSafeInteger(n) || n < min) fail(op, `${name} must be an integer >= ${min}, got ${String(n)}`);
}

function checkLen(op: string, name: string, a: { length: number }, expected: number, formula: string): void {
  if (a.length !== expected) fail(op, `${name} has ${a.length} elements, expected ${formula} = ${expected}`);
}

function checkIds(op: string, ids: Int32Array, V: number): void {
  if (!(ids instanceof Int32Array)) fail(op, 'ids must be an Int32Array');
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (id < 0 || id >= V) fail(op, `ids[${i}] = ${id} is outside [0, V = ${V})`);
  }
}

/** out[i, :] = table[ids[i], :] for a [V, D] table; out is [ids.length, D]. */
export function embeddingGather<T extends FloatArray>(out: T, table: T, ids: Int32Array, V: number, D: number): void {
  const op = 'embeddingGather';
  checkInt(op, 'V', V, 1); checkInt(op, 'D', D, 1);
  checkLen(op, 'table', table, V * D, `V*D = ${V}*${D}`);
  checkIds(op, ids, V);
  checkLen(op, 'out', out, ids.length * D, `ids.length*D = ${ids.length}*${D}`);
  for (let i = 0; i < ids.length; i++) out.set(table.subarray(ids[i] * D, ids[i] * D + D), i * D);
}

/** Backward of embeddingGather: dtable[ids[i], :] += dout[i, :], in ascending i (repeated ids sum in that order). */
export function embeddingScatterAdd<T extends FloatArray>(dtable: T, dout: T, ids: Int32Array, V: number, D: number): void {
  const op = 'embeddingScatterAdd';
  checkInt(op, 'V', V, 1); checkInt(op, 'D', D, 1);
  checkLen(op, 'dtable', dtable, V * D, `V*D = ${V}*${D}`);
  checkIds(op, ids, V);
  checkLen(op, 'dout', dout, ids.length * D, `ids.length*D = ${ids.length}*${D}`);
  for (let i = 0; i < ids.length; i++) {
    const t = ids[i] * D, o = i * D;
    for (let d = 0; d < D; d++) dtable[t + d] += dout[o + d];
  }
}

/** out = a + b elementwise (out may alias a or b). */
export function add<T extends FloatArray>(out: T, a: T, b: T): void {
  const op = 'add';
  checkLen(op, 'b', b, a.length, 'a.length');
  checkLen(op, 'out', out, a.length, 'a.length');
  for (let i = 0; i < a.length; i++) out[i] = a[i] + b[i];
}

/** a += b elementwise (residual connections, gradient accumulation). */
export function addInPlace<T extends FloatArray>(a: T, b: T): void {
  checkLen('addInPlace', 'b', b, a.length, 'a.length');
  for (let i = 0; i < a.length; i++) a[i] += b[i];
}

/** a += alpha * b elementwise. */
export function axpy<T extends FloatArray>(a: T, alpha: number, b: T): void {
  checkLen('axpy', 'b', b, a.length, 'a.length');
  for (let i = 0; i < a.length; i++) a[i] += alpha * b[i];
}

/** a *= s elementwise. */
export function scaleInPlace<T extends FloatArray>(a: T, s: number): void {
  for (let i = 0; i < a.length; i++) a[i] *= s;
}

/** dbias[n] += sum over rows of dout[r, n] for dout [rows, N] (float64 row sums in ascending row order). */
export function biasGradient<T extends FloatArray>(dbias: T, dout: T, rows: number, N: number): void {
  const op = 'biasGradient';
  checkInt(op, 'rows', rows); checkInt(op, 'N', N);
  checkLen(op, 'dbias', dbias, N, 'N');
  checkLen(op, 'dout', dout, rows * N, `rows*N = ${rows}*${N}`);
  const acc = new Float64Array(N);
  for (let r = 0; r < rows; r++) {
    const o = r * N;
    for (let n = 0; n < N; n++) acc[n] += dout[o + n];
  }
  for (let n = 0; n < N; n++) dbias[n] += acc[n];
}

/** Sets every element to value (zeroing gradients before accumulate-style backward ops). */
export function fill<T extends FloatArray>(a: T, value: number): void {
  if (typeof value !== 'number') fail('fill', `value must be a number, got ${typeof value}`);
  a.fill(value);
}
