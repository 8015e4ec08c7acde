// The packed-weight path of the native linear (9-64 rows from a lane-major copy, native/linear.c kf_linear_vpacked):
// the bits of the plain path for every row count, chosen only where it pays, its copies remade when the weights
// change, and clear errors for bad arguments.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nativeAddonExports, packedLinearCounts, packedLinears, preferPackedLinearsForDecoding } from '../../src/tensor/native.ts';
import { nat, rand32, Rng, sameBits, skip } from './helpers.ts';

interface PackedAddon {
  vpack(w: Float32Array, N: number, K: number, packed: Float32Array): boolean;
  vpackFloats(N: number, K: number): number;
  vpackUse(M: number, K: number): boolean;
  linearVpacked(out: Float32Array, x: Float32Array, packed: Float32Array, bias: Float32Array | null, M: number,
    K: number, N: number, activation?: string | null): void;
  info(): { avx512: boolean };
}
const addon = nativeAddonExports() as unknown as PackedAddon | null;
const noPacked = skip || (addon && !addon.info().avx512 ? 'no AVX-512: no packed path' : false);

function plain(x: Float32Array, w: Float32Array, b: Float32Array | null, M: number, K: number, N: number,
  act?: 'gelu_tanh'): Float32Array {
  const was = packedLinears();
  packedLinears(false);
  const out = new Float32Array(M * N);
  nat().linear(out, x, w, b, M, K, N, act);
  packedLinears(was);
  return out;
}

test('packed linear: the plain path\'s bits for 1-64 rows, any shape with K % 16 == 0, bias and GELU', { skip: noPacked }, () => {
  const a = addon!;
  const rng = new Rng(21);
  // N = 37 and 100 end in partial 12-row tiles; K = 3072 is the down projection's; K = 16 a single step.
  for (const [K, N] of [[768, 100], [3072, 37], [16, 13], [64, 25]] as Array<[number, number]>) {
    const w = rand32(rng, N * K, 0.05), b = rand32(rng, N);
    const packed = new Float32Array(a.vpackFloats(N, K));
    assert.equal(a.vpack(w, N, K, packed), true);
    for (const M of [1, 2, 7, 9, 15, 16, 17, 28, 32, 33, 47, 48, 63, 64]) {
      const x = rand32(rng, M * K);
      for (const [bias, act] of [[null, null], [b, null], [b, 'gelu_tanh']] as Array<[Float32Array | null, 'gelu_tanh' | null]>) {
        const out = new Float32Array(M * N);
        a.linearVpacked(out, x, packed, bias, M, K, N, act);
        assert.ok(sameBits(out, plain(x, w, bias, M, K, N, act ?? undefined)),
          `K=${K} N=${N} M=${M} bias=${bias !== null} act=${act}`);
      }
    }
  }
});

test('packed linear: the backend takes it only where it pays, rows stay invariant, copies follow the weights', { skip: noPacked }, (t) => {
  const a = addon!;
  const was = packedLinears();
  t.after(() => packedLinears(was));
  // The kernel's rule, measured: at K < 2048 where the rows fill their 16-row vectors (16, 28-32, 42-48, 56-64), at
  // K >= 2048 from 9 to 64 rows.
  assert.deepEqual([8, 12, 14, 16, 20, 28, 32, 40, 44, 48, 56, 64, 65].map((M) => a.vpackUse(M, 768)),
    [false, false, false, true, false, true, true, false, true, true, true, true, false]);
  assert.deepEqual([8, 9, 12, 14, 16, 20, 32, 52, 64, 65].map((M) => a.vpackUse(M, 3072)),
    [false, true, true, true, true, true, true, true, true, false]);
  assert.equal(a.vpackUse(32, 40), false, 'K not a multiple of 16');
  assert.equal(preferPackedLinearsForDecoding(), true);
  assert.equal(packedLinears(), true);
  const rng = new Rng(22);
  const K = 768, N = 60, total = 64;
  const w = rand32(rng, N * K, 0.05), b = rand32(rng, N), x = rand32(rng, total * K);
  const run = (M: number, off = 0): Float32Array => {
    const out = new Float32Array(M * N);
    nat().linear(out, x.subarray(off * K, (off + M) * K), w, b, M, K, N);
    return out;
  };
  const ref = plain(x, w, b, total, K, N); // (switching the path off drops the copies: before any are made)
  const c0 = packedLinearCounts();
  const all = run(total);
  assert.ok(sameBits(all, ref), '64 rows through the backend');
  const c1 = packedLinearCounts();
  assert.deepEqual([c1.copies - c0.copies, c1.calls - c0.calls], [1, 1], '64 rows: one copy made, one packed call');
  for (const M of [1, 8, 16, 30, 32, 45, 63]) {
    assert.ok(sameBits(run(M, total - M), all.subarray((total - M) * N)), `${M} rows at the end of the batch`);
  }
  const c2 = packedLinearCounts();
  assert.deepEqual([c2.copies - c1.copies, c2.calls - c1.calls], [0, 5], 'the copy reused by 16, 30, 32, 45, 63 rows (1 and 8 take the plain path)');
  // Weights overwritten in place after the copy was made: the next call sees the new weights.
  w.set(rand32(rng, N * K, 0.05));
  const out1 = run(32);
  assert.equal(packedLinearCounts().copies - c2.copies, 1, 'remade');
  assert.ok(sameBits(out1, plain(x, w, b, 32, K, N)), 'after the weights changed');
  // An optimizer step drops the copies: a change the sampled probe cannot see is still picked up.
  packedLinears(true);
  run(32); // a copy of the present weights
  w[1] += 1;
  const p = rand32(rng, 4), g = new Float32Array(4), m1 = new Float32Array(4), v1 = new Float32Array(4);
  nat().adamw(p, g, m1, v1, { lr: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1, gradScale: 1, decayMask: null });
  const c3 = packedLinearCounts();
  const out2 = run(32);
  assert.equal(packedLinearCounts().copies - c3.copies, 1, 'remade after the optimizer step');
  assert.ok(sameBits(out2, plain(x, w, b, 32, K, N)), 'after an optimizer step');
});

test('packed linear: bad arguments are named', { skip: noPacked }, () => {
  const a = addon!;
  const f = (n: number): Float32Array => new Float32Array(n);
  const packed = f(a.vpackFloats(10, 32));
  assert.throws(() => a.linearVpacked(f(65 * 10), f(65 * 32), packed, null, 65, 32, 10), /linearVpacked: M must be in \[1, 64\], got 65/);
  assert.throws(() => a.linearVpacked(f(20), f(40), packed, null, 2, 20, 10), /linearVpacked: K must be a positive multiple of 16, got 20/);
  assert.throws(() => a.linearVpacked(f(20), f(64), f(10), null, 2, 32, 10), /linearVpacked: packed has 10 elements, needs at least 384/);
  assert.throws(() => a.linearVpacked(f(20), f(64), packed, null, 2, 32, 10, 'relu'), /linearVpacked: activation must be 'gelu_tanh' or null/);
  assert.equal(a.vpack(f(10 * 20), 10, 20, f(a.vpackFloats(10, 20))), false, 'K not a multiple of 16');
  assert.throws(() => a.vpack(f(10), 10, 32, packed), /vpack: w has 10 elements, needs at least 320/);
});
