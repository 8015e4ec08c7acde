import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Rng } from '../../src/tensor/rng.ts';

/** xoshiro128** written independently with BigInt arithmetic (mod 2^32), to check the Math.imul/shift version. */
function referenceXoshiro(state: number[], count: number): number[] {
  const M = (1n << 32n) - 1n;
  let [s0, s1, s2, s3] = state.map(BigInt);
  const rotl = (x: bigint, k: bigint): bigint => ((x << k) | (x >> (32n - k))) & M;
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    out.push(Number((rotl((s1 * 5n) & M, 7n) * 9n) & M));
    const t = (s1 << 9n) & M;
    s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t; s3 = rotl(s3, 11n);
  }
  return out;
}

test('uint32 stream equals an independent BigInt xoshiro128** from the same state', () => {
  for (const seed of [0, 1, 42, -7, 2 ** 40 + 3]) {
    const r = new Rng(seed);
    const ref = referenceXoshiro(r.state(), 1000);
    for (let i = 0; i < 1000; i++) assert.equal(r.uint32(), ref[i], `seed ${seed} output ${i}`);
  }
  // The textbook first output from state [1, 2, 3, 4]: rotl(2 * 5, 7) * 9 = 11520.
  assert.equal(Rng.fromState([1, 2, 3, 4]).uint32(), 11520);
});

test('a seed pins the sequence (golden values guard against accidental algorithm changes)', () => {
  const r = new Rng(20260101);
  const got = [r.uint32(), r.uint32(), r.uint32()];
  const again = new Rng(20260101);
  assert.deepEqual([again.uint32(), again.uint32(), again.uint32()], got);
  assert.deepEqual(got, GOLDEN_20260101);
  assert.notDeepEqual(new Rng(20260102).state(), new Rng(20260101).state());
});
const GOLDEN_20260101 = [1614420237, 1622277417, 2191729511];

test('state() / fromState() resumes the exact stream, for every generator method', () => {
  fc.assert(fc.property(fc.integer({ min: -1e12, max: 1e12 }), fc.integer({ min: 0, max: 50 }), (seed, skip) => {
    const a = new Rng(seed);
    for (let i = 0; i < skip; i++) a.normal();
    const b = Rng.fromState(JSON.parse(JSON.stringify(a.state())));
    for (let i = 0; i < 20; i++) {
      assert.equal(a.uniform(), b.uniform());
      assert.equal(a.uniformOpen(), b.uniformOpen());
      assert.equal(a.normal(), b.normal());
      assert.equal(a.int(1000003), b.int(1000003));
      assert.equal(a.int(2 ** 50 + 5), b.int(2 ** 50 + 5));
    }
    assert.deepEqual(a.clone().state(), a.state());
  }), { numRuns: 100 });
});

test('uniform has 53-bit resolution in [0, 1); uniformOpen stays strictly inside (0, 1)', () => {
  const r = new Rng(3);
  let sum = 0;
  let odd53 = 0;
  const n = 200000;
  for (let i = 0; i < n; i++) {
    const u = r.uniform();
    assert.ok(u >= 0 && u < 1);
    sum += u;
    // u * 2^53 is an integer; its lowest bit is set half of the time only if all 53 bits are random.
    const k = u * 2 ** 53;
    assert.ok(Number.isInteger(k));
    odd53 += k % 2;
    const o = r.uniformOpen();
    assert.ok(o > 0 && o < 1);
  }
  assert.ok(Math.abs(sum / n - 0.5) < 0.005, `mean ${sum / n}`);
  assert.ok(Math.abs(odd53 / n - 0.5) < 0.01, `low bit frequency ${odd53 / n}`);
  // The extremes of uniformOpen: all-zero and all-one bit patterns map inside the interval.
  const lo = (0 + 0.5) / 2 ** 52, hi = (2 ** 52 - 1 + 0.5) / 2 ** 52;
  assert.ok(lo > 0 && hi < 1);
});

test('normal() has mean 0 and variance 1; int(n) is uniform and in range', () => {
  const r = new Rng(4);
  const n = 100000;
  let s = 0, s2 = 0;
  for (let i = 0; i < n; i++) {
    const z = r.normal();
    s += z; s2 += z * z;
  }
  assert.ok(Math.abs(s / n) < 0.02, `mean ${s / n}`);
  assert.ok(Math.abs(s2 / n - 1) < 0.03, `variance ${s2 / n}`);
  const counts = new Array(7).fill(0);
  for (let i = 0; i < 70000; i++) counts[r.int(7)]++;
  // chi-square with 6 degrees of freedom; 22.5 is the 0.999 quantile.
  const chi = counts.reduce((acc, c) => acc + (c - 10000) ** 2 / 10000, 0);
  assert.ok(chi < 22.5, `chi-square ${chi}, counts ${counts}`);
  for (let i = 0; i < 1000; i++) {
    const big = r.int(2 ** 53);
    assert.ok(Number.isInteger(big) && big >= 0 && big < 2 ** 53);
  }
  assert.equal(r.int(1), 0);
  assert.throws(() => r.int(0), /Rng\.int/);
  assert.throws(() => r.int(2.5), /Rng\.int/);
});

test('shuffle is a seeded permutation', () => {
  fc.assert(fc.property(fc.array(fc.integer(), { maxLength: 60 }), fc.nat(), (arr, seed) => {
    const a = new Rng(seed).shuffle(arr.slice());
    const b = new Rng(seed).shuffle(arr.slice());
    assert.deepEqual(a, b);
    assert.deepEqual([...a].sort((x, y) => x - y), [...arr].sort((x, y) => x - y));
  }));
  const t = new Rng(9).shuffle(Int32Array.from({ length: 10 }, (_, i) => i));
  assert.notDeepEqual(Array.from(t), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

test('fork gives label-dependent streams and does not advance the parent', () => {
  const p = new Rng(5);
  const before = p.state();
  const a1 = p.fork('data'), b = p.fork('noise'), a2 = p.fork('data');
  assert.deepEqual(p.state(), before);
  assert.deepEqual(a1.state(), a2.state());
  assert.notDeepEqual(a1.state(), b.state());
  assert.notDeepEqual(a1.state(), before);
  assert.notDeepEqual(p.fork(1).state(), p.fork(2).state());
  // Forked streams are uncorrelated with the parent at the level this test can see.
  let same = 0;
  for (let i = 0; i < 1000; i++) if (a1.uint32() === p.uint32()) same++;
  assert.ok(same < 3);
});

test('bad seeds and states are rejected with a message', () => {
  assert.throws(() => new Rng(1.5), /Rng: seed must be a safe integer/);
  assert.throws(() => new Rng(Number.NaN), /Rng: seed/);
  assert.throws(() => Rng.fromState([0, 0, 0, 0]), /all-zero state/);
  assert.throws(() => Rng.fromState([1, 2, 3]), /expected 4 uint32 words/);
  assert.throws(() => Rng.fromState([1, 2, 3, 2 ** 32]), /not a uint32/);
});
