// The causal pre-LN Transformer (KFORCING.md section 2) over PACKED rows: the tokens of every sequence of a call form
// one [R, D] activation matrix, so each linear layer is one backend call that streams its weight once; attention is
// one call per layer whose CSR mask (masks.ts) keeps the sequences apart. Forward and backward sit side by side
// (llm.c style): the forward saves what the backward needs when `train` is set, the backward accumulates parameter
// gradients into a flat gradient buffer's views and returns the gradient of the input embeddings.
import type { AttentionMask, FloatArray } from '../tensor/backend.ts';
import { addInPlace } from '../tensor/ops.ts';
import { nativeRows, type NativeRows } from '../tensor/native.ts';
import type { BaseModel } from './core.ts';
import type { ParamViews } from './params.ts';

export const LN_EPS = 1e-5;
/** The value the [MASK] logit is replaced with in every output. */
export const MASK_LOGIT = -1000;

/** Rows that get logits: a contiguous range, or an explicit list (gathered first). */
export type OutputRows = { start: number; count: number } | { rows: Int32Array };

/** Decode mode: K/V of every row are also written to a per-layer store (rows [cap, 2D], K then V), and attention
 * reads keys from the store; mask ranges then address store rows. */
export interface KvStore<T extends FloatArray> {
  layers: T[];
  rowIndex: Int32Array; // [R] destination row of each input row
}

export interface BackboneInput<T extends FloatArray> {
  R: number;
  /** [R, D] input embeddings. Used as the residual stream (overwritten in inference; kept in training). */
  x: T;
  positions: Int32Array; // [R]
  mask: AttentionMask; // over input rows, or over store rows when kv is set
  kv?: KvStore<T> | null;
  out: OutputRows;
  train: boolean;
  /** false: stop after the final norm (trace.lnf holds the output layer's input rows; trace.logits is empty). */
  logits?: boolean;
}

interface LayerActs<T extends FloatArray> {
  ln1: T; m1: T; r1: T; // [R, D], [R], [R]
  qkv: T; // [R, 3D], q and k after RoPE
  att: T; lse: T; // [R, D], [R * H]
  mid: T; // [R, D] residual after attention
  ln2: T; m2: T; r2: T;
  fc1: T; gel: T; // [R, 4D]
}

export interface BackboneTrace<T extends FloatArray> {
  R: number;
  Ro: number;
  positions: Int32Array;
  mask: AttentionMask;
  out: OutputRows;
  resid: T[]; // [L + 1] x [R, D]: input of each block, then the final stream
  layers: LayerActs<T>[];
  xo: T; lnf: T; mf: T; rf: T; // output rows before/after the final norm
  /** [Ro, V] logits, mask column set to MASK_LOGIT (empty when the input's `logits` is false). Valid until the model's
   * next forward. */
  logits: T;
}

/** dbias[N] += column sums of dy [rows, N], as a BLAS matrix-vector product with a ones vector (a JS loop over the
 * [rows, V] logit gradient costs tens of ms per training step). */
export function biasGrad<T extends FloatArray>(m: BaseModel<T>, dbias: T, dy: T, rows: number, N: number): void {
  const ones = m.ws.get('ones', rows);
  if (ones[0] !== 1 || ones[rows - 1] !== 1) ones.fill(1);
  m.backend().gemm(true, false, N, 1, rows, 1, dy, ones, 1, dbias);
}

let rowsCache: NativeRows | null | undefined;

/** The addon's row glue when this model runs float32 on the native backend: the residual adds and the K/V scatter
 * as JS loops cost a few percent of a decode step at 64+ rows. Same results as the JS loops. */
function rowOps<T extends FloatArray>(m: BaseModel<T>): NativeRows | null {
  if (m.dtype !== 'float32' || m.backend().name !== 'native') return null;
  if (rowsCache === undefined) rowsCache = nativeRows();
  return rowsCache;
}

function addRes<T extends FloatArray>(ops: NativeRows | null, a: T, b: T): void {
  if (ops && a instanceof Float32Array && b instanceof Float32Array) ops.addInPlace(a, b);
  else addInPlace(a, b);
}

function outCount(out: OutputRows): number {
  return 'rows' in out ? out.rows.length : out.count;
}

/** Forward over R packed rows; returns the logits of the output rows (and, in training, the saved activations). */
export function backboneForward<T extends FloatArray>(m: BaseModel<T>, inp: BackboneInput<T>): BackboneTrace<T> {
  const be = m.backend();
  const { D, H, Dh, V } = m;
  const { R, x, positions, mask, out, train } = inp;
  const kv = inp.kv ?? null;
  const L = m.config.nBlocks;
  const ws = m.ws;
  if (x.length !== R * D) throw new Error(`backbone: x has ${x.length} elements, expected R*D = ${R}*${D}`);
  if (positions.length !== R) throw new Error(`backbone: positions has ${positions.length} entries, expected R = ${R}`);
  const scale = 1 / Math.sqrt(Dh);
  const ops = rowOps(m);

  const resid: T[] = [x];
  const layers: LayerActs<T>[] = [];
  let cur = x;
  for (let l = 0; l < L; l++) {
    const p = train ? `a${l}.` : 'i.';
    const bw = m.w.blocks[l];
    const a: LayerActs<T> = {
      ln1: ws.get(p + 'ln1', R * D), m1: ws.get(p + 'm1', R), r1: ws.get(p + 'r1', R),
      qkv: ws.get(p + 'qkv', R * 3 * D), att: ws.get(p + 'att', R * D), lse: ws.get(p + 'lse', R * H),
      mid: train ? ws.get(p + 'mid', R * D) : cur,
      ln2: train ? ws.get(p + 'ln2', R * D) : ws.get(p + 'ln1', R * D), m2: ws.get(p + 'm2', R), r2: ws.get(p + 'r2', R),
      fc1: ws.get(p + 'fc1', R * 4 * D), gel: train ? ws.get(p + 'gel', R * 4 * D) : ws.get(p + 'fc1', R * 4 * D),
    };
    // ---- attention: x + attn_out(Attn(RoPE(qkv(LN1(x))))) ----
    be.layerNorm(a.ln1, a.m1, a.r1, cur, bw.norm1, null, R, D, LN_EPS);
    be.linear(a.qkv, a.ln1, bw.qkv, null, R, D, 3 * D);
    be.rope(a.qkv, 3 * D, R, H, Dh, positions, m.invFreq, false);
    be.rope(a.qkv.subarray(D) as T, 3 * D, R, H, Dh, positions, m.invFreq, false);
    let k: T, v: T, kStride: number;
    if (kv) {
      const store = kv.layers[l];
      if (ops && store instanceof Float32Array && a.qkv instanceof Float32Array) {
        ops.scatterRows(store, 2 * D, a.qkv.subarray(D), 3 * D, 2 * D, kv.rowIndex);
      } else {
        for (let r = 0; r < R; r++) store.set(a.qkv.subarray(r * 3 * D + D, (r + 1) * 3 * D), kv.rowIndex[r] * 2 * D);
      }
      k = store; v = store.subarray(D) as T; kStride = 2 * D;
    } else {
      k = a.qkv.subarray(D) as T; v = a.qkv.subarray(2 * D) as T; kStride = 3 * D;
    }
    // Inference, last block: the rows before the output rows (a PFLM step's context rows) only need the K/V written
    // above; their attention, attention output and MLP feed nothing the step returns. The output rows' values do
    // not change (attention, linear and norms are row by row).
    const span = !train && l === L - 1 && 'start' in out ? out : null;
    const skip = span ? Math.min(R, Math.max(0, span.start)) : 0;
    const Rq = span ? Math.max(0, Math.min(R, span.start + span.count) - skip) : R;
    if (Rq === 0) break;
    // (the buffers cut to Rq rows: the kernels check exact sizes)
    const cut = <U extends FloatArray>(b: U, per: number): U => (Rq === R ? b : b.subarray(0, Rq * per) as U);
    const rows = span ? cur.subarray(skip * D, (skip + Rq) * D) as T : cur;
    be.attention({
      nq: Rq, nHeads: H, headDim: Dh, q: span ? a.qkv.subarray(skip * 3 * D) as T : a.qkv, qStride: 3 * D, k, kStride, v,
      vStride: kStride, out: cut(a.att, D), outStride: D, lse: cut(a.lse, H), scale,
      mask: span ? { rowPtr: mask.rowPtr.subarray(skip, skip + Rq + 1), ranges: mask.ranges } : mask,
    });
    if (train) {
      be.linear(a.mid, a.att, bw.attnOut, null, R, D, D);
      addRes(ops, a.mid, cur);
    } else {
      const tmp = cut(ws.get('i.tmp', R * D), D);
      be.linear(tmp, cut(a.att, D), bw.attnOut, null, Rq, D, D);
      addRes(ops, rows, tmp);
    }
    // ---- MLP: x + mlp.2(GELU_tanh(mlp.0(LN2(x)))) ----
    be.layerNorm(cut(a.ln2, D), cut(a.m2, 1), cut(a.r2, 1), train ? a.mid : rows, bw.norm2, null, Rq, D, LN_EPS);
    if (train) {
      // The backward needs fc1's output before the GELU.
      be.linear(a.fc1, a.ln2, bw.fc1W, bw.fc1B, R, D, 4 * D);
      be.gelu(a.gel, a.fc1, R * 4 * D, 'tanh');
    } else {
      // Same bits, without a second pass over [R, 4D] (whose rows the other core wrote).
      be.linear(cut(a.gel, 4 * D), cut(a.ln2, D), bw.fc1W, bw.fc1B, Rq, D, 4 * D, 'gelu_tanh');
    }
    if (train) {
      const next = ws.get(`a${l}.res`, R * D);
      be.linear(next, a.gel, bw.fc2W, bw.fc2B, R, 4 * D, D);
      addRes(ops, next, a.mid);
      cur = next;
      resid.push(next);
      layers.push(a);
    } else {
      const tmp = cut(ws.get('i.tmp', R * D), D);
      be.linear(tmp, cut(a.gel, 4 * D), bw.fc2W, bw.fc2B, Rq, 4 * D, D);
      addRes(ops, rows, tmp);
    }
  }

  // ---- output layer on the selected rows only ----
  const Ro = outCount(out);
  let xo: T;
  if ('rows' in out) {
    xo = ws.get('xo', Ro * D);
    for (let i = 0; i < Ro; i++) {
      const r = out.rows[i];
      if (!(r >= 0 && r < R)) throw new Error(`backbone: output row ${r} is outside [0, R = ${R})`);
      xo.set(cur.subarray(r * D, r * D + D), i * D);
    }
  } else {
    if (out.start < 0 || out.start + out.count > R) {
      throw new Error(`backbone: output rows [${out.start}, ${out.start + out.count}) exceed R = ${R}`);
    }
    xo = cur.subarray(out.start * D, (out.start + out.count) * D) as T;
  }
  const lnf = ws.get('lnf', Ro * D), mf = ws.get('mf', Ro), rf = ws.get('rf', Ro);
  be.layerNorm(lnf, mf, rf, xo, m.w.normFinal, null, Ro, D, LN_EPS);
  if (inp.logits === false) return { R, Ro, positions, mask, out, resid, layers, xo, lnf, mf, rf, logits: lnf.subarray(0, 0) as T };
  const logits = ws.get('logits', Ro * V);
  be.linear(logits, lnf, m.w.outW, m.w.outB, Ro, D, V);
  const mk = m.config.maskIndex;
  for (let i = 0; i < Ro; i++) logits[i * V + mk] = MASK_LOGIT;
  return { R, Ro, positions, mask, out, resid, layers, xo, lnf, mf, rf, logits };
}

/**
 * Backward of backboneForward (which must have run with train = true, and no other forward of this model since).
 * dlogits [Ro, V] is modified (its mask column is zeroed: the mask logit is a constant). Parameter gradients are
 * ACCUMULATED into g; returns the gradient of the input embeddings [R, D] (a workspace buffer).
 */
export function backboneBackward<T extends FloatArray>(m: BaseModel<T>, tr: BackboneTrace<T>, dlogits: T,
  g: ParamViews<T>): T {
  if (tr.layers.length !== m.config.nBlocks) throw new Error('backbone backward: the forward did not run with train = true');
  const be = m.backend();
  const { D, H, Dh, V } = m;
  const { R, Ro, positions, mask } = tr;
  const ws = m.ws;
  const scale = 1 / Math.sqrt(Dh);
  const mk = m.config.maskIndex;
  for (let i = 0; i < Ro; i++) dlogits[i * V + mk] = 0;

  // ---- output layer ----
  const dlnf = ws.get('g.dlnf', Ro * D);
  be.gemm(false, false, Ro, D, V, 1, dlogits, m.w.outW, 0, dlnf);
  be.gemm(true, false, V, D, Ro, 1, dlogits, tr.lnf, 1, g.outW);
  biasGrad(m, g.outB, dlogits, Ro, V);
  const dres = ws.zeros('g.dres', R * D);
  if ('rows' in tr.out) {
    const dxo = ws.zeros('g.dxo', Ro * D);
    be.layerNormBackward(dxo, g.normFinal, null, dlnf, tr.xo, tr.mf, tr.rf, m.w.normFinal, Ro, D);
    for (let i = 0; i < Ro; i++) {
      const r = tr.out.rows[i];
      addInPlace(dres.subarray(r * D, r * D + D) as T, dxo.subarray(i * D, i * D + D) as T);
    }
  } else {
    const { start, count } = tr.out;
    be.layerNormBackward(dres.subarray(start * D, (start + count) * D) as T, g.normFinal, null, dlnf, tr.xo, tr.mf,
      tr.rf, m.w.normFinal, Ro, D);
  }

  const dln = ws.get('g.dln', R * D);
  const datt = ws.get('g.datt', R * D);
  const dqkv = ws.get('g.dqkv', R * 3 * D);
  const dgel = ws.get('g.dgel', R * 4 * D);
  const dfc1 = ws.get('g.dfc1', R * 4 * D);
  for (let l = m.config.nBlocks - 1; l >= 0; l--) {
    const a = tr.layers[l];
    const bw = m.w.blocks[l];
    const gb = g.blocks[l];
    // ---- MLP ----
    be.gemm(false, false, R, 4 * D, D, 1, dres, bw.fc2W, 0, dgel);
    be.gemm(true, false, D, 4 * D, R, 1, dres, a.gel, 1, gb.fc2W);
    biasGrad(m, gb.fc2B, dres, R, D);
    dfc1.fill(0);
    be.geluBackward(dfc1, dgel, a.fc1, R * 4 * D, 'tanh');
    be.gemm(false, false, R, D, 4 * D, 1, dfc1, bw.fc1W, 0, dln);
    be.gemm(true, false, 4 * D, D, R, 1, dfc1, a.ln2, 1, gb.fc1W);
    biasGrad(m, gb.fc1B, dfc1, R, 4 * D);
    be.layerNormBackward(dres, gb.norm2, null, dln, a.mid, a.m2, a.r2, bw.norm2, R, D);
    // ---- attention ----
    be.gemm(false, false, R, D, D, 1, dres, bw.attnOut, 0, datt);
    be.gemm(true, false, D, D, R, 1, dres, a.att, 1, gb.attnOut);
    dqkv.fill(0);
    be.attentionBackward({
      nq: R, nHeads: H, headDim: Dh, q: a.qkv, qStride: 3 * D, k: a.qkv.subarray(D) as T, kStride: 3 * D,
      v: a.qkv.subarray(2 * D) as T, vStride: 3 * D, out: a.att, outStride: D, lse: a.lse, mask, scale,
      dout: datt, dq: dqkv, dk: dqkv.subarray(D) as T, dv: dqkv.subarray(2 * D) as T,
    });
    // RoPE is a rotation, so its gradient is the inverse rotation of the incoming gradient.
    be.rope(dqkv, 3 * D, R, H, Dh, positions, m.invFreq, true);
    be.rope(dqkv.subarray(D) as T, 3 * D, R, H, Dh, positions, m.invFreq, true);
    be.gemm(false, false, R, D, 3 * D, 1, dqkv, bw.qkv, 0, dln);
    be.gemm(true, false, 3 * D, D, R, 1, dqkv, a.ln1, 1, gb.qkv);
    be.layerNormBackward(dres, gb.norm1, null, dln, tr.resid[l], a.m1, a.r1, bw.norm1, R, D);
  }
  return dres;
}
