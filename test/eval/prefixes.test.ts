import { test } from 'node:test';
import assert from 'node:assert/strict';
import { prefixesFromDocuments, splitDocuments } from '../../src/eval/prefixes.ts';

test('splitDocuments drops separators and empty documents', () => {
  assert.deepEqual(splitDocuments([0, 5, 6, 0, 0, 7, 1, 8], new Set([0, 1])), [[5, 6], [7], [8]]);
});

test('prefixes: document starts first, then evenly spaced positions inside documents', () => {
  const docs = [[10, 11, 12, 13], [20, 21], [30, 31, 32]];
  assert.deepEqual(prefixesFromDocuments(docs, 0, 2, 3), [[0, 10, 11], [0, 20, 21]]);
  // 4 wanted, 3 documents; extra starts: doc0 p=1,2 and doc2 p=1 -> one more, the middle one (doc0 p=2).
  assert.deepEqual(prefixesFromDocuments(docs, 0, 4, 3), [[0, 10, 11], [0, 20, 21], [0, 30, 31], [0, 12, 13]]);
  // Documents shorter than length-1 are skipped.
  assert.deepEqual(prefixesFromDocuments(docs, 9, 2, 4), [[9, 10, 11, 12], [9, 30, 31, 32]]);
  assert.throws(() => prefixesFromDocuments(docs, 0, 99, 3), /room for only 6 prefixes/);
  assert.throws(() => prefixesFromDocuments([[1]], 0, 1, 5), /no held-out document/);
});
