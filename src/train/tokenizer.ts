// The text tokenizer of a model: a tokenizer.json (Hugging Face format) plus the three ids kforce needs (BOS, EOS,
// [MASK]). Byte-level BPE files (ours, GPT-2's) run on the local BpeEncoder, which is lossless for any UTF-8 text;
// any other tokenizer.json (WordPiece, Unigram, ...) runs through @huggingface/tokenizers.
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import {
  BpeEncoder, BYTE_TO_CHAR, bytesToTokenString, MAX_BPE_VOCAB, tokenStringToBytes, trainBpe, utf8Bytes, WordCounter,
} from './bpe.ts';
import { writeFileAtomic } from './atomic.ts';

export const MASK_TOKEN = '[MASK]';
export const EOT_TOKEN = '<|endoftext|>';

interface AddedTokenJson {
  id: number;
  content: string;
  single_word?: boolean;
  lstrip?: boolean;
  rstrip?: boolean;
  normalized?: boolean;
  special?: boolean;
}

/** The parts of a tokenizer.json this module reads or writes. */
export interface TokenizerJson {
  version?: string;
  added_tokens?: AddedTokenJson[];
  normalizer?: unknown;
  pre_tokenizer?: { type?: string; use_regex?: boolean; add_prefix_space?: boolean; [k: string]: unknown } | null;
  post_processor?: unknown;
  decoder?: { type?: string; [k: string]: unknown } | null;
  model: {
    type?: string;
    vocab: Record<string, number> | unknown;
    merges?: Array<string | [string, string]>;
    ignore_merges?: boolean;
    byte_fallback?: boolean;
    [k: string]: unknown;
  };
  [k: string]: unknown;
}

// BOS/EOS candidates in order of preference, for tokenizer.json files made elsewhere.
const BOS_EOS_PAIRS: Array<[string, string]> = [
  [EOT_TOKEN, EOT_TOKEN], ['<|begin_of_text|>', '<|end_of_text|>'], ['<s>', '</s>'], ['<bos>', '<eos>'],
  ['[CLS]', '[SEP]'],
];

function addedToken(id: number, content: string): AddedTokenJson {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

/** A tokenizer.json for a byte-level BPE: vocab maps byte-level strings to ids, merges in rank order. */
function byteLevelJson(vocab: string[], merges: Array<[string, string]>, specials: AddedTokenJson[]): TokenizerJson {
  const v: Record<string, number> = {};
  vocab.forEach((t, i) => { v[t] = i; });
  for (const s of specials) v[s.content] = s.id;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specials,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab: v,
      // Byte-level strings never contain a space (0x20 maps to 'Ġ'), so the classic "a b" form is unambiguous and is
      // read by every tokenizers version.
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

function isByteLevel(j: TokenizerJson): boolean {
  if (j.model?.type !== 'BPE' || j.normalizer != null || j.model.byte_fallback) return false;
  const p = j.pre_tokenizer;
  const single = p?.type === 'ByteLevel' && p.use_regex !== false && !p.add_prefix_space;
  return single && j.decoder?.type === 'ByteLevel';
}

export interface TokenizerInfo {
  kind: 'byte-bpe' | 'hf';
  vocabSize: number;
  bosId: number;
  eosId: number;
  maskId: number;
}

export class Tokenizer {
  /** Model vocabulary size V: one more than the largest id, [MASK] included. */
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly maskId: number;
  readonly kind: 'byte-bpe' | 'hf';
  /** The tokenizer.json content, with [MASK] (and a BOS/EOS token when it had none) added. */
  readonly json: TokenizerJson;
  private readonly bpe: BpeEncoder | null = null;
  private readonly hf: HfTokenizer | null = null;
  private readonly tokenBytes: Array<Uint8Array | null> = [];
  private readonly specialIds: Set<number>;
  private readonly decoder = new TextDecoder('utf-8');

  private constructor(json: TokenizerJson, source: string) {
    if (!json || typeof json !== 'object' || !json.model || typeof json.model !== 'object') {
      throw new Error(`${source}: not a tokenizer.json (no "model" object)`);
    }
    const vocab = json.model.vocab;
    const entries: Array<[string, number]> = Array.isArray(vocab)
      ? (vocab as Array<[string, number]>).map(([t], i) => [t, i]) // Unigram: [piece, score] pairs, id = index
      : Object.entries((vocab ?? {}) as Record<string, number>);
    if (entries.length === 0) throw new Error(`${source}: model.vocab is empty`);
    const added = (json.added_tokens ?? []).map((t) => ({ ...t }));
    const byContent = new Map<string, number>();
    let maxId = -1;
    for (const [t, id] of entries) {
      if (!Number.isInteger(id) || id < 0) throw new Error(`${source}: vocab entry ${JSON.stringify(t)} has id ${id}`);
      byContent.set(t, id);
      maxId = Math.max(maxId, id);
    }
    for (const t of added) {
      if (!Number.isInteger(t.id) || t.id < 0) throw new Error(`${source}: added token ${JSON.stringify(t.content)} has id ${t.id}`);
      byContent.set(t.content, t.id);
      maxId = Math.max(maxId, t.id);
    }
    const newAdded: AddedTokenJson[] = [];
    let pair = BOS_EOS_PAIRS.find(([b, e]) => byContent.has(b) && byContent.has(e));
    if (!pair) {
      // No document separator: add GPT-2's, so packing can mark document boundaries.
      const t = addedToken(++maxId, EOT_TOKEN);
      newAdded.push(t);
      byContent.set(EOT_TOKEN, t.id);
      pair = [EOT_TOKEN, EOT_TOKEN];
    }
    if (!byContent.has(MASK_TOKEN)) {
      const t = addedToken(++maxId, MASK_TOKEN);
      newAdded.push(t);
      byContent.set(MASK_TOKEN, t.id);
    }
    this.bosId = byContent.get(pair[0])!;
    this.eosId = byContent.get(pair[1])!;
    this.maskId = byContent.get(MASK_TOKEN)!;
    this.vocabSize = maxId + 1;
    this.json = newAdded.length === 0 ? json : { ...json, added_tokens: [...added, ...newAdded] };
    const allAdded = [...added, ...newAdded];
    this.specialIds = new Set(allAdded.filter((t) => t.special !== false).map((t) => t.id));
    this.specialIds.add(this.maskId);
    this.specialIds.add(this.bosId);
    this.specialIds.add(this.eosId);

    if (isByteLevel(json)) {
      this.kind = 'byte-bpe';
      if (this.vocabSize > MAX_BPE_VOCAB) throw new Error(`${source}: vocabulary of ${this.vocabSize} is too large`);
      const byteIds = new Int32Array(256).fill(-1);
      for (let b = 0; b < 256; b++) {
        const id = byContent.get(BYTE_TO_CHAR[b]);
        if (id === undefined) throw new Error(`${source}: byte-level vocabulary has no token for byte 0x${b.toString(16)}`);
        byteIds[b] = id;
      }
      this.tokenBytes = new Array<Uint8Array | null>(this.vocabSize).fill(null);
      for (const [t, id] of entries) this.tokenBytes[id] = tokenStringToBytes(t);
      for (const t of allAdded) this.tokenBytes[t.id] = utf8Bytes(t.content);
      const merges: Array<[number, number, number]> = [];
      (json.model.merges ?? []).forEach((m, r) => {
        const [a, b] = typeof m === 'string' ? splitMerge(m) : m;
        const ia = byContent.get(a);
        const ib = byContent.get(b);
        const ic = byContent.get(a + b);
        if (ia === undefined || ib === undefined || ic === undefined) {
          throw new Error(`${source}: merge ${r} (${JSON.stringify(m)}) names a token missing from the vocabulary`);
        }
        merges.push([ia, ib, ic]);
      });
      const direct = json.model.ignore_merges ? new Map(entries) : null;
      this.bpe = new BpeEncoder(byteIds, merges, direct);
    } else {
      this.kind = 'hf';
      this.hf = new HfTokenizer(this.json, { clean_up_tokenization_spaces: false });
    }
  }

  static fromJSON(json: TokenizerJson, source = 'tokenizer.json'): Tokenizer {
    return new Tokenizer(json, source);
  }

  static load(file: string): Tokenizer {
    if (!fs.existsSync(file)) throw new Error(`tokenizer file not found: ${file}`);
    let json: TokenizerJson;
    try {
      json = JSON.parse(fs.readFileSync(file, 'utf8')) as TokenizerJson;
    } catch (e) {
      throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
    }
    return new Tokenizer(json, file);
  }

  /** GPT-2's byte-level BPE (from gpt-tokenizer's r50k_base ranks): <|endoftext|> = 50256, [MASK] = 50257. */
  static async gpt2(): Promise<Tokenizer> {
    const mod = (await import('gpt-tokenizer/bpeRanks/r50k_base')) as { default: Array<string | number[]> };
    return Tokenizer.fromRanks(mod.default, 'gpt2');
  }

  /** Builds a byte-level BPE tokenizer.json from tiktoken-style ranks (id = rank; merges recovered from the ranks). */
  static fromRanks(ranks: ReadonlyArray<string | number[]>, source: string): Tokenizer {
    const bytes = ranks.map((t) => (typeof t === 'string' ? utf8Bytes(t) : Uint8Array.from(t)));
    const vocab = bytes.map((b) => bytesToTokenString(b));
    const idOf = new Map(vocab.map((t, i) => [t, i]));
    const merges: Array<[string, string]> = [];
    for (let r = 0; r < bytes.length; r++) {
      if (bytes[r].length < 2) continue;
      // Replays BPE on the token's own bytes with only lower-ranked tokens allowed: it stops at exactly two parts,
      // which are the merge that creates token r.
      let parts = Array.from(bytes[r], (b) => BYTE_TO_CHAR[b]);
      for (;;) {
        let best = -1;
        let bestRank = r;
        for (let i = 0; i + 1 < parts.length; i++) {
          const id = idOf.get(parts[i] + parts[i + 1]);
          if (id !== undefined && id < bestRank) { bestRank = id; best = i; }
        }
        if (best < 0) break;
        parts = [...parts.slice(0, best), parts[best] + parts[best + 1], ...parts.slice(best + 2)];
      }
      if (parts.length !== 2) throw new Error(`${source}: cannot recover the merge that forms token ${r}`);
      merges.push([parts[0], parts[1]]);
    }
    const n = vocab.length;
    return new Tokenizer(byteLevelJson(vocab, merges, [addedToken(n, EOT_TOKEN), addedToken(n + 1, MASK_TOKEN)]), source);
  }

  /**
   * Trains a byte-level BPE of `vocabSize` ids in all: 256 bytes, vocabSize - 258 merges, <|endoftext|>, [MASK] (last).
   * Stops early (smaller vocabulary) when no pair occurs at least minFrequency times.
   */
  static trainBpe(counter: WordCounter, vocabSize: number, minFrequency = 2): Tokenizer {
    if (!Number.isInteger(vocabSize) || vocabSize < 258) {
      throw new Error(`tokenizer: vocabulary size must be an integer >= 258 (256 bytes + 2 specials), got ${vocabSize}`);
    }
    if (counter.counts.size === 0) throw new Error('tokenizer: the training text is empty');
    const { merges, tokenBytes } = trainBpe(counter.counts, vocabSize - 258, minFrequency);
    const vocab = tokenBytes.map((b) => bytesToTokenString(b));
    const n = vocab.length;
    const pairs = merges.map(([a, b]): [string, string] => [vocab[a], vocab[b]]);
    return new Tokenizer(byteLevelJson(vocab, pairs, [addedToken(n, EOT_TOKEN), addedToken(n + 1, MASK_TOKEN)]), 'bpe');
  }

  /** Resolves a tokenizer spec: 'gpt2' or a path to a tokenizer.json. */
  static async fromSpec(spec: string): Promise<Tokenizer> {
    if (spec === 'gpt2') return Tokenizer.gpt2();
    return Tokenizer.load(spec);
  }

  /** Token ids of `text`. Byte-level: any text, special-token strings included, is encoded as ordinary bytes. */
  encode(text: string): number[] {
    if (this.bpe) return this.bpe.encode(text);
    if (text.length === 0) return [];
    return this.hf!.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: ArrayLike<number>, opts: { skipSpecial?: boolean } = {}): string {
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new Error(`tokenizer.decode: id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
      }
    }
    const list = Array.from(ids).filter((id) => !(opts.skipSpecial && this.specialIds.has(id)));
    if (this.hf) return list.length === 0 ? '' : this.hf.decode(list, { clean_up_tokenization_spaces: false });
    let total = 0;
    for (const id of list) total += this.tokenBytes[id]?.length ?? 0;
    const buf = new Uint8Array(total);
    let o = 0;
    for (const id of list) {
      const b = this.tokenBytes[id];
      if (b) { buf.set(b, o); o += b.length; }
    }
    return this.decoder.decode(buf);
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  info(): TokenizerInfo {
    return { kind: this.kind, vocabSize: this.vocabSize, bosId: this.bosId, eosId: this.eosId, maskId: this.maskId };
  }

  save(file: string): void {
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    writeFileAtomic(file, JSON.stringify(this.json));
  }
}

function splitMerge(m: string): [string, string] {
  const i = m.indexOf(' ', 1); // a merge of a leading-space token ("Ġ" in byte-level) never starts with ' '
  if (i < 0) throw new Error(`tokenizer.json: merge ${JSON.stringify(m)} is not "left right"`);
  return [m.slice(0, i), m.slice(i + 1)];
}
