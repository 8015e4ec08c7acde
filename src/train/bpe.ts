// Byte-level BPE: the GPT-2 pre-tokenizer, the byte <-> printable-character map of tokenizer.json files, a merge-rank
// encoder that reproduces the Hugging Face BPE model (lowest rank first, leftmost among equals), and a trainer.
// Every UTF-8 string is a sequence of bytes and every byte has a token, so encode/decode round-trips losslessly.

/** The GPT-2 pre-tokenizer pattern, as used by the ByteLevel pre-tokenizer of tokenizer.json (use_regex: true).
 * Its alternatives cover every character, so the concatenated matches equal the input. */
export const GPT2_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** byte -> printable character (the GPT-2 table: printable Latin-1 bytes map to themselves, the rest to U+0100..). */
export const BYTE_TO_CHAR: string[] = (() => {
  const keep: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) keep.push(b);
  for (let b = 0xa1; b <= 0xac; b++) keep.push(b);
  for (let b = 0xae; b <= 0xff; b++) keep.push(b);
  const out = new Array<string>(256);
  const kept = new Set(keep);
  for (const b of keep) out[b] = String.fromCharCode(b);
  let n = 0;
  for (let b = 0; b < 256; b++) if (!kept.has(b)) out[b] = String.fromCharCode(256 + n++);
  return out;
})();

export const CHAR_TO_BYTE: Map<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

const utf8 = new TextEncoder();

/** UTF-8 bytes of a string; ASCII strings skip the TextEncoder. */
export function utf8Bytes(s: string): Uint8Array {
  let ascii = true;
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 128) { ascii = false; break; }
  if (!ascii) return utf8.encode(s);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export function bytesToTokenString(bytes: ArrayLike<number>): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += BYTE_TO_CHAR[bytes[i]];
  return s;
}

/** Inverse of bytesToTokenString; null when a character is outside the byte-level alphabet. */
export function tokenStringToBytes(s: string): Uint8Array | null {
  const chars = Array.from(s);
  const out = new Uint8Array(chars.length);
  for (let i = 0; i < chars.length; i++) {
    const b = CHAR_TO_BYTE.get(chars[i]);
    if (b === undefined) return null;
    out[i] = b;
  }
  return out;
}

// Pair keys pack two token ids (< 2^21 each) into one exact double.
const PAIR_SHIFT = 2097152;
const pairKey = (a: number, b: number): number => a * PAIR_SHIFT + b;
export const MAX_BPE_VOCAB = PAIR_SHIFT;

/** Binary min-heap of doubles (used with rank * 2^32 + position keys). */
class NumberHeap {
  private a: number[] = [];
  get size(): number { return this.a.length; }
  clear(): void { this.a.length = 0; }
  push(x: number): void {
    const a = this.a;
    let i = a.length;
    a.push(x);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p] <= x) break;
      a[i] = a[p];
      i = p;
    }
    a[i] = x;
  }
  pop(): number {
    const a = this.a;
    const top = a[0];
    const last = a.pop()!;
    if (a.length > 0) {
      let i = 0;
      const n = a.length;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && a[r] < a[l] ? r : l;
        if (a[c] >= last) break;
        a[i] = a[c];
        i = c;
      }
      a[i] = last;
    }
    return top;
  }
}

const TWO_POW_32 = 4294967296;

/**
 * Encoder for a byte-level BPE vocabulary given as merges in rank order. Ids are arbitrary (GPT-2's are not byte
 * order); `byteIds[b]` is the id of the single-byte token for byte b.
 */
export class BpeEncoder {
  readonly byteIds: Int32Array;
  private readonly rank = new Map<number, number>(); // pair key -> merge rank
  private readonly mergedId: Int32Array; // rank -> id of the merged token
  private readonly direct: Map<string, number> | null;
  private cache = new Map<string, number[]>();
  private readonly heap = new NumberHeap();

  /**
   * @param byteIds id of each single-byte token (all 256 must exist)
   * @param merges [leftId, rightId, mergedId] in rank order
   * @param direct when given (tokenizer.json `ignore_merges`), a pre-token found in this map (byte-level string ->
   *   id) is emitted as that one token without merging
   */
  constructor(byteIds: Int32Array, merges: ReadonlyArray<readonly [number, number, number]>,
    direct: Map<string, number> | null = null) {
    if (byteIds.length !== 256) throw new Error(`BpeEncoder: byteIds must have 256 entries, got ${byteIds.length}`);
    for (let b = 0; b < 256; b++) {
      if (!(byteIds[b] >= 0)) throw new Error(`BpeEncoder: no token for byte 0x${b.toString(16).padStart(2, '0')}`);
    }
    this.byteIds = byteIds;
    this.mergedId = new Int32Array(merges.length);
    merges.forEach(([a, b, c], r) => {
      if (a >= PAIR_SHIFT || b >= PAIR_SHIFT || a < 0 || b < 0) throw new Error(`BpeEncoder: merge ${r} has id out of range`);
      const k = pairKey(a, b);
      if (!this.rank.has(k)) this.rank.set(k, r); // a duplicated merge keeps its first (lowest) rank
      this.mergedId[r] = c;
    });
    this.direct = direct;
  }

  /** Token ids of one pre-token given as UTF-8 bytes. */
  encodeBytes(bytes: Uint8Array, out: number[]): void {
    const n = bytes.length;
    if (n === 0) return;
    if (n === 1) { out.push(this.byteIds[bytes[0]]); return; }
    const ids = new Int32Array(n);
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) { ids[i] = this.byteIds[bytes[i]]; next[i] = i + 1; prev[i] = i - 1; }
    next[n - 1] = -1;
    const heap = this.heap;
    heap.clear();
    const consider = (i: number): void => {
      const j = next[i];
      if (j < 0) return;
      const r = this.rank.get(pairKey(ids[i], ids[j]));
      if (r !== undefined) heap.push(r * TWO_POW_32 + i);
    };
    for (let i = 0; i < n - 1; i++) consider(i);
    while (heap.size > 0) {
      const e = heap.pop();
      const r = Math.floor(e / TWO_POW_32);
      const i = e - r * TWO_POW_32;
      if (!alive[i]) continue;
      const j = next[i];
      if (j < 0 || this.rank.get(pairKey(ids[i], ids[j])) !== r) continue; // stale entry
      ids[i] = this.mergedId[r];
      alive[j] = 0;
      next[i] = next[j];
      if (next[j] >= 0) prev[next[j]] = i;
      if (prev[i] >= 0) consider(prev[i]);
      consider(i);
    }
    for (let i = 0; i >= 0; i = next[i]) out.push(ids[i]);
  }

  /** Token ids of a text (no special-token parsing: any text, including "<|endoftext|>", is ordinary bytes). */
  encode(text: string): number[] {
    const out: number[] = [];
    for (const m of text.matchAll(GPT2_PATTERN)) {
      const piece = m[0];
      const hit = this.cache.get(piece);
      if (hit) { for (const id of hit) out.push(id); continue; }
      const bytes = utf8Bytes(piece);
      const start = out.length;
      const d = this.direct?.get(bytesToTokenString(bytes));
      if (d !== undefined) out.push(d);
      else this.encodeBytes(bytes, out);
      if (piece.length <= 64) {
        if (this.cache.size >= 200000) this.cache = new Map();
        this.cache.set(piece, out.slice(start));
      }
    }
    return out;
  }
}

// ---- training ---------------------------------------------------------------------------------------------------

/** Max-heap on (count desc, pair key asc): the deterministic order in which merges are chosen. */
class PairHeap {
  private c: number[] = [];
  private k: number[] = [];
  get size(): number { return this.c.length; }
  private before(i: number, j: number): boolean {
    return this.c[i] > this.c[j] || (this.c[i] === this.c[j] && this.k[i] < this.k[j]);
  }
  private swap(i: number, j: number): void {
    const tc = this.c[i]; this.c[i] = this.c[j]; this.c[j] = tc;
    const tk = this.k[i]; this.k[i] = this.k[j]; this.k[j] = tk;
  }
  push(count: number, key: number): void {
    this.c.push(count); this.k.push(key);
    let i = this.c.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }
  pop(): [number, number] {
    const top: [number, number] = [this.c[0], this.k[0]];
    const lc = this.c.pop()!;
    const lk = this.k.pop()!;
    if (this.c.length > 0) {
      this.c[0] = lc; this.k[0] = lk;
      let i = 0;
      const n = this.c.length;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < n && this.before(l, best)) best = l;
        if (r < n && this.before(r, best)) best = r;
        if (best === i) break;
        this.swap(i, best);
        i = best;
      }
    }
    return top;
  }
}

/** Counts of pre-tokens (by their UTF-8 bytes, as byte-level strings) over a stream of texts. */
export class WordCounter {
  readonly counts = new Map<string, number>();
  bytes = 0;
  add(text: string): void {
    for (const m of text.matchAll(GPT2_PATTERN)) {
      const b = utf8Bytes(m[0]);
      this.bytes += b.length;
      const key = bytesToTokenString(b);
      this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    }
  }
}

export interface TrainedBpe {
  /** Merges in rank order as [left, right] ids; the merged token of merge r has id 256 + r. Ids 0..255 are bytes. */
  merges: Array<[number, number]>;
  /** UTF-8 bytes of every token id 0 .. 256 + merges.length - 1. */
  tokenBytes: Uint8Array[];
}

/**
 * Learns up to `nMerges` merges from pre-token counts: repeatedly merges the most frequent adjacent pair (ties: lowest
 * ids first), stopping early when no pair occurs at least `minFrequency` times. Deterministic for given counts.
 */
export function trainBpe(counts: Map<string, number>, nMerges: number, minFrequency = 2): TrainedBpe {
  if (!Number.isInteger(nMerges) || nMerges < 0) throw new Error(`trainBpe: nMerges must be an integer >= 0, got ${nMerges}`);
  if (256 + nMerges > MAX_BPE_VOCAB) throw new Error(`trainBpe: vocabulary of ${256 + nMerges} exceeds ${MAX_BPE_VOCAB}`);
  const tokenBytes: Uint8Array[] = [];
  for (let b = 0; b < 256; b++) tokenBytes.push(Uint8Array.of(b));
  // Sorted word order makes the result independent of the order the counts were gathered in.
  const keys = [...counts.keys()].sort();
  const words: Int32Array[] = [];
  const freq: number[] = [];
  for (const key of keys) {
    const bytes = tokenStringToBytes(key);
    if (!bytes) throw new Error(`trainBpe: word ${JSON.stringify(key)} is not a byte-level string`);
    if (bytes.length < 2) continue;
    words.push(Int32Array.from(bytes));
    freq.push(counts.get(key)!);
  }
  const pairCount = new Map<number, number>();
  const where = new Map<number, number[]>();
  for (let w = 0; w < words.length; w++) {
    const s = words[w];
    for (let i = 0; i + 1 < s.length; i++) {
      const k = pairKey(s[i], s[i + 1]);
      pairCount.set(k, (pairCount.get(k) ?? 0) + freq[w]);
      let list = where.get(k);
      if (!list) where.set(k, (list = []));
      if (list[list.length - 1] !== w) list.push(w);
    }
  }
  const heap = new PairHeap();
  for (const [k, c] of pairCount) heap.push(c, k);
  const merges: Array<[number, number]> = [];
  const stamp = new Int32Array(words.length).fill(-1);
  while (merges.length < nMerges && heap.size > 0) {
    const [c, k] = heap.pop();
    if (pairCount.get(k) !== c) continue; // stale
    if (c < minFrequency) break;
    const a = Math.floor(k / PAIR_SHIFT);
    const b = k - a * PAIR_SHIFT;
    const id = 256 + merges.length;
    merges.push([a, b]);
    const nb = new Uint8Array(tokenBytes[a].length + tokenBytes[b].length);
    nb.set(tokenBytes[a]);
    nb.set(tokenBytes[b], tokenBytes[a].length);
    tokenBytes.push(nb);
    const touched = new Set<number>();
    const list = where.get(k) ?? [];
    where.delete(k);
    for (const w of list) {
      if (stamp[w] === merges.length) continue;
      stamp[w] = merges.length;
      const s = words[w];
      let found = false;
      for (let i = 0; i + 1 < s.length; i++) if (s[i] === a && s[i + 1] === b) { found = true; break; }
      if (!found) continue;
      const f = freq[w];
      for (let i = 0; i + 1 < s.length; i++) {
        const pk = pairKey(s[i], s[i + 1]);
        pairCount.set(pk, pairCount.get(pk)! - f);
        touched.add(pk);
      }
      const t: number[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) { t.push(id); i++; } else t.push(s[i]);
      }
      const ns = Int32Array.from(t);
      words[w] = ns;
      for (let i = 0; i + 1 < ns.length; i++) {
        const pk = pairKey(ns[i], ns[i + 1]);
        pairCount.set(pk, (pairCount.get(pk) ?? 0) + f);
        touched.add(pk);
        if (ns[i] === id || ns[i + 1] === id) {
          let l = where.get(pk);
          if (!l) where.set(pk, (l = []));
          if (l[l.length - 1] !== w) l.push(w);
        }
      }
    }
    pairCount.delete(k);
    touched.delete(k);
    for (const pk of touched) {
      const pc = pairCount.get(pk)!;
      if (pc <= 0) { pairCount.delete(pk); continue; }
      heap.push(pc, pk);
    }
  }
  return { merges, tokenBytes };
}
