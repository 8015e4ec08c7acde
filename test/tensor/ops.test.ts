import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { add, addInPlace, axpy, biasGradient, embeddingGather, embeddingScatterAdd, fill, scaleInPlace } from '../../src/tensor/ops.ts';
import { checkGradient, dot } from '../../src/tensor/gradcheck.ts';
import { Rng } from '../../src/tensor/rng.ts';
import { bitEqual, f32, randn } from './util.ts';

test('embedding gather copies rows; scatter-add is its gradient (repeated ids sum)', () => {
  const rng = new Rng(21);
  const V = 5, D = 3;
  const table = randn(rng, V * D);
  const ids = Int32Array.from([4, 0, 4, 2]);
  const out = new Float64Array(ids.length * D);
  embeddingGather(out, table, ids, V, D);
  for (let i = 0; i < ids.length; i++) {
    assert.deepEqual(Array.from(out.subarray(i * D, i * D + D)), Array.from(table.subarray(ids[i] * D, ids[i] * D + D)));
  }
  const R = randn(rng, ids.length * D);
  const f = (): number => {
    embeddingGather(out, table, ids, V, D);
    return dot(out, R);
  };
  const dtable = new Float64Array(V * D);
  embeddingScatterAdd(dtable, R, ids, V, D);
  checkGradient('embedding', f, table, dtable);
  assert.deepEqual(Array.from(dtable.subarray(D, 2 * D)), [0, 0, 0]); // id 1 unused
});

test('embedding ops throw on out-of-range ids and wrong sizes, naming the op', () => {
  const t = new Float32Array(6);
  assert.throws(() => embeddingGather(new Float32Array(4), t, Int32Array.from([0, 3]), 3, 2),
    { message: 'embeddingGather: ids[1] = 3 is outside [0, V = 3)' });
  assert.throws(() => embeddingGather(new Float32Array(4), t, Int32Array.from([-1, 0]), 3, 2), /embeddingGather: ids\[0\] = -1/);
  assert.throws(() => embeddingScatterAdd(t, new Float32Array(4), Int32Array.from([0, 7]), 3, 2),
    /embeddingScatterAdd: ids\[1\] = 7 is outside \[0, V = 3\)/);
  assert.throws(() => embeddingGather(new Float32Array(5), t, Int32Array.from([0, 1]), 3, 2),
    /embeddingGather: out has 5 elements, expected ids.length\*D = 2\*2 = 4/);
  assert.throws(() => embeddingGather(new Float32Array(4), new Float32Array(5), Int32Array.from([0, 1]), 3, 2),
    /embeddingGather: table has 5 elements, expected V\*D = 3\*2 = 6/);
});

test('biasGradient equals the column sums and is the gradient of a bias add', () => {
  const rng = new Rng(22);
  const rows = 4, N = 3;
  const x = randn(rng, rows * N), bias = randn(rng, N), R = randn(rng, rows * N);
  const y = new Float64Array(rows * N);
  const f = (): number => {
    for (let r = 0; r < rows; r++) for (let n = 0; n < N; n++) y[r * N + n] = x[r * N + n] + bias[n];
    return dot(y, R);
  };
  const db = new Float64Array(N).fill(1);
  biasGradient(db, R, rows, N);
  checkGradient('biasGradient', f, bias, db.map((v) => v - 1));
  assert.throws(() => biasGradient(new Float64Array(2), R, rows, N), /biasGradient: dbias has 2 elements, expected N = 3/);
  assert.throws(() => biasGradient(db, R, rows + 1, N), /biasGradient: dout has 12 elements, expected rows\*N = 5\*3 = 15/);
});

test('elementwise helpers', () => {
  const a = Float32Array.from([1, 2, 3]), b = Float32Array.from([10, 20, 30]);
  const o = new Float32Array(3);
  add(o, a, b);
  assert.deepEqual(Array.from(o), [11, 22, 33]);
  add(a, a, b); // aliasing
  assert.deepEqual(Array.from(a), [11, 22, 33]);
  addInPlace(a, b);
  assert.deepEqual(Array.from(a), [21, 42, 63]);
  axpy(a, -2, b);
  assert.deepEqual(Array.from(a), [1, 2, 3]);
  scaleInPlace(a, 0.5);
  assert.deepEqual(Array.from(a), [0.5, 1, 1.5]);
  fill(a, 0);
  assert.deepEqual(Array.from(a), [0, 0, 0]);
  assert.throws(() => add(o, a, new Float32Array(2)), /add: b has 2 elements, expected a.length = 3/);
  assert.throws(() => addInPlace(a, new Float32Array(4)), /addInPlace: b has 4 elements/);
  assert.throws(() => axpy(a, 1, new Float32Array(4)), /axpy: b has 4 elements/);
});

test('gather and bias-gradient rows do not depend on the rest of the batch', () => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 10 }), fc.nat(),
    (V, D, n, seed) => {
      const rng = new Rng(seed);
      const table = f32(randn(rng, V * D));
      const ids = Int32Array.from({ length: n }, () => rng.int(V));
      const out = new Float32Array(n * D);
      embeddingGather(out, table, ids, V, D);
      const i = rng.int(n);
      const one = new Float32Array(D);
      embeddingGather(one, table, ids.subarray(i, i + 1), V, D);
      assert.ok(bitEqual(out.subarray(i * D, i * D + D), one));
    }), { numRuns: 100 });
});
