// Held-out prompts for the benchmarks (KFORCING.md section 7: prefixes of 6 tokens starting with BOS). Prefixes are
// document starts of the validation split first; when there are fewer documents than prompts wanted, the rest
// start at evenly spaced positions inside the validation documents (BOS prepended), so any number can be drawn from a
// small corpus. Sources: a token data folder (`kforce data build`) or the corpus itself through a tokenizer.
import { resolveSources, isValidationDoc } from '../train/corpus.ts';
import { DEFAULT_VAL_FRACTION } from '../train/dataset.ts';
import { readMeta, TokenReader } from '../train/shards.ts';
import type { Tokenizer } from '../train/tokenizer.ts';

/** Splits a separator-delimited token stream into documents (separators dropped, empty documents skipped). */
export function splitDocuments(stream: ArrayLike<number>, separators: ReadonlySet<number>): number[][] {
  const docs: number[][] = [];
  let cur: number[] = [];
  for (let i = 0; i < stream.length; i++) {
    const t = stream[i];
    if (separators.has(t)) {
      if (cur.length) docs.push(cur);
      cur = [];
    } else {
      cur.push(t);
    }
  }
  if (cur.length) docs.push(cur);
  return docs;
}

/**
 * n prefixes of `length` tokens: [bos, first length-1 tokens of a document]. Document starts come first (documents
 * in order, those shorter than length-1 skipped); then positions spread evenly over all documents' tokens.
 */
export function prefixesFromDocuments(docs: number[][], bos: number, n: number, length: number): number[][] {
  if (!Number.isInteger(length) || length < 1) throw new Error(`prefixes: length must be >= 1, got ${length}`);
  const body = length - 1;
  const usable = docs.filter((d) => d.length >= body);
  if (usable.length === 0) throw new Error(`prefixes: no held-out document has ${body} tokens`);
  const out: number[][] = [];
  for (const d of usable) {
    if (out.length >= n) break;
    out.push([bos, ...d.slice(0, body)]);
  }
  if (out.length < n) {
    // Start positions inside documents, excluding each document's first position (already used).
    const starts: Array<[number, number]> = [];
    usable.forEach((d, di) => {
      for (let p = 1; p + body <= d.length; p++) starts.push([di, p]);
    });
    const need = n - out.length;
    if (starts.length < need) throw new Error(`prefixes: the held-out text has room for only ${out.length + starts.length} prefixes of ${length} tokens, ${n} wanted`);
    for (let i = 0; i < need; i++) {
      const [di, p] = starts[Math.floor(((i + 0.5) * starts.length) / need)];
      out.push([bos, ...usable[di].slice(p, p + body)]);
    }
  }
  return out;
}

/** Prefixes from the validation split of a token data folder. */
export function prefixesFromDataDir(dir: string, n: number, length: number): number[][] {
  const meta = readMeta(dir);
  const reader = new TokenReader(dir, meta, 'val');
  try {
    const all = new Int32Array(reader.total);
    reader.read(0, all);
    const docs = splitDocuments(all, new Set([meta.bosId, meta.eosId, meta.maskId]));
    return prefixesFromDocuments(docs, meta.bosId, n, length);
  } finally {
    reader.close();
  }
}

/** Prefixes from the validation documents of corpus sources (default: the built-in mix), tokenised on the fly. */
export async function prefixesFromCorpus(tok: Tokenizer, n: number, length: number, sources: string[] = ['mix'],
  valFraction = DEFAULT_VAL_FRACTION): Promise<number[][]> {
  const docs: number[][] = [];
  let tokens = 0;
  for (const src of resolveSources(sources)) {
    if (src.unavailable()) continue;
    for await (const d of src.docs()) {
      if (!isValidationDoc(d.id, valFraction)) continue;
      const ids = tok.encode(d.text);
      docs.push(ids);
      tokens += ids.length;
    }
    if (docs.length >= n && tokens >= n * length * 4) break;
  }
  if (docs.length === 0) throw new Error(`prefixes: no validation documents in ${sources.join(', ')}`);
  return prefixesFromDocuments(docs, tok.bosId, n, length);
}
