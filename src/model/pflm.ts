// The push-forward LM (KFORCING.md sections 3-6): the AR backbone plus a noise encoder whose outputs are extra input
// rows. Training uses the staircase pass (all windows of a sequence in one forward), self-forcing targets use the
// double pass, decoding uses the shared KV decoder with transient noise rows.
import type { FloatArray } from '../tensor/backend.ts';
import { embeddingGather, embeddingScatterAdd } from '../tensor/ops.ts';
import { Rng } from '../tensor/rng.ts';
import { backboneBackward, backboneForward } from './backbone.ts';
import type { BackboneTrace } from './backbone.ts';
import { BaseModel } from './core.ts';
import { KvDecoder, SessionRows } from './decoder.ts';
import { staircaseLayout, stairRow } from './masks.ts';
import { noiseEncoderBackward, noiseEncoderForward } from './noise-encoder.ts';
import type { NoiseTrace } from './noise-encoder.ts';
import type { ParamViews } from './params.ts';
import type { ModelConfig, Tensor } from './types.ts';
import type { ModelOptions } from './ar.ts';
import { LOGITS_CHUNK_ELEMENTS } from './ar.ts';
import { checkK, noiseCube, noiseMatrix, tauVector, tokenBatch, toF32 } from './validate.ts';

export interface StairTrace<T extends FloatArray> {
  trace: BackboneTrace<T>;
  noise: NoiseTrace<T>;
  B: number; N: number; k: number;
  context: Int32Array;
}

/**
 * Staircase pass: context [B*N] (b-major), noise [B*N*k] (b, window t, slot a), tau [B]. Logits of the noise rows,
 * [B, N, k, V] in that order (window t slot a predicts token t + a + 1).
 */
export function stairForward<T extends FloatArray>(m: BaseModel<T>, context: Int32Array, B: number, N: number,
  noise: ArrayLike<number>, tau: ArrayLike<number>, k: number, train: boolean): StairTrace<T> {
  const { D, V } = m;
  if (context.length !== B * N) throw new Error(`stairForward: context has ${context.length} ids, expected B*N = ${B}*${N}`);
  if (noise.length !== B * N * k) throw new Error(`stairForward: noise has ${noise.length} values, expected B*N*k = ${B}*${N}*${k}`);
  if (tau.length !== B) throw new Error(`stairForward: tau has ${tau.length} values, expected B = ${B}`);
  const lay = staircaseLayout(B, N, k);
  const Rc = B * N, Rn = B * N * k;
  const x = m.ws.get(train ? 'st.x' : 'st.xi', lay.rows * D);
  embeddingGather(x.subarray(0, Rc * D) as T, m.w.embed, context, V, D);
  const rowTau = new Float64Array(Rn);
  for (let b = 0; b < B; b++) rowTau.fill(tau[b], b * N * k, (b + 1) * N * k);
  const nt = noiseEncoderForward(m, noise, rowTau, x.subarray(Rc * D) as T, train);
  const trace = backboneForward(m, {
    R: lay.rows, x, positions: lay.positions, mask: lay.mask, out: { start: Rc, count: Rn }, train,
  });
  return { trace, noise: nt, B, N, k, context };
}

/** Backward of stairForward (train = true): dlogits [B*N*k, V]; gradients accumulate into g. */
export function stairBackward<T extends FloatArray>(m: BaseModel<T>, st: StairTrace<T>, dlogits: T, g: ParamViews<T>): void {
  const { D, V } = m;
  const Rc = st.B * st.N;
  const dx = backboneBackward(m, st.trace, dlogits, g);
  embeddingScatterAdd(g.embed, dx.subarray(0, Rc * D) as T, st.context, V, D);
  noiseEncoderBackward(m, st.noise, dx.subarray(Rc * D) as T, g.noise!);
}

/**
 * Double pass (teacher pass 2 of self-forcing, no gradient): per window t, F1 = the k tokens y1 [B*N*k] the teacher
 * produced at positions t+1..t+k, F2 = k noise rows noise2 [B*N*k] at t+k+1..t+2k. Implemented as the staircase
 * with windows of 2k rows whose first half carries token embeddings. Returns the logits of the F2 rows
 * [B*N*k, V] (a workspace view valid until the model's next forward).
 */
export function doubleForward<T extends FloatArray>(m: BaseModel<T>, context: Int32Array, B: number, N: number,
  y1: Int32Array, noise2: ArrayLike<number>, tau: ArrayLike<number>, k: number): T {
  const { D, V } = m;
  const lay = staircaseLayout(B, N, 2 * k);
  const Rc = B * N, Rk = B * N * k;
  const x = m.ws.get('dp.x', lay.rows * D);
  embeddingGather(x.subarray(0, Rc * D) as T, m.w.embed, context, V, D);
  const rowTau = new Float64Array(Rk);
  for (let b = 0; b < B; b++) rowTau.fill(tau[b], b * N * k, (b + 1) * N * k);
  const nz = m.ws.get('dp.noise', Rk * D);
  noiseEncoderForward(m, noise2, rowTau, nz, false);
  const outRows = new Int32Array(Rk);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < N; t++) {
      for (let a = 0; a < k; a++) {
        const i = (b * N + t) * k + a;
        const f1 = stairRow(B, N, 2 * k, b, t, a);
        const f2 = stairRow(B, N, 2 * k, b, t, k + a);
        const id = y1[i];
        if (!(id >= 0 && id < V)) throw new Error(`doubleForward: y1[${i}] = ${id} is not a token id in [0, ${V})`);
        x.set(m.w.embed.subarray(id * D, id * D + D), f1 * D);
        x.set(nz.subarray(i * D, i * D + D), f2 * D);
        outRows[i] = f2;
      }
    }
  }
  return backboneForward(m, {
    R: lay.rows, x, positions: lay.positions, mask: lay.mask, out: { rows: outRows }, train: false,
  }).logits;
}

export interface PflmSession {
  /** Logits [B, k, V] of k noise slots after each row's context (noise [B][k], tau [B], default 1). */
  next(noise: number[][], tau?: number[] | number): Tensor;
  append(tokens: number[][]): void;
  close(): void;
}

export interface GenerateOptions {
  newTokens: number;
  k: number;
  /** lambda of the sequential frequency penalty (KFORCING.md section 6); default 0. */
  frequencyPenalty?: number;
  /** Uniforms of step s as [B][k] (only the first k' are used on a short last step). Default: seeded Rng. */
  noise?: (step: number) => number[][];
  /** Seed of the default noise (draws B*k uniforms per step, row-major); default 0. */
  seed?: number;
  /** Temperature the PFLM imitates, per row or one value; default 1. */
  tau?: number[] | number;
}

export class PflmModel<T extends FloatArray = Float32Array> extends BaseModel<T> {
  readonly kind = 'pflm' as const;

  constructor(config: ModelConfig, opts: ModelOptions<T> = {}) {
    super('pflm', config, opts.dtype ?? 'float32', opts.params ?? null, opts.invFreq ?? null);
  }

  /** Noise-token input embeddings [B, k, D]. */
  noiseEmbeddings(noise: number[][], tau: number[]): Tensor {
    const fn = 'pflm.noiseEmbeddings';
    if (!Array.isArray(noise)) throw new Error(`${fn}: noise must be an array [B][k] of uniforms`);
    const B = noise.length;
    if (B === 0) throw new Error(`${fn}: noise has no rows (B = 0)`);
    const { k, flat } = noiseMatrix(fn, 'noise', noise, B, null, Number.MAX_SAFE_INTEGER);
    const tv = tauVector(fn, 'tau', tau, B);
    const rowTau = new Float64Array(B * k);
    for (let b = 0; b < B; b++) rowTau.fill(tv[b], b * k, (b + 1) * k);
    const out = this.alloc(B * k * this.D);
    noiseEncoderForward(this, flat, rowTau, out, false);
    return { shape: [B, k, this.D], data: toF32(out) };
  }

  /** Staircase logits [B, N, k, V]: context [B][N] (N windows), noise [B][N][k], tau [B]. */
  stairLogits(context: number[][], noise: number[][][], tau: number[]): Tensor {
    const fn = 'pflm.stairLogits';
    const { B, T: N, flat } = tokenBatch(fn, 'context', context, this.V, { rect: true });
    const { k, flat: nz } = noiseCube(fn, 'noise', noise, B, N);
    checkK(fn, 'noise', k, this.config.maxK);
    const tv = tauVector(fn, 'tau', tau, B);
    return { shape: [B, N, k, this.V], data: this.stairLogitsFlat(flat, B, N, nz, tv, k) };
  }

  /** Staircase logits as float32 [B*N*k*V], chunked over sequences to bound memory. */
  stairLogitsFlat(context: Int32Array, B: number, N: number, noise: Float64Array, tau: Float64Array, k: number): Float32Array {
    const V = this.V;
    const out = new Float32Array(B * N * k * V);
    const per = Math.max(1, Math.floor(LOGITS_CHUNK_ELEMENTS / (N * k * V)));
    for (let b0 = 0; b0 < B; b0 += per) {
      const nb = Math.min(per, B - b0);
      const st = stairForward(this, context.subarray(b0 * N, (b0 + nb) * N), nb, N,
        noise.subarray(b0 * N * k, (b0 + nb) * N * k), tau.subarray(b0, b0 + nb), k, false);
      out.set(st.trace.logits, b0 * N * k * V);
    }
    return out;
  }

  decoder(): KvDecoder<T> {
    return new KvDecoder(this);
  }

  /** KV-cache decoding of a (possibly ragged) batch of prefixes. */
  session(prefix: number[][]): PflmSession {
    const rows = new SessionRows(this, prefix, 'pflm.session');
    const { dec, ids } = rows;
    const V = this.V;
    return {
      next: (noise: number[][], tau?: number[] | number): Tensor => {
        const fn = 'pflm.session.next';
        rows.ensureOpen('next');
        const { k } = noiseMatrix(fn, 'noise', noise, ids.length, null, this.config.maxK);
        const tv = tauVector(fn, 'tau', tau, ids.length);
        const res = dec.step(ids, { noise, tau: Array.from(tv) });
        const data = new Float32Array(ids.length * k * V);
        res.forEach((l, i) => data.set(l, i * k * V));
        return { shape: [ids.length, k, V], data };
      },
      append: (tokens: number[][]): void => { rows.append(tokens); },
      close: (): void => rows.close(),
    };
  }

  /**
   * Generates `newTokens` tokens after each prefix row, k per forward pass (the last step keeps only the first
   * k' = remaining slots). Token j of a step = argmax(logits_j - lambda * count(token)), where the counts cover the
   * tokens generated so far for that row, including earlier slots of the same step. Returns prefix + new tokens.
   */
  generate(prefix: number[][], opts: GenerateOptions): number[][] {
    const fn = 'pflm.generate';
    const { rows } = tokenBatch(fn, 'prefix', prefix, this.V, { rect: false });
    if (!opts || typeof opts !== 'object') throw new Error(`${fn}: options { newTokens, k } are required`);
    const { newTokens, k } = opts;
    if (!Number.isSafeInteger(newTokens) || newTokens < 0) throw new Error(`${fn}: newTokens must be an integer >= 0, got ${String(newTokens)}`);
    if (!Number.isSafeInteger(k)) throw new Error(`${fn}: k must be an integer, got ${String(k)}`);
    checkK(fn, 'k', k, this.config.maxK);
    const lambda = opts.frequencyPenalty ?? 0;
    if (typeof lambda !== 'number' || !Number.isFinite(lambda)) throw new Error(`${fn}: frequencyPenalty must be a finite number, got ${String(lambda)}`);
    if (opts.noise !== undefined && typeof opts.noise !== 'function') throw new Error(`${fn}: noise must be a function (step) => number[][]`);
    const B = rows.length;
    const tv = Array.from(tauVector(fn, 'tau', opts.tau, B));
    const rng = opts.noise ? null : new Rng(opts.seed ?? 0);
    const V = this.V;
    const dec = this.decoder();
    const ids = rows.map((r) => dec.open(r));
    const out = rows.map((r) => r.slice());
    const counts = rows.map(() => new Float32Array(V));
    try {
      for (let step = 0, done = 0; done < newTokens; step++) {
        const kk = Math.min(k, newTokens - done);
        let u: number[][];
        if (opts.noise) {
          u = opts.noise(step);
          if (!Array.isArray(u) || u.length !== B) throw new Error(`${fn}: noise(${step}) must return [B = ${B}][k = ${k}] uniforms`);
          u = u.map((row, b) => {
            if (!Array.isArray(row) || row.length < kk) throw new Error(`${fn}: noise(${step})[${b}] must hold at least ${kk} uniforms`);
            return row.slice(0, kk);
          });
        } else {
          u = [];
          for (let b = 0; b < B; b++) {
            const row: number[] = [];
            for (let j = 0; j < k; j++) row.push(rng!.uniform());
            u.push(row.slice(0, kk));
          }
        }
        const logits = dec.step(ids, { noise: u, tau: tv });
        for (let b = 0; b < B; b++) {
          const emitted: number[] = [];
          for (let j = 0; j < kk; j++) {
            const y = penalisedArgmax(logits[b].subarray(j * V, (j + 1) * V), counts[b], lambda);
            counts[b][y] += 1;
            emitted.push(y);
          }
          out[b].push(...emitted);
          dec.append(ids[b], emitted);
        }
        done += kk;
      }
    } finally {
      for (const id of ids) dec.close(id);
    }
    return out;
  }
}

/** argmax_v (logits[v] - lambda * counts[v]) in float32 arithmetic; ties go to the lowest id. */
export function penalisedArgmax(logits: Float32Array, counts: Float32Array, lambda: number): number {
  const lam = Math.fround(lambda);
  let best = 0;
  let bestV = -Infinity;
  for (let v = 0; v < logits.length; v++) {
    const s = counts[v] === 0 ? logits[v] : Math.fround(logits[v] - Math.fround(lam * counts[v]));
    if (s > bestV) {
      bestV = s;
      best = v;
    }
  }
  return best;
}
