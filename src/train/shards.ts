// Token shards on disk: each split is a stream of token ids ([BOS] doc [EOS] [BOS] doc [EOS] ..., with a single
// separator when BOS = EOS) cut into raw little-endian uint16/uint32 files of at most `shardTokens` tokens. Readers
// use positioned reads, so training never holds the corpus in memory.
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from './atomic.ts';

export type Split = 'train' | 'val';
export type TokenDType = 'uint16' | 'uint32';

export interface ShardInfo {
  file: string; // relative to the data folder
  tokens: number;
}

export interface SplitInfo {
  docs: number;
  tokens: number;
  bytes: number; // UTF-8 bytes of text
  shards: ShardInfo[];
}

export interface SourceInfo {
  name: string;
  used: boolean;
  note?: string; // why it was skipped
  docs: number;
  bytes: number;
}

export interface DataMeta {
  format: 'kforce-tokens-1';
  dtype: TokenDType;
  tokenizer: string; // file name inside the data folder
  tokenizerKind: string;
  vocabSize: number;
  bosId: number;
  eosId: number;
  maskId: number;
  valFraction: number;
  sources: SourceInfo[];
  splits: Record<Split, SplitInfo>;
  buildSeconds: number;
}

export const META_FILE = 'meta.json';

export function dtypeFor(vocabSize: number): TokenDType {
  return vocabSize <= 65536 ? 'uint16' : 'uint32';
}

const bytesPer = (d: TokenDType): number => (d === 'uint16' ? 2 : 4);

/** Appends tokens to numbered shard files of one split, buffering writes. */
export class ShardWriter {
  readonly info: SplitInfo = { docs: 0, tokens: 0, bytes: 0, shards: [] };
  private buf: Uint16Array | Uint32Array;
  private n = 0;
  private fd: number | null = null;
  private inShard = 0;
  private last = -1;

  constructor(private readonly dir: string, private readonly split: Split, private readonly dtype: TokenDType,
    private readonly shardTokens: number, private readonly bosId: number, private readonly eosId: number) {
    if (!Number.isInteger(shardTokens) || shardTokens < 1) throw new Error(`shard size must be >= 1 token, got ${shardTokens}`);
    this.buf = dtype === 'uint16' ? new Uint16Array(1 << 16) : new Uint32Array(1 << 16);
  }

  /** One document: BOS (unless the previous EOS doubles as it), its tokens, EOS. */
  addDoc(tokens: ArrayLike<number>, textBytes: number): void {
    if (tokens.length === 0) return;
    if (!(this.bosId === this.eosId && this.last === this.eosId)) this.push(this.bosId);
    for (let i = 0; i < tokens.length; i++) this.push(tokens[i]);
    this.push(this.eosId);
    this.info.docs++;
    this.info.bytes += textBytes;
  }

  private push(t: number): void {
    if (this.fd === null || this.inShard === this.shardTokens) this.nextShard();
    this.buf[this.n++] = t;
    this.inShard++;
    this.info.tokens++;
    this.info.shards[this.info.shards.length - 1].tokens++;
    this.last = t;
    if (this.n === this.buf.length) this.flush();
  }

  private nextShard(): void {
    this.flush();
    if (this.fd !== null) { fs.fsyncSync(this.fd); fs.closeSync(this.fd); }
    const file = `${this.split}-${String(this.info.shards.length).padStart(5, '0')}.bin`;
    this.fd = fs.openSync(path.join(this.dir, file), 'w');
    this.info.shards.push({ file, tokens: 0 });
    this.inShard = 0;
  }

  private flush(): void {
    if (this.n === 0 || this.fd === null) return;
    const bytes = new Uint8Array(this.buf.buffer, 0, this.n * bytesPer(this.dtype));
    let off = 0;
    while (off < bytes.length) off += fs.writeSync(this.fd, bytes, off, bytes.length - off);
    this.n = 0;
  }

  close(): SplitInfo {
    this.flush();
    if (this.fd !== null) { fs.fsyncSync(this.fd); fs.closeSync(this.fd); this.fd = null; }
    return this.info;
  }
}

export function writeMeta(dir: string, meta: DataMeta): void {
  writeFileAtomic(path.join(dir, META_FILE), JSON.stringify(meta, null, 2) + '\n');
}

export function readMeta(dir: string): DataMeta {
  const file = path.join(dir, META_FILE);
  if (!fs.existsSync(file)) {
    throw new Error(`no token data in ${dir} (missing ${META_FILE}; build it with \`kforce data build --out ${dir}\`)`);
  }
  const meta = JSON.parse(fs.readFileSync(file, 'utf8')) as DataMeta;
  if (meta.format !== 'kforce-tokens-1') throw new Error(`${file}: unknown format ${JSON.stringify(meta.format)}`);
  return meta;
}

/** Random access to the token stream of one split, across its shard files. */
export class TokenReader {
  readonly total: number;
  private readonly fds: number[];
  private readonly starts: number[];
  private readonly sizes: number[];
  private readonly bpt: number;
  private scratch = new Uint8Array(0);

  constructor(readonly dir: string, readonly meta: DataMeta, readonly split: Split) {
    const info = meta.splits[split];
    this.bpt = bytesPer(meta.dtype);
    this.fds = [];
    this.starts = [];
    this.sizes = [];
    let start = 0;
    for (const s of info.shards) {
      const file = path.join(dir, s.file);
      if (!fs.existsSync(file)) throw new Error(`token shard missing: ${file}`);
      const size = fs.statSync(file).size;
      if (size !== s.tokens * this.bpt) {
        throw new Error(`token shard ${file} has ${size} bytes, ${META_FILE} says ${s.tokens} tokens of ${meta.dtype}`);
      }
      this.fds.push(fs.openSync(file, 'r'));
      this.starts.push(start);
      this.sizes.push(s.tokens);
      start += s.tokens;
    }
    this.total = start;
  }

  /** Copies tokens [start, start + out.length) of the split into out. */
  read(start: number, out: Int32Array): void {
    const len = out.length;
    if (start < 0 || start + len > this.total) {
      throw new Error(`TokenReader(${this.split}): range [${start}, ${start + len}) is outside [0, ${this.total})`);
    }
    if (this.scratch.length < len * this.bpt) this.scratch = new Uint8Array(len * this.bpt);
    let done = 0;
    let s = this.shardOf(start);
    while (done < len) {
      const off = start + done - this.starts[s];
      const take = Math.min(len - done, this.sizes[s] - off);
      const nbytes = take * this.bpt;
      let got = 0;
      while (got < nbytes) {
        const r = fs.readSync(this.fds[s], this.scratch, got, nbytes - got, off * this.bpt + got);
        if (r === 0) throw new Error(`TokenReader: unexpected end of ${this.meta.splits[this.split].shards[s].file}`);
        got += r;
      }
      const view = this.bpt === 2 ? new Uint16Array(this.scratch.buffer, 0, take) : new Uint32Array(this.scratch.buffer, 0, take);
      for (let i = 0; i < take; i++) out[done + i] = view[i];
      done += take;
      s++;
    }
  }

  private shardOf(pos: number): number {
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid] <= pos) lo = mid; else hi = mid - 1;
    }
    return lo;
  }

  close(): void {
    for (const fd of this.fds) fs.closeSync(fd);
    this.fds.length = 0;
  }
}
