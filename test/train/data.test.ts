import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildDataset } from '../../src/train/dataset.ts';
import {
  chaptersOf, cleanBrown, fileDocs, idFraction, isValidationDoc, osisToText, resolveSources, untagBrownLine,
} from '../../src/train/corpus.ts';
import { readMeta, TokenReader } from '../../src/train/shards.ts';
import { BatchSampler, validationBatches } from '../../src/train/batches.ts';
import { Tokenizer } from '../../src/train/tokenizer.ts';
import { unserialize } from '../../src/train/rdata.ts';

const tmp = (): string => fs.mkdtempSync(path.join(os.tmpdir(), 'kforce-data-'));

test('Brown cleaning strips POS tags and restores punctuation spacing and quotes', () => {
  assert.equal(untagBrownLine("The/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, however/wrb ./."),
    'The jury said "no evidence", however.');
  assert.equal(untagBrownLine('and/or/cc 1/2/cd (/( sic/rb )/)'), 'and/or 1/2 (sic)');
  const text = cleanBrown('\n\n\tThe/at first/od ./.\nSecond/od line/nn ./.\n\n\n\tNew/jj paragraph/nn ./.\n');
  assert.equal(text, 'The first. Second line.\n\nNew paragraph.');
});

test('the default corpus (Brown, installed with the package) yields 500 clean documents', async () => {
  const [brown] = resolveSources(['brown']);
  assert.equal(brown.unavailable(), null);
  let n = 0;
  let tagged = 0;
  for await (const d of brown.docs()) {
    n++;
    if (/\w\/[a-z$*+-]+\b/.test(d.text.slice(0, 2000)) && /\/(at|nn|vbd|in)\s/.test(d.text)) tagged++;
  }
  assert.equal(n, 500);
  assert.equal(tagged, 0);
});

test('other corpus readers: OSIS verses, novel chapters, R serialization', () => {
  assert.equal(osisToText('<w lemma="x">God</w><note placement="foot">a <i>note</i></note><w>created</w> &amp; ' +
    '<w>more</w><note n="2">n</note>, end.'), 'God created & more, end.');
  const docs = [...chaptersOf('novel', ['TITLE', '', 'CHAPTER I', '', 'One line', 'continues.', '', 'Next para.',
    'CHAPTER II', 'Two.'])];
  assert.deepEqual(docs.map((d) => d.text), ['TITLE', 'One line continues.\n\nNext para.', 'Two.']);
  // STRSXP c("ab", NA) in XDR serialization version 2.
  const ints = (...xs: number[]): Buffer => Buffer.concat(xs.map((x) => { const b = Buffer.alloc(4); b.writeInt32BE(x); return b; }));
  const buf = Buffer.concat([Buffer.from('X\n'), ints(2, 0x40000, 0x20300, 16, 2, 0x40009, 2), Buffer.from('ab'), ints(9, -1)]);
  assert.deepEqual(unserialize(buf), ['ab', null]);
});

test('a large text file streams into ~1 MB documents cut at paragraph breaks', async () => {
  const dir = tmp();
  const para = 'word '.repeat(200).trim();
  const file = path.join(dir, 'big.txt');
  fs.writeFileSync(file, Array.from({ length: 5000 }, (_, i) => `${i} ${para}`).join('\n\n'));
  const docs: string[] = [];
  for await (const d of fileDocs(file)) docs.push(d.text);
  assert.ok(docs.length >= 3, `${docs.length} docs`);
  assert.equal(docs.join('\n\n'), fs.readFileSync(file, 'utf8'));
  for (const d of docs.slice(0, -1)) assert.ok(d.length > 500_000 && d.length < 2_000_000, `doc of ${d.length} chars`);
  fs.rmSync(dir, { recursive: true, force: true });
});

function writeCorpus(dir: string, n: number): string[] {
  const texts: string[] = [];
  fs.mkdirSync(path.join(dir, 'sub'), { recursive: true });
  for (let i = 0; i < n; i++) {
    const t = `Document ${i}. ` + `The ${['quick', 'lazy', 'brown'][i % 3]} fox number ${i} jumps over ${i * 7} dogs. `.repeat(3 + (i % 5));
    texts.push(t.trim());
    fs.writeFileSync(path.join(dir, i % 2 ? 'sub' : '.', `doc${String(i).padStart(3, '0')}.txt`), t);
  }
  fs.writeFileSync(path.join(dir, 'binary.bin'), Buffer.from([0, 1, 2, 0, 3]));
  return texts;
}

test('data build: user folder -> BPE -> shards; deterministic split by document id, BOS/EOS packing, positioned reads', async () => {
  const root = tmp();
  const corpus = path.join(root, 'corpus');
  const texts = writeCorpus(corpus, 60);
  const out = path.join(root, 'data');
  const meta = await buildDataset({ sources: [corpus], out, tokenizer: 'bpe:300', valFraction: 0.2, shardTokens: 500 });
  assert.equal(meta.splits.train.docs + meta.splits.val.docs, 60);
  assert.ok(meta.splits.val.docs > 0 && meta.splits.train.docs > 0);
  assert.ok(meta.splits.train.shards.length > 2, 'several shards');
  const tok = Tokenizer.load(path.join(out, 'tokenizer.json'));
  assert.equal(meta.maskId, tok.vocabSize - 1);
  // Split = hash of the document id.
  const ids = [...Array(60).keys()].map((i) => `file:${i % 2 ? 'sub/' : ''}doc${String(i).padStart(3, '0')}.txt`);
  const valIds = ids.filter((id) => isValidationDoc(id, 0.2));
  assert.equal(meta.splits.val.docs, valIds.length);
  // The val stream decodes to exactly its documents, each framed by the shared BOS/EOS separator, in source order.
  const r = new TokenReader(out, readMeta(out), 'val');
  const all = new Int32Array(r.total);
  r.read(0, all);
  assert.equal(all[0], tok.bosId);
  assert.equal(all[all.length - 1], tok.eosId);
  const pieces: number[][] = [[]];
  for (const t of all.subarray(1)) { if (t === tok.eosId) pieces.push([]); else pieces[pieces.length - 1].push(t); }
  pieces.pop();
  // Folder order: sorted file names (subfolder "sub" sorts after the top-level files "doc...").
  const ordered = [...Array(60).keys()].filter((i) => i % 2 === 0).concat([...Array(60).keys()].filter((i) => i % 2 === 1))
    .filter((i) => isValidationDoc(ids[i], 0.2)).map((i) => texts[i]);
  assert.deepEqual(pieces.map((p) => tok.decode(p)), ordered);
  // Reads that straddle shard boundaries equal the concatenated stream.
  const t = new TokenReader(out, readMeta(out), 'train');
  const whole = new Int32Array(t.total);
  t.read(0, whole);
  const part = new Int32Array(1200);
  t.read(333, part);
  assert.deepEqual(part, whole.subarray(333, 1533));
  assert.throws(() => t.read(t.total - 5, new Int32Array(10)), /outside/);
  // Rebuilding gives byte-identical shards.
  const out2 = path.join(root, 'data2');
  await buildDataset({ sources: [corpus], out: out2, tokenizer: 'bpe:300', valFraction: 0.2, shardTokens: 500 });
  for (const s of meta.splits.train.shards) {
    assert.deepEqual(fs.readFileSync(path.join(out2, s.file)), fs.readFileSync(path.join(out, s.file)));
  }
  r.close(); t.close();
  fs.rmSync(root, { recursive: true, force: true });
});

test('batch sampler: seeded epochs visit every sequence once; a restored position continues identically', async () => {
  const root = tmp();
  writeCorpus(path.join(root, 'c'), 40);
  const out = path.join(root, 'd');
  await buildDataset({ sources: [path.join(root, 'c')], out, tokenizer: 'bpe:280', valFraction: 0.2 });
  const r = new TokenReader(out, readMeta(out), 'train');
  const L = 16;
  const a = new BatchSampler(r, L, 7);
  // One epoch is a permutation of all sequences: same multiset of rows as the stream cut into rows.
  const whole = new Int32Array(a.nSeq * L);
  r.read(0, whole);
  const rows = (x: Int32Array): string[] => Array.from({ length: x.length / L }, (_, i) => x.subarray(i * L, (i + 1) * L).join(','));
  const epoch = a.next(a.nSeq).slice();
  assert.deepEqual(rows(epoch).sort(), rows(whole).sort());
  assert.notDeepEqual(rows(epoch), rows(whole), 'shuffled');
  const per = Math.floor(a.nSeq / 3);
  const batches = [a.next(per).slice()];
  const pos = { ...a.pos };
  const next1 = a.next(5).slice();
  const b = new BatchSampler(r, L, 7);
  b.pos = pos;
  assert.deepEqual(b.next(5), next1);
  const c = new BatchSampler(r, L, 8);
  c.pos = { epoch: 1, index: 0 };
  assert.notDeepEqual(c.next(per), batches[0]);
  // Rolls into the next epoch.
  const d = new BatchSampler(r, L, 7);
  d.next(d.nSeq + 2);
  assert.deepEqual(d.pos, { epoch: 1, index: 2 });
  const vr = new TokenReader(out, readMeta(out), 'val');
  const nVal = Math.min(10, Math.floor(vr.total / L));
  const vb = validationBatches(vr, L, 10, 4);
  assert.equal(vb.reduce((s, x) => s + x.length / L, 0), nVal);
  assert.ok(vb.slice(0, -1).every((x) => x.length === 4 * L));
  assert.deepEqual(validationBatches(vr, L, 10, 4), vb, 'the same rows every time');
  assert.throws(() => new BatchSampler(r, r.total + 1, 1), /fewer than one sequence/);
  r.close(); vr.close();
  fs.rmSync(root, { recursive: true, force: true });
});

test('data build rejects bad input before doing any work', async () => {
  const root = tmp();
  const out = path.join(root, 'out');
  await assert.rejects(buildDataset({ sources: [path.join(root, 'missing.txt')], out, tokenizer: 'bpe:300' }),
    /no such file or folder/);
  assert.equal(fs.existsSync(out), false);
  fs.mkdirSync(path.join(root, 'empty'));
  await assert.rejects(buildDataset({ sources: [path.join(root, 'empty')], out, tokenizer: 'bpe:300' }), /no files in/);
  fs.writeFileSync(path.join(root, 'blank.txt'), '');
  await assert.rejects(buildDataset({ sources: [path.join(root, 'blank.txt')], out, tokenizer: 'bpe:300' }), /is empty/);
  fs.writeFileSync(path.join(root, 'ws.txt'), '   \n\n  ');
  await assert.rejects(buildDataset({ sources: [path.join(root, 'ws.txt')], out, tokenizer: 'bpe:300' }), /corpus is empty/);
  await assert.rejects(buildDataset({ sources: ['brown'], out, tokenizer: 'nope.json' }), /neither bpe:<size>, gpt2/);
  await assert.rejects(buildDataset({ sources: ['brown'], out, tokenizer: 'bpe:100' }), />= 258/);
  await assert.rejects(buildDataset({ sources: ['brown'], out, tokenizer: 'bpe:300', valFraction: 0 }), /val-fraction/);
  assert.throws(() => resolveSources(['nonsense']), /unknown corpus source 'nonsense'/);
  fs.writeFileSync(path.join(root, 'one.txt'), 'just one document');
  await assert.rejects(buildDataset({ sources: [path.join(root, 'one.txt')], out, tokenizer: 'bpe:300', valFraction: 0.01 }),
    /validation split is empty/);
  assert.equal(fs.existsSync(out), false);
  fs.rmSync(root, { recursive: true, force: true });
});

test('the split hash spreads ids evenly', () => {
  let val = 0;
  for (let i = 0; i < 20000; i++) if (idFraction(`brown/c${i}`) < 0.1) val++;
  assert.ok(val > 1800 && val < 2200, `${val} of 20000`);
});
