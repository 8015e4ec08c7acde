// Argument validation in front of any Backend. Kernels (native ones especially) index raw memory from the sizes they
// are given, so a wrong size is either a crash or silent garbage; here it becomes an Error naming the op and shapes.
// Checks are O(1) per call except the attention mask and the cross-entropy targets, which are scanned once (O(n)).
//
// Size rules: dense buffers must have exactly the length their sizes imply (pass `subarray` views, not larger
// scratch buffers). Strided buffers (attention q/k/v/out, rope x) must reach the last used element of the last row;
// a view may stop right after it or include the rest of the row.
import type { AttentionArgs, AttentionBackwardArgs, AttentionMask, Backend, FloatArray } from './backend.ts';

function fail(op: string, msg: string): never {
  throw new Error(`${op}: ${msg}`);
}

function describe(a: unknown): string {
  if (a === null) return 'null';
  if (a === undefined) return 'undefined';
  if (typeof a === 'object') return (a as object).constructor?.name ?? 'object';
  return typeof a;
}

function checkInt(op: string, name: string, n: number, min = 0): void {
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < min) {
    fail(op, `${name} must be an integer >= ${min}, got ${String(n)}`);
  }
}

function checkFinite(op: string, name: string, x: number): void {
  if (typeof x !== 'number' || !Number.isFinite(x)) fail(op, `${name} must be a finite number, got ${String(x)}`);
}

type DType = 'Float32Array' | 'Float64Array';

/** Checks that `a` is a float array of the dtype all float arguments of one call share (taken from the first). */
function checkFloat(op: string, name: string, a: unknown, dtype: DType | null): DType {
  let t: DType;
  if (a instanceof Float32Array) t = 'Float32Array';
  else if (a instanceof Float64Array) t = 'Float64Array';
  else fail(op, `${name} must be a Float32Array or Float64Array, got ${describe(a)}`);
  if (dtype !== null && t !== dtype) {
    fail(op, `${name} is a ${t} but the other float arguments are ${dtype}; dtypes must match`);
  }
  return t;
}

function checkLen(op: string, name: string, a: { length: number }, expected: number, formula: string): void {
  if (a.length !== expected) {
    fail(op, `${name} has ${a.length} elements, expected ${formula} = ${expected}`);
  }
}

/** Strided rows: row r occupies [r*stride, r*stride + width). */
function checkStrided(op: string, name: string, a: FloatArray, rows: number, stride: number, width: number): void {
  if (stride < width) fail(op, `${name} stride ${stride} is smaller than the row width nHeads*headDim = ${width}`);
  const need = rows === 0 ? 0 : (rows - 1) * stride + width;
  if (a.length < need) {
    fail(op, `${name} has ${a.length} elements, needs at least (rows-1)*stride + nHeads*headDim = ` +
      `(${rows}-1)*${stride} + ${width} = ${need}`);
  }
}

/** Number of complete rows a strided key/value view holds. */
function rowsAvailable(a: FloatArray, stride: number, width: number): number {
  return a.length < width ? 0 : Math.floor((a.length - width) / stride) + 1;
}

function checkMask(op: string, mask: AttentionMask, nq: number, keyRows: number): void {
  if (!mask || typeof mask !== 'object') fail(op, `mask must be an object with rowPtr and ranges, got ${describe(mask)}`);
  const { rowPtr, ranges } = mask;
  if (!(rowPtr instanceof Int32Array)) fail(op, `mask.rowPtr must be an Int32Array, got ${describe(rowPtr)}`);
  if (!(ranges instanceof Int32Array)) fail(op, `mask.ranges must be an Int32Array, got ${describe(ranges)}`);
  checkLen(op, 'mask.rowPtr', rowPtr, nq + 1, `nq+1 = ${nq}+1`);
  if (ranges.length % 2 !== 0) fail(op, `mask.ranges has odd length ${ranges.length}; expected pairs [start, end)`);
  // rowPtr need not start at 0 or use every range: a chunk of queries may pass rowPtr.subarray(a, b + 1) over the
  // full ranges array. Only the ranges it references are validated.
  const nRanges = ranges.length / 2;
  if (rowPtr[0] < 0 || rowPtr[0] > nRanges) fail(op, `mask.rowPtr[0] = ${rowPtr[0]} is outside [0, ${nRanges}]`);
  for (let i = 0; i < nq; i++) {
    const r0 = rowPtr[i], r1 = rowPtr[i + 1];
    if (r1 < r0) fail(op, `mask.rowPtr is not monotone: rowPtr[${i}] = ${r0} > rowPtr[${i + 1}] = ${r1}`);
    if (r1 > nRanges) fail(op, `mask.rowPtr[${i + 1}] = ${r1} exceeds the number of ranges ${nRanges}`);
    let prevEnd = -1;
    for (let r = r0; r < r1; r++) {
      const a = ranges[2 * r], b = ranges[2 * r + 1];
      if (a < 0 || b > keyRows || a >= b) {
        fail(op, `mask range ${r} of query ${i} is [${a}, ${b}); ranges must be non-empty within [0, keyRows = ${keyRows})`);
      }
      if (a < prevEnd) {
        fail(op, `mask ranges of query ${i} are not ascending and disjoint: [${a}, ${b}) starts before ${prevEnd}`);
      }
      prevEnd = b;
    }
  }
}

function checkAttention<T extends FloatArray>(op: string, a: AttentionArgs<T>, backward: boolean): void {
  if (!a || typeof a !== 'object') fail(op, `args must be an object, got ${describe(a)}`);
  const { nq, nHeads, headDim } = a;
  checkInt(op, 'nq', nq);
  checkInt(op, 'nHeads', nHeads, 1);
  checkInt(op, 'headDim', headDim, 1);
  checkInt(op, 'qStride', a.qStride, 1);
  checkInt(op, 'kStride', a.kStride, 1);
  checkInt(op, 'vStride', a.vStride, 1);
  checkInt(op, 'outStride', a.outStride, 1);
  checkFinite(op, 'scale', a.scale);
  const ctor = checkFloat(op, 'q', a.q, null);
  checkFloat(op, 'k', a.k, ctor);
  checkFloat(op, 'v', a.v, ctor);
  checkFloat(op, 'out', a.out, ctor);
  checkFloat(op, 'lse', a.lse, ctor);
  const width = nHeads * headDim;
  const shape = `[nq=${nq}, nHeads=${nHeads}, headDim=${headDim}]`;
  checkStrided(op, `q ${shape}`, a.q, nq, a.qStride, width);
  checkStrided(op, `out ${shape}`, a.out, nq, a.outStride, width);
  if (a.kStride < width) fail(op, `k stride ${a.kStride} is smaller than the row width nHeads*headDim = ${width}`);
  if (a.vStride < width) fail(op, `v stride ${a.vStride} is smaller than the row width nHeads*headDim = ${width}`);
  checkLen(op, 'lse', a.lse, nq * nHeads, `nq*nHeads = ${nq}*${nHeads}`);
  const keyRows = Math.min(rowsAvailable(a.k, a.kStride, width), rowsAvailable(a.v, a.vStride, width));
  checkMask(op, a.mask, nq, keyRows);
  if (backward) {
    const b = a as AttentionBackwardArgs<T>;
    checkFloat(op, 'dout', b.dout, ctor);
    checkFloat(op, 'dq', b.dq, ctor);
    checkFloat(op, 'dk', b.dk, ctor);
    checkFloat(op, 'dv', b.dv, ctor);
    checkStrided(op, `dout ${shape}`, b.dout, nq, a.outStride, width);
    checkStrided(op, `dq ${shape}`, b.dq, nq, a.qStride, width);
    // dk/dv are written wherever k/v are read, so they must hold as many key rows as the mask may address.
    const dkRows = rowsAvailable(b.dk, a.kStride, width), dvRows = rowsAvailable(b.dv, a.vStride, width);
    if (dkRows < keyRows) fail(op, `dk holds ${dkRows} key rows (${b.dk.length} elements, stride ${a.kStride}) but k/v hold ${keyRows}`);
    if (dvRows < keyRows) fail(op, `dv holds ${dvRows} key rows (${b.dv.length} elements, stride ${a.vStride}) but k/v hold ${keyRows}`);
  }
}

function checkKind(op: string, kind: unknown): void {
  if (kind !== 'tanh' && kind !== 'exact') fail(op, `kind must be 'tanh' or 'exact', got ${String(kind)}`);
}

/** Wraps a backend so every call validates its arguments first; name, threads and blas pass through. */
export function withChecks(b: Backend): Backend {
  return {
    name: b.name,
    threads: b.threads,
    blas: b.blas,

    linear(out, x, w, bias, M, K, N, activation) {
      const op = 'linear';
      if (activation !== undefined && activation !== 'gelu_tanh') {
        throw new Error(`${op}: activation must be 'gelu_tanh' or undefined, got ${String(activation)}`);
      }
      checkInt(op, 'M', M); checkInt(op, 'K', K); checkInt(op, 'N', N);
      const c = checkFloat(op, 'out', out, null);
      checkFloat(op, 'x', x, c); checkFloat(op, 'w', w, c);
      if (bias !== null) checkFloat(op, 'bias', bias, c);
      checkLen(op, 'x', x, M * K, `M*K = ${M}*${K}`);
      checkLen(op, 'w', w, N * K, `N*K = ${N}*${K}`);
      checkLen(op, 'out', out, M * N, `M*N = ${M}*${N}`);
      if (bias !== null) checkLen(op, 'bias', bias, N, 'N');
      b.linear(out, x, w, bias, M, K, N, activation);
    },

    gemm(transA, transB, M, N, K, alpha, a, bb, beta, c) {
      const op = 'gemm';
      checkInt(op, 'M', M); checkInt(op, 'N', N); checkInt(op, 'K', K);
      checkFinite(op, 'alpha', alpha); checkFinite(op, 'beta', beta);
      const ctor = checkFloat(op, 'c', c, null);
      checkFloat(op, 'a', a, ctor); checkFloat(op, 'b', bb, ctor);
      checkLen(op, `a (${transA ? '[K,M], transA' : '[M,K]'})`, a, M * K, `M*K = ${M}*${K}`);
      checkLen(op, `b (${transB ? '[N,K], transB' : '[K,N]'})`, bb, K * N, `K*N = ${K}*${N}`);
      checkLen(op, 'c', c, M * N, `M*N = ${M}*${N}`);
      b.gemm(transA, transB, M, N, K, alpha, a, bb, beta, c);
    },

    layerNorm(out, mean, rstd, x, weight, bias, rows, D, eps) {
      const op = 'layerNorm';
      checkInt(op, 'rows', rows); checkInt(op, 'D', D, 1);
      if (!(eps > 0) || !Number.isFinite(eps)) fail(op, `eps must be a positive finite number, got ${String(eps)}`);
      const c = checkFloat(op, 'out', out, null);
      checkFloat(op, 'mean', mean, c); checkFloat(op, 'rstd', rstd, c);
      checkFloat(op, 'x', x, c); checkFloat(op, 'weight', weight, c);
      if (bias !== null) checkFloat(op, 'bias', bias, c);
      checkLen(op, 'x', x, rows * D, `rows*D = ${rows}*${D}`);
      checkLen(op, 'out', out, rows * D, `rows*D = ${rows}*${D}`);
      checkLen(op, 'mean', mean, rows, 'rows');
      checkLen(op, 'rstd', rstd, rows, 'rows');
      checkLen(op, 'weight', weight, D, 'D');
      if (bias !== null) checkLen(op, 'bias', bias, D, 'D');
      b.layerNorm(out, mean, rstd, x, weight, bias, rows, D, eps);
    },

    layerNormBackward(dx, dweight, dbias, dout, x, mean, rstd, weight, rows, D) {
      const op = 'layerNormBackward';
      checkInt(op, 'rows', rows); checkInt(op, 'D', D, 1);
      const c = checkFloat(op, 'dx', dx, null);
      checkFloat(op, 'dweight', dweight, c);
      if (dbias !== null) checkFloat(op, 'dbias', dbias, c);
      checkFloat(op, 'dout', dout, c); checkFloat(op, 'x', x, c);
      checkFloat(op, 'mean', mean, c); checkFloat(op, 'rstd', rstd, c); checkFloat(op, 'weight', weight, c);
      for (const [name, arr] of [['dx', dx], ['dout', dout], ['x', x]] as const) {
        checkLen(op, name, arr, rows * D, `rows*D = ${rows}*${D}`);
      }
      checkLen(op, 'mean', mean, rows, 'rows');
      checkLen(op, 'rstd', rstd, rows, 'rows');
      checkLen(op, 'weight', weight, D, 'D');
      checkLen(op, 'dweight', dweight, D, 'D');
      if (dbias !== null) checkLen(op, 'dbias', dbias, D, 'D');
      b.layerNormBackward(dx, dweight, dbias, dout, x, mean, rstd, weight, rows, D);
    },

    gelu(out, x, n, kind) {
      const op = 'gelu';
      checkInt(op, 'n', n); checkKind(op, kind);
      const c = checkFloat(op, 'out', out, null);
      checkFloat(op, 'x', x, c);
      checkLen(op, 'x', x, n, 'n');
      checkLen(op, 'out', out, n, 'n');
      b.gelu(out, x, n, kind);
    },

    geluBackward(dx, dout, x, n, kind) {
      const op = 'geluBackward';
      checkInt(op, 'n', n); checkKind(op, kind);
      const c = checkFloat(op, 'dx', dx, null);
      checkFloat(op, 'dout', dout, c); checkFloat(op, 'x', x, c);
      checkLen(op, 'dx', dx, n, 'n');
      checkLen(op, 'dout', dout, n, 'n');
      checkLen(op, 'x', x, n, 'n');
      b.geluBackward(dx, dout, x, n, kind);
    },

    rope(x, stride, rows, nHeads, headDim, positions, invFreq, inverse) {
      const op = 'rope';
      checkInt(op, 'rows', rows); checkInt(op, 'nHeads', nHeads, 1); checkInt(op, 'headDim', headDim, 2);
      checkInt(op, 'stride', stride, 1);
      if (headDim % 2 !== 0) fail(op, `headDim must be even (rotation pairs the two halves), got ${headDim}`);
      const c = checkFloat(op, 'x', x, null);
      checkFloat(op, 'invFreq', invFreq, c);
      checkStrided(op, `x [rows=${rows}, nHeads=${nHeads}, headDim=${headDim}]`, x, rows, stride, nHeads * headDim);
      if (!(positions instanceof Int32Array)) fail(op, `positions must be an Int32Array, got ${describe(positions)}`);
      checkLen(op, 'positions', positions, rows, 'rows');
      checkLen(op, 'invFreq', invFreq, headDim / 2, `headDim/2 = ${headDim}/2`);
      b.rope(x, stride, rows, nHeads, headDim, positions, invFreq, inverse);
    },

    attention(args) {
      checkAttention('attention', args, false);
      b.attention(args);
    },

    attentionBackward(args) {
      checkAttention('attentionBackward', args, true);
      b.attentionBackward(args);
    },

    crossEntropy(losses, dlogits, logits, targets, rows, V, ignoreIndex, rowScale) {
      const op = 'crossEntropy';
      checkInt(op, 'rows', rows); checkInt(op, 'V', V, 1);
      if (!Number.isInteger(ignoreIndex)) fail(op, `ignoreIndex must be an integer, got ${String(ignoreIndex)}`);
      const c = checkFloat(op, 'losses', losses, null);
      if (dlogits !== null) checkFloat(op, 'dlogits', dlogits, c);
      checkFloat(op, 'logits', logits, c);
      if (rowScale !== null) checkFloat(op, 'rowScale', rowScale, c);
      checkLen(op, 'losses', losses, rows, 'rows');
      checkLen(op, 'logits', logits, rows * V, `rows*V = ${rows}*${V}`);
      if (dlogits !== null) checkLen(op, 'dlogits', dlogits, rows * V, `rows*V = ${rows}*${V}`);
      if (rowScale !== null) checkLen(op, 'rowScale', rowScale, rows, 'rows');
      if (!(targets instanceof Int32Array)) fail(op, `targets must be an Int32Array, got ${describe(targets)}`);
      checkLen(op, 'targets', targets, rows, 'rows');
      for (let i = 0; i < rows; i++) {
        const t = targets[i];
        if (t !== ignoreIndex && (t < 0 || t >= V)) {
          fail(op, `targets[${i}] = ${t} is outside [0, V = ${V}) and is not ignoreIndex ${ignoreIndex}`);
        }
      }
      b.crossEntropy(losses, dlogits, logits, targets, rows, V, ignoreIndex, rowScale);
    },

    sumSquares(g) {
      if (!(g instanceof Float32Array)) fail('sumSquares', `g must be a Float32Array, got ${describe(g)}`);
      return b.sumSquares(g);
    },

    adamw(params, grads, m, v, opts) {
      const op = 'adamw';
      for (const [name, arr] of [['params', params], ['grads', grads], ['m', m], ['v', v]] as const) {
        if (!(arr instanceof Float32Array)) fail(op, `${name} must be a Float32Array, got ${describe(arr)}`);
      }
      const n = params.length;
      checkLen(op, 'grads', grads, n, 'params.length');
      checkLen(op, 'm', m, n, 'params.length');
      checkLen(op, 'v', v, n, 'params.length');
      if (!opts || typeof opts !== 'object') fail(op, `opts must be an object, got ${describe(opts)}`);
      const { lr, beta1, beta2, eps, weightDecay, step, gradScale, decayMask } = opts;
      checkFinite(op, 'lr', lr); checkFinite(op, 'eps', eps); checkFinite(op, 'weightDecay', weightDecay);
      checkFinite(op, 'gradScale', gradScale);
      if (!(beta1 >= 0 && beta1 < 1)) fail(op, `beta1 must be in [0, 1), got ${String(beta1)}`);
      if (!(beta2 >= 0 && beta2 < 1)) fail(op, `beta2 must be in [0, 1), got ${String(beta2)}`);
      if (!(eps > 0)) fail(op, `eps must be > 0, got ${eps}`);
      checkInt(op, 'step', step, 1);
      if (decayMask !== null) {
        if (!(decayMask instanceof Uint8Array)) fail(op, `decayMask must be a Uint8Array or null, got ${describe(decayMask)}`);
        checkLen(op, 'decayMask', decayMask, n, 'params.length');
      }
      b.adamw(params, grads, m, v, opts);
    },
  };
}
