// The addon's row glue (native/rows.c) against the JS loops it replaces in the forward pass: bit-identical results.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addInPlace } from '../../src/tensor/ops.ts';
import { nativeRows } from '../../src/tensor/native.ts';
import { Rng } from '../../src/tensor/rng.ts';
import { rand32, skip } from './helpers.ts';

function ops() {
  const o = nativeRows();
  if (!o) throw new Error('native addon unavailable');
  return o;
}

test('addInPlace equals the JS loop (vector tails, both threads, a += a)', { skip }, () => {
  const rng = new Rng(31);
  for (const n of [0, 1, 15, 16, 17, 1000, 65536, 70001]) {
    const a = rand32(rng, n, 100), b = rand32(rng, n, 1e-3);
    const want = a.slice();
    addInPlace(want, b);
    const got = a.slice();
    ops().addInPlace(got, b);
    assert.deepEqual(got, want, `n = ${n}`);
    const self = a.slice(), selfWant = a.slice();
    ops().addInPlace(self, self);
    for (let i = 0; i < n; i++) selfWant[i] += selfWant[i];
    assert.deepEqual(self, selfWant);
  }
  assert.throws(() => ops().addInPlace(new Float32Array(4), new Float32Array(5)), /addInPlace: b has 5 elements, a has 4/);
  const buf = new Float32Array(10);
  assert.throws(() => ops().addInPlace(buf.subarray(0, 6), buf.subarray(2, 8)), /overlap/);
});

test('scatterRows equals per-row set and rejects rows outside dst', { skip }, () => {
  const rng = new Rng(32);
  const R = 9, srcStride = 12, width = 8, dstStride = 10;
  const src = rand32(rng, R * srcStride).subarray(4); // rows start 4 floats in, as K|V inside a qkv row
  const rowIndex = Int32Array.from([5, 0, 17, 3, 9, 11, 2, 8, 1]);
  const want = rand32(rng, 20 * dstStride), got = want.slice();
  for (let r = 0; r < R; r++) want.set(src.subarray(r * srcStride, r * srcStride + width), rowIndex[r] * dstStride);
  ops().scatterRows(got, dstStride, src, srcStride, width, rowIndex);
  assert.deepEqual(got, want);
  // K|V rows of D = 768 (both threads copy, a share of the rows each)
  for (const rows of [2, 3, 9]) {
    const W = 1536, sS = 2304, dS = 1536;
    const s2 = rand32(rng, rows * sS).subarray(768), idx = rowIndex.subarray(0, rows);
    const w2 = rand32(rng, 20 * dS), g2 = w2.slice();
    for (let r = 0; r < rows; r++) w2.set(s2.subarray(r * sS, r * sS + W), idx[r] * dS);
    ops().scatterRows(g2, dS, s2, sS, W, idx);
    assert.deepEqual(g2, w2, `${rows} rows of ${W}`);
  }
  assert.throws(() => ops().scatterRows(got, dstStride, src, srcStride, width, Int32Array.from([20])), /rowIndex\[0\] = 20 is outside dst/);
  assert.throws(() => ops().scatterRows(got, dstStride, src, srcStride, 11, rowIndex), /width 11 exceeds a stride/);
  assert.throws(() => ops().scatterRows(got, dstStride, src.subarray(0, 20), srcStride, width, rowIndex), /src has 20 elements/);
});
