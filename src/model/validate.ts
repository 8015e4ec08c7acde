// Input checks of the public model API. Nested JS arrays come from users (and from a conformance suite), so every
// shape, id and value is checked once at the boundary and turned into typed arrays; errors name the argument, the
// offending index and the expected shape.

function fail(fn: string, msg: string): never {
  throw new Error(`${fn}: ${msg}`);
}

function isArray(x: unknown): x is ArrayLike<unknown> {
  return Array.isArray(x) || ArrayBuffer.isView(x);
}

/** A token id vector, checked against [0, V). */
export function tokenRow(fn: string, name: string, row: unknown, V: number, allowEmpty = false): number[] {
  if (!isArray(row)) fail(fn, `${name} must be an array of token ids, got ${typeof row}`);
  if (!allowEmpty && row.length === 0) fail(fn, `${name} is empty`);
  const out = new Array<number>(row.length);
  for (let i = 0; i < row.length; i++) {
    const t = row[i];
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t >= V) {
      fail(fn, `${name}[${i}] = ${String(t)} is not a token id in [0, V = ${V})`);
    }
    out[i] = t;
  }
  return out;
}

/** A batch of token rows. rect: all rows must have the same length. Returns the rows and, when rectangular, the
 * flat [B*T] ids. */
export function tokenBatch(fn: string, name: string, tokens: unknown, V: number, opts: { rect: boolean; minLen?: number }):
  { B: number; T: number; rows: number[][]; flat: Int32Array } {
  if (!isArray(tokens)) fail(fn, `${name} must be an array of token rows [B][T], got ${typeof tokens}`);
  const B = tokens.length;
  if (B === 0) fail(fn, `${name} has no rows (B = 0)`);
  const rows: number[][] = [];
  for (let b = 0; b < B; b++) rows.push(tokenRow(fn, `${name}[${b}]`, tokens[b], V, (opts.minLen ?? 1) === 0));
  const minLen = opts.minLen ?? 1;
  rows.forEach((r, b) => {
    if (r.length < minLen) fail(fn, `${name}[${b}] has ${r.length} tokens, at least ${minLen} needed`);
  });
  const T = rows[0].length;
  if (opts.rect) {
    rows.forEach((r, b) => {
      if (r.length !== T) fail(fn, `${name} is ragged: row 0 has ${T} tokens, row ${b} has ${r.length} (expected [B, T])`);
    });
  }
  const flat = new Int32Array(opts.rect ? B * T : 0);
  if (opts.rect) rows.forEach((r, b) => flat.set(r, b * T));
  return { B, T, rows, flat };
}

/** A uniform in [0, 1]. */
export function checkUnit(fn: string, name: string, x: unknown): number {
  if (typeof x !== 'number' || !(x >= 0 && x <= 1)) fail(fn, `${name} = ${String(x)} is not a number in [0, 1]`);
  return x;
}

/** Noise [B][k] (k = expected, or any common k in [1, maxK] when expected is null). Returns flat row-major values. */
export function noiseMatrix(fn: string, name: string, noise: unknown, B: number, expected: number | null, maxK: number):
  { k: number; flat: Float64Array } {
  if (!isArray(noise)) fail(fn, `${name} must be an array [B][k] of uniforms, got ${typeof noise}`);
  if (noise.length !== B) fail(fn, `${name} has ${noise.length} rows, expected B = ${B}`);
  let k = expected ?? -1;
  const flat: number[] = [];
  for (let b = 0; b < B; b++) {
    const row = noise[b];
    if (!isArray(row)) fail(fn, `${name}[${b}] must be an array of uniforms`);
    if (k < 0) k = row.length;
    if (row.length !== k) fail(fn, `${name}[${b}] has ${row.length} values, expected k = ${k} (shape [B, k])`);
    for (let j = 0; j < k; j++) flat.push(checkUnit(fn, `${name}[${b}][${j}]`, row[j]));
  }
  checkK(fn, name, k, maxK);
  return { k, flat: Float64Array.from(flat) };
}

export function checkK(fn: string, name: string, k: number, maxK: number): void {
  if (!(Number.isInteger(k) && k >= 1)) fail(fn, `${name}: k must be an integer >= 1, got ${k}`);
  if (k > maxK) fail(fn, `${name}: k = ${k} exceeds the model's maxK = ${maxK}`);
}

/** Noise [B][N][k] with a common k. */
export function noiseCube(fn: string, name: string, noise: unknown, B: number, N: number):
  { k: number; flat: Float64Array } {
  if (!isArray(noise)) fail(fn, `${name} must be an array [B][N][k] of uniforms, got ${typeof noise}`);
  if (noise.length !== B) fail(fn, `${name} has ${noise.length} rows, expected B = ${B} (shape [B, N, k])`);
  let k = -1;
  const flat: number[] = [];
  for (let b = 0; b < B; b++) {
    const mat = noise[b];
    if (!isArray(mat) || mat.length !== N) {
      fail(fn, `${name}[${b}] must have N = ${N} windows, got ${isArray(mat) ? mat.length : typeof mat} (shape [B, N, k])`);
    }
    for (let t = 0; t < N; t++) {
      const row = mat[t];
      if (!isArray(row)) fail(fn, `${name}[${b}][${t}] must be an array of uniforms`);
      if (k < 0) k = row.length;
      if (row.length !== k) fail(fn, `${name}[${b}][${t}] has ${row.length} values, expected k = ${k} (shape [B, N, k])`);
      for (let j = 0; j < k; j++) flat.push(checkUnit(fn, `${name}[${b}][${t}][${j}]`, row[j]));
    }
  }
  if (k < 1) fail(fn, `${name}: k must be >= 1, got ${k}`);
  return { k, flat: Float64Array.from(flat) };
}

/** Temperatures [B] (finite, > 0). undefined gives all ones. */
export function tauVector(fn: string, name: string, tau: unknown, B: number): Float64Array {
  if (tau === undefined) return new Float64Array(B).fill(1);
  if (typeof tau === 'number') tau = new Array(B).fill(tau);
  if (!isArray(tau)) fail(fn, `${name} must be an array [B] of temperatures, got ${typeof tau}`);
  if (tau.length !== B) fail(fn, `${name} has ${tau.length} values, expected B = ${B}`);
  const out = new Float64Array(B);
  for (let b = 0; b < B; b++) {
    const t = tau[b];
    if (typeof t !== 'number' || !Number.isFinite(t) || !(t > 0)) fail(fn, `${name}[${b}] = ${String(t)} is not a finite temperature > 0`);
    out[b] = t;
  }
  return out;
}

/** Token targets [B][N][k] (ids in [0, V)). */
export function targetCube(fn: string, name: string, targets: unknown, B: number, N: number, k: number, V: number): Int32Array {
  if (!isArray(targets) || targets.length !== B) fail(fn, `${name} must be an array [B = ${B}][N = ${N}][k = ${k}] of token ids`);
  const out = new Int32Array(B * N * k);
  for (let b = 0; b < B; b++) {
    const mat = targets[b];
    if (!isArray(mat) || mat.length !== N) fail(fn, `${name}[${b}] must have N = ${N} windows (shape [B, N, k])`);
    for (let t = 0; t < N; t++) {
      const row = tokenRow(fn, `${name}[${b}][${t}]`, mat[t], V);
      if (row.length !== k) fail(fn, `${name}[${b}][${t}] has ${row.length} ids, expected k = ${k} (shape [B, N, k])`);
      out.set(row, (b * N + t) * k);
    }
  }
  return out;
}

/** Converts float64 model outputs to the float32 Tensor data of the public API (copies). */
export function toF32(a: Float32Array | Float64Array): Float32Array {
  return a instanceof Float32Array ? a.slice() : Float32Array.from(a);
}
