import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SlotAgreement, logProbAt, mean, median, perplexity, repeatedNgramRate, unigramEntropy } from '../../src/eval/metrics.ts';

const close = (a: number, b: number, tol = 1e-12) => assert.ok(Math.abs(a - b) <= tol, `${a} vs ${b}`);

test('perplexity is exp of the mean NLL', () => {
  close(perplexity([Math.log(2), Math.log(8)]), 4); // exp((ln2 + ln8)/2) = exp(ln 4)
  assert.ok(Number.isNaN(perplexity([])));
});

test('unigram entropy by hand', () => {
  close(unigramEntropy([1, 1, 1, 1]), 0);
  close(unigramEntropy([1, 2, 3, 4]), Math.log(4));
  // counts 2,1,1 of 4: -(0.5 ln 0.5 + 2 * 0.25 ln 0.25) = 1.5 ln 2
  close(unigramEntropy([7, 7, 8, 9]), 1.5 * Math.log(2));
  assert.equal(unigramEntropy([]), 0);
});

test('repeated 4-gram rate by hand', () => {
  assert.equal(repeatedNgramRate([1, 2, 3, 4, 5, 6]), 0);
  // 1 2 3 4 1 2 3 4: 4-grams 1234 2341 3412 4123 1234 -> one repeat of five
  close(repeatedNgramRate([1, 2, 3, 4, 1, 2, 3, 4]), 1 / 5);
  // all the same token: 7 4-grams, 6 repeats
  close(repeatedNgramRate(new Array(10).fill(3)), 6 / 7);
  assert.equal(repeatedNgramRate([1, 2, 3]), 0);
  // Token ids that would collide if joined without a separator do not.
  assert.equal(repeatedNgramRate([1, 12, 3, 4, 11, 2, 3, 4], 4), 0);
  close(repeatedNgramRate([5, 5, 6, 5, 5], 2), 1 / 4);
  assert.throws(() => repeatedNgramRate([1], 0), /n must be/);
});

test('slot agreement counts per slot and overall', () => {
  const a = new SlotAgreement(3);
  a.add([1, 2, 3], [1, 0, 3]);
  a.add([4, 5, 6], [4, 5, 0]);
  a.add([7], [8]); // short final block counts only slot 0
  assert.deepEqual(a.totals, [3, 2, 2]);
  assert.deepEqual(a.rates(), [2 / 3, 1 / 2, 1 / 2]);
  close(a.overall(), 4 / 7);
  assert.ok(Number.isNaN(new SlotAgreement(2).rates()[1]));
});

test('mean, median, logProbAt', () => {
  assert.equal(mean([1, 2, 6]), 3);
  assert.equal(median([5, 1, 3]), 3);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.ok(Number.isNaN(median([])));
  close(logProbAt([0, Math.log(3)], 1), Math.log(0.75));
  close(logProbAt([0, 2 * Math.log(3)], 0, 2), Math.log(0.25));
});
