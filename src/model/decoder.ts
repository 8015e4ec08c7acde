// Continuous-batching decoder (types.ts BatchDecoder) shared by the AR model and the PFLM. Every step is ONE packed
// forward over all named sequences: their pending context tokens (K/V committed to the sequence's cache) and, for a
// PFLM, k noise rows per sequence after them (K/V written past the cache end and overwritten next step: transient).
//
// KV cache layout: per layer one pool of fixed-size pages of rows [K(D) | V(D)]. A sequence owns a list of pages
// whose addresses ascend (so its keys, in logical order, are ascending disjoint ranges as the attention mask
// contract requires, and every query's key order equals the full forward's); growing a sequence adds a page and
// never moves its K/V. The pool doubles (one copy) when no suitable page is free, or compacts in address order
// (which keeps every page list ascending) when at least half of it is free. One attention call per layer covers
// every sequence of a step, whatever the mix of lengths.
import type { FloatArray } from '../tensor/backend.ts';
import { embeddingGather } from '../tensor/ops.ts';
import { backboneForward, type BackboneTrace } from './backbone.ts';
import type { BaseModel } from './core.ts';
import { MaskBuilder } from './masks.ts';
import { noiseEncoderForward } from './noise-encoder.ts';
import type { BatchDecoder, DecoderStats, ModelConfig, SeqId, StepOptions } from './types.ts';
import { checkK, checkUnit, tokenBatch, tokenRow } from './validate.ts';

interface Seq {
  id: SeqId;
  pages: number[]; // ascending page indices; logical position p lives in row pages[p >> PAGE_BITS] * PAGE + (p & PAGE_MASK)
  len: number; // committed rows (cached K/V)
  pending: number[];
}

const PAGE_BITS = 5;
const PAGE = 1 << PAGE_BITS; // rows per page: at most PAGE - 1 unused rows per sequence
const PAGE_MASK = PAGE - 1;

/** Bytes of float32 KV pool that preallocate(sequences, rows) holds for a model of this shape (whole pages of PAGE
 * rows; K and V of every layer). */
export function kvPoolBytes(cfg: ModelConfig, sequences: number, rows: number): number {
  return sequences * Math.ceil(rows / PAGE) * PAGE * 2 * cfg.hiddenSize * cfg.nBlocks * 4;
}

// Noise rows encoded ahead of their step are kept by uniform, up to this many floats (then the cache starts over).
const NOISE_CACHE_FLOATS = 1 << 21;

export class KvDecoder<T extends FloatArray = Float32Array> implements BatchDecoder {
  readonly kind: 'ar' | 'pflm';
  readonly config: ModelConfig;
  private readonly seqs = new Map<SeqId, Seq>();
  private nextId = 1;
  private pool: T[] = [];
  private nPages = 0;
  private used = new Uint8Array(0);
  private nUsed = 0;
  private compactions = 0;
  private grows = 0;
  // PFLM: embeddings of noise rows encoded ahead of their step (step's noiseAhead), by uniform. The encoder is a pure
  // function of (u, tau) computed row by row with row-invariant kernels, so a cached row has the bits it would get
  // if encoded in its own step, and keying by value is exact.
  private readonly noiseCache = new Map<number, { tau: number; row: T }>();
  private noiseRowsReused = 0;

  constructor(private readonly model: BaseModel<T>) {
    this.kind = model.kind;
    this.config = model.config;
    for (let l = 0; l < model.config.nBlocks; l++) this.pool.push(model.alloc(0));
  }

  open(prompt: number[]): SeqId {
    const toks = tokenRow('decoder.open', 'prompt', prompt, this.model.V);
    const id = this.nextId++;
    this.seqs.set(id, { id, pages: [], len: 0, pending: toks });
    return id;
  }

  close(id: SeqId): void {
    const s = this.seqs.get(id);
    if (!s) return;
    for (const p of s.pages) this.used[p] = 0;
    this.nUsed -= s.pages.length;
    this.seqs.delete(id);
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

  /** Rows of KV pool per layer currently allocated (for memory reports). */
  arenaSize(): number {
    return this.nPages * PAGE;
  }

  /** Sizes the KV pool for `sequences` sequences of up to `rows` positions each (context plus transient noise rows),
   * so that decoding that much never grows the pool mid-run (benchmarks call it during warm-up; a server can call it
   * at start-up). Only grows; existing sequences are kept. The new pages are written once here: a fresh allocation
   * is backed by the OS on first write, which would otherwise land in the decode steps that fill the pool (1 ms per
   * PFLM step of the official architecture at batch 1, a third of a millisecond per AR step, scripts/profile-step.ts). */
  preallocate(sequences: number, rows: number): void {
    for (const [name, v] of [['sequences', sequences], ['rows', rows]] as const) {
      if (!Number.isSafeInteger(v) || v < 0) throw new Error(`decoder.preallocate: ${name} must be an integer >= 0, got ${String(v)}`);
    }
    const pages = sequences * Math.ceil(rows / PAGE);
    if (pages <= this.nPages) return;
    const from = this.pool[0]?.length ?? 0; // every layer's pool has the same size
    this.grow(pages);
    for (const a of this.pool) a.fill(0, from);
  }

  /** KV pool bookkeeping: pages allocated and in use, and how often the pool was compacted or grown; PFLM noise rows
   * taken from the rows encoded ahead (step's noiseAhead). */
  stats(): DecoderStats {
    return {
      pageRows: PAGE, pages: this.nPages, usedPages: this.nUsed, compactions: this.compactions, grows: this.grows,
      noiseRowsReused: this.noiseRowsReused,
    };
  }

  private get(fn: string, id: SeqId): Seq {
    const s = this.seqs.get(id);
    if (!s) throw new Error(`${fn}: unknown or closed sequence id ${String(id)}`);
    return s;
  }

  step(ids: SeqId[], opts: StepOptions = {}): Float32Array[] {
    return this.logitsOf(this.forward('decoder.step', ids, opts, true), true);
  }

  stepShared(ids: SeqId[], opts: StepOptions = {}): Float32Array[] {
    return this.logitsOf(this.forward('decoder.stepShared', ids, opts, true), false);
  }

  /** Float32 models: a step without the output layer. Returns the output layer's input (the final norm of the PFLM's
   * noise rows or of each AR sequence's last row, [sum of slots, D], a view of the model's scratch memory valid until
   * its next forward) and each sequence's slot count; `outputLayer()` gives the weights that turn it into the step's
   * logits. */
  stepHidden(ids: SeqId[], opts: StepOptions = {}): { rows: Float32Array; slots: number[] } {
    if (this.model.dtype !== 'float32') throw new Error('decoder.stepHidden: only for float32 models');
    const { tr, slots } = this.forward('decoder.stepHidden', ids, opts, false);
    return { rows: tr.lnf as unknown as Float32Array, slots };
  }

  /** The output layer: logits = rows w^T + bias, then the [MASK] logit set to -1000. */
  outputLayer(): { w: T; bias: T; maskIndex: number } {
    return { w: this.model.w.outW, bias: this.model.w.outB, maskIndex: this.config.maskIndex };
  }

  /** Per sequence its logits, copied or as views of the model's scratch logits. */
  private logitsOf(r: { tr: { logits: T }; slots: number[] }, copy: boolean): Float32Array[] {
    const V = this.model.V;
    const res: Float32Array[] = [];
    let o = 0;
    for (const n of r.slots) {
      const slice = r.tr.logits.subarray(o * V, (o + n) * V);
      res.push(slice instanceof Float32Array ? (copy ? slice.slice() : slice) : Float32Array.from(slice));
      o += n;
    }
    return res;
  }

  /** One packed forward (with or without the output layer); slots: output rows per sequence. */
  private forward(fn: string, ids: SeqId[], opts: StepOptions, logits: boolean): { tr: BackboneTrace<T>; slots: number[] } {
    const m = this.model;
    const { D, V } = m;
    if (!Array.isArray(ids) || ids.length === 0) throw new Error(`${fn}: ids must be a non-empty array of sequence ids`);
    const seqs = ids.map((id) => this.get(fn, id));
    if (new Set(ids).size !== ids.length) throw new Error(`${fn}: ids contains a sequence twice`);
    const S = seqs.length;
    const ks = new Array<number>(S).fill(0);
    const noiseFlat: number[] = [];
    const tauFlat: number[] = [];
    const aheadU: number[] = [];
    const aheadTau: number[] = [];
    if (this.kind === 'ar') {
      if (opts.noise !== undefined) throw new Error(`${fn}: noise was given but this is an AR model`);
      if (opts.noiseAhead !== undefined) throw new Error(`${fn}: noiseAhead was given but this is an AR model`);
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
      // Row i of `rows` (named `name`) into the flat uniforms and taus; returns its length.
      const flatten = (name: string, rows: number[][], i: number, tau: number, u: number[], taus: number[]): number => {
        const row = rows[i];
        if (!Array.isArray(row) && !ArrayBuffer.isView(row)) throw new Error(`${fn}: ${name}[${i}] must be an array of uniforms`);
        for (let j = 0; j < row.length; j++) {
          u.push(checkUnit(fn, `${name}[${i}][${j}]`, row[j]));
          taus.push(tau);
        }
        return row.length;
      };
      const ahead = opts.noiseAhead;
      if (ahead !== undefined && (!Array.isArray(ahead) || ahead.length !== S)) {
        throw new Error(`${fn}: noiseAhead must hold one array of uniforms per sequence (${S}); got ${Array.isArray(ahead) ? ahead.length + ' rows' : typeof ahead}`);
      }
      for (let i = 0; i < S; i++) {
        const tau = opts.tau ? opts.tau[i] : 1;
        if (typeof tau !== 'number' || !Number.isFinite(tau) || !(tau > 0)) {
          throw new Error(`${fn}: tau[${i}] = ${String(tau)} is not a finite temperature > 0`);
        }
        ks[i] = flatten('noise', noise, i, tau, noiseFlat, tauFlat);
        checkK(fn, `noise[${i}]`, ks[i], m.config.maxK);
        if (ahead) flatten('noiseAhead', ahead, i, tau, aheadU, aheadTau);
      }
    }
    // Pages for the new context rows and the transient noise rows, before any row index is taken (a compaction
    // moves pages).
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
        rowIndex[r] = this.addRow(mb, s, s.len + p);
      }
      if (this.kind === 'ar') outRows[i] = r - 1;
    }
    for (let i = 0; i < S; i++) {
      const s = seqs[i];
      const ctx = s.len + s.pending.length;
      for (let a = 0; a < ks[i]; a++, r++) {
        // Noise slot a+1 sits after the last context token t = ctx - 1: position t + a + 1.
        positions[r] = ctx + a;
        rowIndex[r] = this.addRow(mb, s, ctx + a);
      }
    }
    const x = m.ws.get('dec.x', R * D);
    if (Rc > 0) embeddingGather(x.subarray(0, Rc * D) as T, m.w.embed, tokens, V, D);
    if (Rn > 0 || aheadU.length > 0) this.encodeNoise(noiseFlat, tauFlat, aheadU, aheadTau, x.subarray(Rc * D, R * D) as T);
    const tr = backboneForward(m, {
      R, x, positions, mask: mb.build(), kv: { layers: this.pool, rowIndex },
      out: this.kind === 'ar' ? { rows: outRows } : { start: Rc, count: Rn }, train: false, logits,
    });
    for (const s of seqs) {
      s.len += s.pending.length;
      s.pending = [];
    }
    return { tr, slots: this.kind === 'ar' ? ks.map(() => 1) : ks };
  }

  /** Noise rows (u, tau) into dest [Rn, D]: cached rows are copied, the others are encoded in one pass together with
   * the rows ahead (not yet cached), which go to the cache. */
  private encodeNoise(u: number[], tau: number[], aheadU: number[], aheadTau: number[], dest: T): void {
    const m = this.model;
    const D = m.D;
    const cache = this.noiseCache;
    if (cache.size === 0 && aheadU.length === 0) {
      noiseEncoderForward(m, u, tau, dest, false);
      return;
    }
    const encU: number[] = [];
    const encTau: number[] = [];
    const target: number[] = []; // row of dest, or -1: to the cache
    for (let r = 0; r < u.length; r++) {
      const hit = cache.get(u[r]);
      if (hit && hit.tau === tau[r]) {
        dest.set(hit.row, r * D);
        cache.delete(u[r]);
        this.noiseRowsReused++;
      } else {
        encU.push(u[r]);
        encTau.push(tau[r]);
        target.push(r);
      }
    }
    for (let j = 0; j < aheadU.length; j++) {
      const hit = cache.get(aheadU[j]);
      if (hit && hit.tau === aheadTau[j]) continue;
      encU.push(aheadU[j]);
      encTau.push(aheadTau[j]);
      target.push(-1);
    }
    if (encU.length === 0) return;
    const enc = m.ws.get('dec.noise', encU.length * D);
    noiseEncoderForward(m, encU, encTau, enc, false);
    if ((cache.size + encU.length) * D > NOISE_CACHE_FLOATS) cache.clear();
    for (let j = 0; j < encU.length; j++) {
      const row = enc.subarray(j * D, (j + 1) * D) as T;
      if (target[j] >= 0) dest.set(row, target[j] * D);
      else cache.set(encU[j], { tau: encTau[j], row: row.slice() as T });
    }
  }

  /** Adds the query of logical position q of s to the mask (keys: positions 0..q) and returns its pool row. */
  private addRow(mb: MaskBuilder, s: Seq, q: number): number {
    const last = q >> PAGE_BITS;
    let start = -1, end = -1;
    for (let i = 0; i <= last; i++) {
      const a = s.pages[i] * PAGE;
      const b = a + (i < last ? PAGE : (q & PAGE_MASK) + 1);
      if (a === end) {
        end = b; // physically adjacent pages form one range
      } else {
        if (start >= 0) mb.range(start, end);
        start = a;
        end = b;
      }
    }
    mb.range(start, end);
    mb.endQuery();
    return end - 1;
  }

  /** Gives s enough pages for `rows` logical positions. */
  private reserve(s: Seq, rows: number): void {
    while (s.pages.length * PAGE < rows) s.pages.push(this.allocPage(s));
  }

  /** A free page above s's last page (keeping its list ascending); compacts or grows the pool when there is none. */
  private allocPage(s: Seq): number {
    const after = (): number => (s.pages.length > 0 ? s.pages[s.pages.length - 1] + 1 : 0);
    for (let p = after(); p < this.nPages; p++) {
      if (!this.used[p]) return this.take(p);
    }
    // After a compaction every free page lies above every used one, so the loop below cannot fail.
    if (this.nPages - this.nUsed >= this.nPages / 2 && this.nUsed < this.nPages) this.compact();
    else this.grow(Math.max(2 * this.nPages, 4));
    for (let p = after(); p < this.nPages; p++) {
      if (!this.used[p]) return this.take(p);
    }
    throw new Error('decoder: internal error, no free KV page after compaction');
  }

  private take(p: number): number {
    this.used[p] = 1;
    this.nUsed++;
    return p;
  }

  /** Slides used pages down in address order, so each sequence's page list stays ascending. */
  private compact(): void {
    this.compactions++;
    const w = PAGE * 2 * this.model.D;
    const dest = new Int32Array(this.nPages).fill(-1);
    let n = 0;
    for (let p = 0; p < this.nPages; p++) {
      if (!this.used[p]) continue;
      if (p !== n) for (const a of this.pool) a.copyWithin(n * w, p * w, (p + 1) * w);
      dest[p] = n++;
    }
    for (const s of this.seqs.values()) s.pages = s.pages.map((p) => dest[p]);
    this.used.fill(0);
    this.used.fill(1, 0, n);
  }

  private grow(pages: number): void {
    this.grows++;
    const w = PAGE * 2 * this.model.D;
    this.pool = this.pool.map((old) => {
      const a = this.model.alloc(pages * w);
      a.set(old);
      return a;
    });
    const used = new Uint8Array(pages);
    used.set(this.used);
    this.used = used;
    this.nPages = pages;
  }
}

/** A continuous-batching decoder over any model kind (same as model.decoder()). */
export function createDecoder<T extends FloatArray>(model: BaseModel<T>): KvDecoder<T> {
  return new KvDecoder(model);
}

/** The sequences behind a model's `session(prefix)`: one decoder sequence per (possibly ragged) prefix row, with the
 * checks both model kinds share. */
export class SessionRows<T extends FloatArray = Float32Array> {
  readonly dec: KvDecoder<T>;
  readonly ids: SeqId[];
  private closed = false;

  constructor(model: BaseModel<T>, prefix: number[][], private readonly name: string) {
    const { rows } = tokenBatch(`${name}`, 'prefix', prefix, model.V, { rect: false });
    this.dec = new KvDecoder(model);
    this.ids = rows.map((r) => this.dec.open(r));
  }

  ensureOpen(fn: string): void {
    if (this.closed) throw new Error(`${this.name}.${fn}: the session is closed`);
  }

  /** Appends tokens[i] to row i (rows may get different numbers of tokens, including none); returns the rows. */
  append(tokens: number[][]): number[][] {
    const fn = `${this.name}.append`;
    this.ensureOpen('append');
    if (!Array.isArray(tokens) || tokens.length !== this.ids.length) {
      throw new Error(`${fn}: tokens must have one row per sequence (${this.ids.length}), got ${Array.isArray(tokens) ? tokens.length : typeof tokens}`);
    }
    const rows = tokens.map((r, b) => tokenRow(fn, `tokens[${b}]`, r, this.dec.config.vocabSize, true));
    rows.forEach((r, i) => this.dec.append(this.ids[i], r));
    return rows;
  }

  close(): void {
    this.closed = true;
    for (const id of this.ids) this.dec.close(id);
  }
}
