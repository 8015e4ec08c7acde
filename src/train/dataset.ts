// `kforce data build`: corpus sources -> (optionally trained) tokenizer -> train/validation token shards on disk.
// Documents are split by a hash of their id, so the split is deterministic and independent of source order. Two
// streaming passes (tokenizer counts, then encoding) keep memory bounded by the vocabulary, not the corpus.
import fs from 'node:fs';
import path from 'node:path';
import { WordCounter } from './bpe.ts';
import { isValidationDoc, resolveSources } from './corpus.ts';
import type { Doc, Source } from './corpus.ts';
import { ShardWriter, dtypeFor, writeMeta } from './shards.ts';
import type { DataMeta, SourceInfo } from './shards.ts';
import { Tokenizer } from './tokenizer.ts';

export interface BuildOptions {
  /** Built-in source names ('brown', 'mix', ...) and/or paths of text files or folders. */
  sources: string[];
  out: string;
  /** 'bpe:<vocab size>' (train one on the training split), 'gpt2', or a path to a tokenizer.json. */
  tokenizer: string;
  valFraction?: number; // default 0.05
  shardTokens?: number; // default 2^27 tokens per shard file
  /** Text used to train a BPE tokenizer, at most this many bytes of the training split (default 2 GB). */
  tokenizerBytes?: number;
  minFrequency?: number; // default 2
  /** Stop reading documents once this many bytes of text were taken (all sources together). */
  maxBytes?: number;
  force?: boolean;
  log?: (msg: string) => void;
}

export const DEFAULT_VAL_FRACTION = 0.05;

/** Parses 'bpe:4096' / 'bpe4096'; null for anything else. */
export function parseBpeSpec(spec: string): number | null {
  const m = /^bpe:?(\d+)$/.exec(spec);
  return m ? Number(m[1]) : null;
}

interface UsableSource {
  source: Source;
  info: SourceInfo;
}

/** Validates every input before any reading or training starts. */
function prepare(opts: BuildOptions): UsableSource[] {
  if (!opts.sources.length) throw new Error('data build: no corpus sources given');
  const vf = opts.valFraction ?? DEFAULT_VAL_FRACTION;
  if (!(vf > 0 && vf < 1)) throw new Error(`data build: --val-fraction must be in (0, 1), got ${vf}`);
  const bpe = parseBpeSpec(opts.tokenizer);
  if (bpe === null && opts.tokenizer !== 'gpt2' && !fs.existsSync(opts.tokenizer)) {
    throw new Error(`data build: tokenizer '${opts.tokenizer}' is neither bpe:<size>, gpt2, nor an existing tokenizer.json`);
  }
  if (bpe !== null && bpe < 258) throw new Error(`data build: BPE vocabulary size must be >= 258, got ${bpe}`);
  if (fs.existsSync(opts.out) && fs.readdirSync(opts.out).length > 0 && !opts.force) {
    throw new Error(`data build: output folder ${opts.out} exists and is not empty (pass --force to replace it)`);
  }
  const out: UsableSource[] = [];
  for (const source of resolveSources(opts.sources)) {
    const why = source.unavailable();
    if (why && !source.builtin) throw new Error(`data build: ${why}`);
    out.push({ source, info: { name: source.name, used: !why, note: why ?? undefined, docs: 0, bytes: 0 } });
  }
  if (!out.some((s) => s.info.used)) {
    throw new Error(`data build: none of the sources is available: ${out.map((s) => `${s.info.name} (${s.info.note})`).join('; ')}`);
  }
  return out;
}

/** Every document of the usable sources in order, cut off after maxBytes of text. */
async function* allDocs(sources: UsableSource[], maxBytes: number): AsyncGenerator<[Doc, UsableSource, number]> {
  let taken = 0;
  for (const s of sources) {
    if (!s.info.used) continue;
    for await (const doc of s.source.docs()) {
      if (taken >= maxBytes) return;
      const text = doc.text.replace(/\r\n?/g, '\n').trim();
      if (!text) continue;
      const bytes = Buffer.byteLength(text, 'utf8');
      taken += bytes;
      yield [{ id: doc.id, text }, s, bytes];
    }
  }
}

export async function buildDataset(opts: BuildOptions): Promise<DataMeta> {
  const t0 = Date.now();
  const log = opts.log ?? ((): void => {});
  const sources = prepare(opts);
  for (const s of sources) if (!s.info.used) log(`skipping source ${s.info.name}: ${s.info.note}`);
  const vf = opts.valFraction ?? DEFAULT_VAL_FRACTION;
  const maxBytes = opts.maxBytes ?? Infinity;

  let tok: Tokenizer;
  const bpe = parseBpeSpec(opts.tokenizer);
  if (bpe !== null) {
    const budget = opts.tokenizerBytes ?? 2 ** 31;
    const counter = new WordCounter();
    for await (const [doc] of allDocs(sources, maxBytes)) {
      if (counter.bytes >= budget) break;
      if (!isValidationDoc(doc.id, vf)) counter.add(doc.text);
    }
    if (counter.bytes === 0) throw new Error('data build: the corpus is empty (no training text in the given sources)');
    const t1 = Date.now();
    tok = Tokenizer.trainBpe(counter, bpe, opts.minFrequency ?? 2);
    log(`trained byte-level BPE: ${tok.vocabSize} ids on ${(counter.bytes / 1e6).toFixed(1)} MB in ${((Date.now() - t1) / 1000).toFixed(1)} s` +
      (tok.vocabSize < bpe ? ` (asked ${bpe}: no pair occurs often enough for more)` : ''));
  } else {
    tok = await Tokenizer.fromSpec(opts.tokenizer);
    log(`tokenizer ${opts.tokenizer}: ${tok.vocabSize} ids (${tok.kind})`);
  }

  const out = path.resolve(opts.out);
  const tmp = `${out}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  try {
    const dtype = dtypeFor(tok.vocabSize);
    const shardTokens = opts.shardTokens ?? 2 ** 27;
    const writers = {
      train: new ShardWriter(tmp, 'train', dtype, shardTokens, tok.bosId, tok.eosId),
      val: new ShardWriter(tmp, 'val', dtype, shardTokens, tok.bosId, tok.eosId),
    };
    let lastLog = Date.now();
    for await (const [doc, s, bytes] of allDocs(sources, maxBytes)) {
      const split = isValidationDoc(doc.id, vf) ? 'val' : 'train';
      writers[split].addDoc(tok.encode(doc.text), bytes);
      s.info.docs++;
      s.info.bytes += bytes;
      if (Date.now() - lastLog > 5000) {
        lastLog = Date.now();
        log(`tokenised ${writers.train.info.tokens + writers.val.info.tokens} tokens (${s.info.name})`);
      }
    }
    const train = writers.train.close();
    const val = writers.val.close();
    if (train.docs + val.docs === 0) throw new Error('data build: the corpus is empty (no documents with text)');
    if (train.docs === 0) throw new Error(`data build: the training split is empty (${val.docs} documents, all in validation); lower --val-fraction`);
    if (val.docs === 0) {
      throw new Error(`data build: the validation split is empty (${train.docs} documents); raise --val-fraction or add documents`);
    }
    tok.save(path.join(tmp, 'tokenizer.json'));
    const meta: DataMeta = {
      format: 'kforce-tokens-1', dtype, tokenizer: 'tokenizer.json', tokenizerKind: opts.tokenizer,
      vocabSize: tok.vocabSize, bosId: tok.bosId, eosId: tok.eosId, maskId: tok.maskId, valFraction: vf,
      sources: sources.map((s) => s.info), splits: { train, val }, buildSeconds: (Date.now() - t0) / 1000,
    };
    writeMeta(tmp, meta);
    // Swap the finished folder in; an older build is removed only now that the new one is complete.
    if (fs.existsSync(out)) fs.rmSync(out, { recursive: true, force: true });
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.renameSync(tmp, out);
    log(`wrote ${out}: train ${train.tokens} tokens / ${train.docs} docs, val ${val.tokens} tokens / ${val.docs} docs`);
    return meta;
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Trains a tokenizer alone (`kforce tokenizer train`): byte-level BPE on the training split of the sources. */
export async function trainTokenizerOn(sources: string[], vocabSize: number, opts: {
  valFraction?: number; maxBytes?: number; minFrequency?: number;
} = {}): Promise<{ tokenizer: Tokenizer; bytes: number }> {
  const usable = prepare({ sources, out: '\0none', tokenizer: `bpe:${vocabSize}`, valFraction: opts.valFraction });
  const counter = new WordCounter();
  const vf = opts.valFraction ?? DEFAULT_VAL_FRACTION;
  for await (const [doc] of allDocs(usable, Infinity)) {
    if (counter.bytes >= (opts.maxBytes ?? Infinity)) break;
    if (!isValidationDoc(doc.id, vf)) counter.add(doc.text);
  }
  if (counter.bytes === 0) throw new Error('tokenizer train: the corpus is empty');
  return { tokenizer: Tokenizer.trainBpe(counter, vocabSize, opts.minFrequency ?? 2), bytes: counter.bytes };
}

