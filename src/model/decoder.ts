// Continuous-batching decoder (types.ts BatchDecoder) shared by the AR model and the PFLM. Every step is ONE packed
// forward over all named sequences: their pending context tokens (K/V committed to the sequence's cache) and, for a
// PFLM, k noise rows per sequence after them (K/V written past the cache end and overwritten next step: transient).
//
// KV cache layout: per layer one arena of rows [K(D) | V(D)]; each sequence owns a contiguous segment of rows, so a
// query's allowed keys are one range [segment start, own row] and a step needs one attention call per layer whatever
// the mix of sequence lengths. Segments grow by doubling (relocating to the arena top); the arena compacts live
// segments when it runs out of room and grows only when compaction is not enough.
import type { FloatArray } from '../tensor/backend.ts';
import { embeddingGather } from '../tensor/ops.ts';
import { backboneForward } from './backbone.ts';
import type { BaseModel } from './core.ts';
import { MaskBuilder } from './masks.ts';
import { noiseEncoderForward } from './noise-encoder.ts';
import type { BatchDecoder, ModelConfig, SeqId } from './types.ts';
import { checkK, checkUnit, tokenRow } from './validate.ts';

interface Seq {
  id: SeqId;
  start: number; // first arena row of the segment
  cap: number; // rows reserved
  len: number; // committed rows (cached K/V)
  pending: number[];
}

const MIN_SEGMENT = 16;

export class KvDecoder<T extends FloatArray = Float32Array> implements BatchDecoder {
  readonly kind: 'ar' | 'pflm';
  readonly config: ModelConfig;
  private readonly seqs = new Map<SeqId, Seq>();
  private nextId = 1;
  private arena: T[] = [];
  private arenaRows = 0;
  private top = 0;

  constructor(private readonly model: BaseModel<T>) {
    this.kind = model.kind;
    this.config = model.config;
    for (let l = 0; l < model.config.nBlocks; l++) this.arena.push(model.alloc(0));
  }

  open(prompt: number[]): SeqId {
    const toks = tokenRow('decoder.open', 'prompt', prompt, this.model.V);
    const id = this.nextId++;
    this.seqs.set(id, { id, start: 0, cap: 0, len: 0, pending: toks });
    return id;
  }

  close(id: SeqId): void {
    this.seqs.delete(id);
    if (this.seqs.size === 0) this.top = 0;
  }

  append(id: SeqId, tokens: number[]): void {
    const s = this.get('decoder.append', id);
    const toks = tokenRow('decoder.append', 'tokens', tokens, this.model.V, true);
    for (const t of toks) s.pending.push(t);
  }

  length(id: SeqId): number {
    const s = this.get('decoder.length', id);
    return s.len + s.pending.length;
  }

  /** Open sequence ids. */
  ids(): SeqId[] {
    return [...this.seqs.keys()];
  }

  /** Rows of KV arena per layer currently allocated (for memory reports). */
  arenaSize(): number {
    return this.arenaRows;
  }

  private get(fn: string, id: SeqId): Seq {
    const s = this.seqs.get(id);
    if (!s) throw new Error(`${fn}: unknown or closed sequence id ${String(id)}`);
    return s;
  }

  step(ids: SeqId[], opts: { noise?: number[][]; tau?: number[] } = {}): Float32Array[] {
    const fn = 'decoder.step';
    const m = this.model;
    const { D, V } = m;
    if (!Array.isArray(ids) || ids.length === 0) throw new Error(`${fn}: ids must be a non-empty array of sequence ids`);
    const seqs = ids.map((id) => this.get(fn, id));
    if (new Set(ids).size !== ids.length) throw new Error(`${fn}: ids contains a sequence twice`);
    const S = seqs.length;
    const ks = new Array<number>(S).fill(0);
    const noiseFlat: number[] = [];
    const tauFlat: number[] = [];
    if (this.kind === 'ar') {
      if (opts.noise !== undefined) throw new Error(`${fn}: noise was given but this is an AR model`);
      seqs.forEach((s) => {
        if (s.pending.length === 0) throw new Error(`${fn}: sequence ${s.id} has no pending tokens (append first)`);
      });
    } else {
      const noise = opts.noise;
      if (!Array.isArray(noise) || noise.length !== S) {
        throw new Error(`${fn}: a PFLM step needs noise [${S}][k], one row per sequence; got ${Array.isArray(noise) ? noise.length + ' rows' : typeof noise}`);
      }
      if (opts.tau !== undefined && (!Array.isArray(opts.tau) || opts.tau.length !== S)) {
        throw new Error(`${fn}: tau must have one value per sequence (${S})`);
      }
      for (let i = 0; i < S; i++) {
        const row = noise[i];
        if (!Array.isArray(row) && !ArrayBuffer.isView(row)) throw new Error(`${fn}: noise[${i}] must be an array of uniforms`);
        checkK(fn, `noise[${i}]`, row.length, m.config.maxK);
        ks[i] = row.length;
        const tau = opts.tau ? opts.tau[i] : 1;
        if (typeof tau !== 'number' || !Number.isFinite(tau) || !(tau > 0)) {
          throw new Error(`${fn}: tau[${i}] = ${String(tau)} is not a finite temperature > 0`);
        }
        for (let j = 0; j < row.length; j++) {
          noiseFlat.push(checkUnit(fn, `noise[${i}][${j}]`, row[j]));
          tauFlat.push(tau);
        }
      }
    }
    // Reserve room for the new context rows and the transient noise rows.
    for (let i = 0; i < S; i++) this.reserve(seqs[i], seqs[i].len + seqs[i].pending.length + ks[i]);

    let Rc = 0;
    for (const s of seqs) Rc += s.pending.length;
    const Rn = noiseFlat.length;
    const R = Rc + Rn;
    const tokens = new Int32Array(Rc);
    const positions = new Int32Array(R);
    const rowIndex = new Int32Array(R);
    const mb = new MaskBuilder(R, R);
    const outRows = new Int32Array(this.kind === 'ar' ? S : 0);
    let r = 0;
    for (let i = 0; i < S; i++) {
      const s = seqs[i];
      for (let p = 0; p < s.pending.length; p++, r++) {
        tokens[r] = s.pending[p];
        positions[r] = s.len + p;
        rowIndex[r] = s.start + s.len + p;
        mb.range(s.start, rowIndex[r] + 1);
        mb.endQuery();
      }
      if (this.kind === 'ar') outRows[i] = r - 1;
    }
    for (let i = 0; i < S; i++) {
      const s = seqs[i];
      const ctx = s.len + s.pending.length;
      for (let a = 0; a < ks[i]; a++, r++) {
        // Noise slot a+1 sits after the last context token t = ctx - 1: position t + a + 1.
        positions[r] = ctx + a;
        rowIndex[r] = s.start + ctx + a;
        mb.range(s.start, rowIndex[r] + 1);
        mb.endQuery();
      }
    }
    const x = m.ws.get('dec.x', R * D);
    if (Rc > 0) embeddingGather(x.subarray(0, Rc * D) as T, m.w.embed, tokens, V, D);
    if (Rn > 0) noiseEncoderForward(m, noiseFlat, tauFlat, x.subarray(Rc * D) as T, false);
    const tr = backboneForward(m, {
      R, x, positions, mask: mb.build(), kv: { layers: this.arena, rowIndex },
      out: this.kind === 'ar' ? { rows: outRows } : { start: Rc, count: Rn }, train: false,
    });
    for (const s of seqs) {
      s.len += s.pending.length;
      s.pending = [];
    }
    const res: Float32Array[] = [];
    let o = 0;
    for (let i = 0; i < S; i++) {
      const n = this.kind === 'ar' ? 1 : ks[i];
      const slice = tr.logits.subarray(o * V, (o + n) * V);
      res.push(slice instanceof Float32Array ? slice.slice() : Float32Array.from(slice));
      o += n;
    }
    return res;
  }

  /** Makes the sequence's segment hold at least `rows` rows, keeping its committed K/V. */
  private reserve(s: Seq, rows: number): void {
    if (s.cap >= rows) return;
    const cap = Math.max(rows, 2 * s.cap, MIN_SEGMENT);
    if (this.top + cap > this.arenaRows) this.compact();
    if (this.top + cap > this.arenaRows) this.grow(Math.max(2 * this.arenaRows, this.top + cap));
    const start = this.top;
    this.top += cap;
    const w = 2 * this.model.D;
    // The new segment lies above every live segment, so the copy never overlaps its source.
    if (s.len > 0) for (const a of this.arena) a.copyWithin(start * w, s.start * w, (s.start + s.len) * w);
    s.start = start;
    s.cap = cap;
  }

  /** Moves live segments down to the arena bottom in address order (each move goes to a lower address). */
  private compact(): void {
    const live = [...this.seqs.values()].filter((s) => s.cap > 0).sort((a, b) => a.start - b.start);
    const w = 2 * this.model.D;
    let pos = 0;
    for (const s of live) {
      if (s.start !== pos && s.len > 0) {
        for (const a of this.arena) a.copyWithin(pos * w, s.start * w, (s.start + s.len) * w);
      }
      s.start = pos;
      pos += s.cap;
    }
    this.top = pos;
  }

  private grow(rows: number): void {
    const w = 2 * this.model.D;
    this.arena = this.arena.map((old) => {
      const a = this.model.alloc(rows * w);
      a.set(old.subarray(0, this.top * w));
      return a;
    });
    this.arenaRows = rows;
  }
}

/** A continuous-batching decoder over any model kind (same as model.decoder()). */
export function createDecoder<T extends FloatArray>(model: BaseModel<T>): KvDecoder<T> {
  return new KvDecoder(model);
}
