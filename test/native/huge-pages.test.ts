// The huge-pages switch: decoding commands turn it on unless KFORCE_LIN_HUGE says otherwise, and it moves memory,
// never values.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { alignedFloat32, hugePages, preferHugePagesForDecoding } from '../../src/tensor/native.ts';
import { nat, rand32, Rng, sameBits, skip } from './helpers.ts';

test('hugePages sets and reads the knob; preferHugePagesForDecoding defers to KFORCE_LIN_HUGE', { skip }, (t) => {
  const before = hugePages();
  t.after(() => hugePages(before));
  assert.equal(hugePages(false), false);
  assert.equal(hugePages(), false);
  assert.equal(hugePages(true), true);
  assert.equal(hugePages(), true);
  hugePages(false);
  assert.equal(preferHugePagesForDecoding({}), true, 'unset: on');
  hugePages(false);
  assert.equal(preferHugePagesForDecoding({ KFORCE_LIN_HUGE: '' }), true, 'empty: as unset');
  hugePages(false);
  assert.equal(preferHugePagesForDecoding({ KFORCE_LIN_HUGE: '0' }), false, 'set: left as it is');
  hugePages(true);
  assert.equal(preferHugePagesForDecoding({ KFORCE_LIN_HUGE: '0' }), true, 'set: left as it is');
});

test('linear gives the same bits with weights and buffers on huge pages or not', { skip }, (t) => {
  const before = hugePages();
  t.after(() => hugePages(before));
  const rng = new Rng(5);
  // 8 MB of weights (the kernel collapses buffers of 2 MB and more) in buffers allocated under each setting.
  const M = 8, K = 768, N = 2731;
  const x = rand32(rng, M * K), w0 = rand32(rng, N * K, 0.05), b = rand32(rng, N);
  const run = (on: boolean): Float32Array => {
    hugePages(on);
    const w = alignedFloat32(N * K);
    w.set(w0);
    const out = alignedFloat32(M * N);
    nat().linear(out, x, w, b, M, K, N);
    return out;
  };
  const off = run(false), on = run(true);
  assert.ok(sameBits(on, off));
});
