// The autoregressive teacher: token embeddings -> causal backbone -> logits of every position (mask logit -1000).
// Forward and backward over B rectangular sequences packed b-major, plus KV-cache sessions built on the decoder.
import type { FloatArray } from '../tensor/backend.ts';
import { embeddingGather, embeddingScatterAdd } from '../tensor/ops.ts';
import { backboneBackward, backboneForward } from './backbone.ts';
import type { BackboneTrace } from './backbone.ts';
import { BaseModel } from './core.ts';
import { KvDecoder, SessionRows } from './decoder.ts';
import { causalLayout } from './masks.ts';
import type { DType, ParamViews } from './params.ts';
import type { ModelConfig, Tensor } from './types.ts';
import { tokenBatch } from './validate.ts';

export interface ModelOptions<T extends FloatArray> {
  dtype?: DType;
  /** Flat parameter buffer in the layout's order (adopted, not copied); zeros when absent. */
  params?: T;
  invFreq?: T;
}

/** Logits of B causal sequences of T tokens (tokens [B*T], b-major); `train` keeps activations for arBackward. */
export function arForward<T extends FloatArray>(m: BaseModel<T>, tokens: Int32Array, B: number, T: number,
  train: boolean): BackboneTrace<T> {
  const { D, V } = m;
  const R = B * T;
  if (tokens.length !== R) throw new Error(`arForward: tokens has ${tokens.length} ids, expected B*T = ${B}*${T}`);
  const x = m.ws.get(train ? 'ar.x' : 'ar.xi', R * D);
  embeddingGather(x, m.w.embed, tokens, V, D);
  const lay = causalLayout(B, T);
  return backboneForward(m, { R, x, positions: lay.positions, mask: lay.mask, out: { start: 0, count: R }, train });
}

/** Backward of arForward: dlogits [B*T, V] (mask column is zeroed in place); gradients accumulate into g. */
export function arBackward<T extends FloatArray>(m: BaseModel<T>, tr: BackboneTrace<T>, tokens: Int32Array, dlogits: T,
  g: ParamViews<T>): void {
  const dx = backboneBackward(m, tr, dlogits, g);
  embeddingScatterAdd(g.embed, dx, tokens, m.V, m.D);
}

/** Split work so one forward's logits stay below this many elements (teacher targets on large vocabularies). */
export const LOGITS_CHUNK_ELEMENTS = 1 << 25;

export interface ArSession {
  /** Raw logits [B, V] of each row's next position (mask logit -1000). */
  next(): Tensor;
  /** Appends tokens to every row (rows may get different numbers of tokens, including none). */
  append(tokens: number[][]): void;
  /** Frees the cache. */
  close(): void;
}

export class ArModel<T extends FloatArray = Float32Array> extends BaseModel<T> {
  readonly kind = 'ar' as const;

  constructor(config: ModelConfig, opts: ModelOptions<T> = {}) {
    super('ar', config, opts.dtype ?? 'float32', opts.params ?? null, opts.invFreq ?? null);
  }

  /** Raw logits [B, T, V] of rectangular token rows. */
  logits(tokens: number[][]): Tensor {
    const { B, T, flat } = tokenBatch('ar.logits', 'tokens', tokens, this.V, { rect: true });
    return { shape: [B, T, this.V], data: this.logitsFlat(flat, B, T) };
  }

  /** log_softmax(logits / temperature) [B, T, V], computed in float64 from the float32 logits. */
  logProbs(tokens: number[][], temperature = 1): Tensor {
    if (typeof temperature !== 'number' || !Number.isFinite(temperature) || !(temperature > 0)) {
      throw new Error(`ar.logProbs: temperature must be a finite number > 0, got ${String(temperature)}`);
    }
    const t = this.logits(tokens);
    logSoftmaxRows(t.data, this.V, temperature);
    return t;
  }

  /** Logits of rectangular rows as a float32 [B*T*V] array, chunked over sequences to bound memory. */
  logitsFlat(tokens: Int32Array, B: number, T: number): Float32Array {
    const V = this.V;
    const out = new Float32Array(B * T * V);
    const per = Math.max(1, Math.floor(LOGITS_CHUNK_ELEMENTS / (T * V)));
    for (let b0 = 0; b0 < B; b0 += per) {
      const nb = Math.min(per, B - b0);
      const tr = arForward(this, tokens.subarray(b0 * T, (b0 + nb) * T), nb, T, false);
      out.set(tr.logits, b0 * T * V);
    }
    return out;
  }

  /** A continuous-batching decoder over this model (KV cache). */
  decoder(): KvDecoder<T> {
    return new KvDecoder(this);
  }

  /** KV-cache decoding of a (possibly ragged) batch of prefixes. */
  session(prefix: number[][]): ArSession {
    const rows = new SessionRows(this, prefix, 'ar.session');
    const { dec, ids } = rows;
    const V = this.V;
    // A row with nothing appended since its last step still has the logits of that step.
    const last: Array<Float32Array | null> = ids.map(() => null);
    return {
      next: (): Tensor => {
        rows.ensureOpen('next');
        const stale = ids.flatMap((_, i) => (last[i] === null ? [i] : []));
        if (stale.length > 0) dec.step(stale.map((i) => ids[i])).forEach((l, j) => { last[stale[j]] = l; });
        const data = new Float32Array(ids.length * V);
        last.forEach((l, i) => data.set(l!, i * V));
        return { shape: [ids.length, V], data };
      },
      append: (tokens: number[][]): void => {
        rows.append(tokens).forEach((r, i) => { if (r.length > 0) last[i] = null; });
      },
      close: (): void => rows.close(),
    };
  }
}

/** In place: row-wise log_softmax(x / temperature) over rows of length V, in float64. */
export function logSoftmaxRows(data: Float32Array, V: number, temperature: number): void {
  const rows = data.length / V;
  for (let r = 0; r < rows; r++) {
    const o = r * V;
    let mx = -Infinity;
    for (let i = 0; i < V; i++) {
      const z = data[o + i] / temperature;
      if (z > mx) mx = z;
    }
    let s = 0;
    for (let i = 0; i < V; i++) s += Math.exp(data[o + i] / temperature - mx);
    const lz = mx + Math.log(s);
    for (let i = 0; i < V; i++) data[o + i] = data[o + i] / temperature - lz;
  }
}
