// The determinism contract of backend.ts, bit for bit: a row's linear output does not depend on how many rows are
// computed with it or where it sits; a query's attention output does not depend on the other queries; results do
// not depend on the thread count.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { causalMask, maskOf, nat, rand32, Rng, sameBits, skip, staircase } from './helpers.ts';

function linearRows(x: Float32Array, w: Float32Array, b: Float32Array | null, M: number, K: number, N: number) {
  const out = new Float32Array(M * N);
  nat().linear(out, x, w, b, M, K, N);
  return out;
}

test('linear: rows computed alone, in any batch size, at any offset or permuted are bit-identical', { skip }, () => {
  const rng = new Rng(11);
  // K = 1000 exceeds the K chunk of the many-row path (768), so chunked and unchunked sums are compared too.
  for (const [K, N] of [[768, 37], [1000, 21], [100, 64], [31, 5]] as Array<[number, number]>) {
    const total = 40;
    const x = rand32(rng, total * K), w = rand32(rng, N * K, 0.05), b = rand32(rng, N);
    const all = linearRows(x, w, b, total, K, N);
    for (let M = 1; M <= 20; M++) {
      for (const off of [0, 3, total - M]) {
        const part = linearRows(x.subarray(off * K, (off + M) * K), w, b, M, K, N);
        assert.ok(sameBits(part, all.subarray(off * N, (off + M) * N)), `K=${K} N=${N}: rows ${off}..${off + M} differ`);
      }
      // Permute the M rows: each output row must follow its input row exactly.
      const perm = Array.from({ length: M }, (_, i) => i).sort(() => rng.uniform() - 0.5);
      const px = new Float32Array(M * K);
      perm.forEach((src, dst) => px.set(x.subarray(src * K, (src + 1) * K), dst * K));
      const pout = linearRows(px, w, b, M, K, N);
      perm.forEach((src, dst) => {
        assert.ok(sameBits(pout.subarray(dst * N, (dst + 1) * N), all.subarray(src * N, (src + 1) * N)),
          `K=${K} N=${N} M=${M}: permuted row ${src} differs`);
      });
    }
  }
});

test('linear: decode-sized row groups (K chunks of the grouped path, up to 64 rows) match the many-row path', { skip }, () => {
  // K = 3072 is chunked for every group size; N = 100 gives several blocks, 1-row tail tiles and both threads.
  const rng = new Rng(13);
  const K = 3072, N = 100, total = 80; // 80 rows take the many-row path
  const x = rand32(rng, total * K), w = rand32(rng, N * K, 0.05), b = rand32(rng, N);
  const all = linearRows(x, w, b, total, K, N);
  for (const M of [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 17, 24, 31, 32, 33, 48, 57, 64, 65]) {
    for (const off of [0, total - M]) {
      const part = linearRows(x.subarray(off * K, (off + M) * K), w, b, M, K, N);
      assert.ok(sameBits(part, all.subarray(off * N, (off + M) * N)), `K=${K} N=${N}: rows ${off}..${off + M} differ`);
    }
  }
});

test('attention: a query alone (as in cached decoding) gives the bits it gets inside a batch', { skip }, () => {
  const rng = new Rng(12);
  for (const { mask, nq, H, Dh } of [
    { mask: causalMask(45), nq: 45, H: 3, Dh: 16 },
    { mask: staircase(12, 4), nq: 12 + 48, H: 2, Dh: 64 },
    { mask: maskOf([[[0, 17], [20, 53]], [[2, 60]], [[0, 1]]]), nq: 3, H: 1, Dh: 24 },
    // Queries sharing a long key prefix (a PFLM decode step): groups of 8 then 3, and 8 then 2, take the
    // shared-load paths for 4, 3 and 2 queries over the common chunks.
    { mask: maskOf(Array.from({ length: 11 }, (_, i) => [[0, 40 + i]] as Array<[number, number]>)), nq: 11, H: 2, Dh: 24 },
    { mask: maskOf(Array.from({ length: 10 }, (_, i) => [[0, 50 - i]] as Array<[number, number]>)), nq: 10, H: 2, Dh: 64 },
    // Head dim 64 takes the batched chunk update: its PV runs queries in fours, then the 3, 2 or 1 left over.
    { mask: maskOf(Array.from({ length: 11 }, (_, i) => [[0, 40 + i]] as Array<[number, number]>)), nq: 11, H: 3, Dh: 64 },
    { mask: maskOf(Array.from({ length: 5 }, (_, i) => [[1, 37 + i]] as Array<[number, number]>)), nq: 5, H: 1, Dh: 64 },
  ]) {
    const W = H * Dh, nk = 60;
    const q = rand32(rng, nq * W), k = rand32(rng, nk * W), v = rand32(rng, nk * W);
    const out = new Float32Array(nq * W), lse = new Float32Array(nq * H);
    const common = { nHeads: H, headDim: Dh, kStride: W, vStride: W, k, v, scale: 1 / Math.sqrt(Dh) };
    nat().attention({ ...common, nq, q, qStride: W, out, outStride: W, lse, mask });
    for (let i = 0; i < nq; i++) {
      const ranges: Array<[number, number]> = [];
      for (let r = mask.rowPtr[i]; r < mask.rowPtr[i + 1]; r++) ranges.push([mask.ranges[2 * r], mask.ranges[2 * r + 1]]);
      const o1 = new Float32Array(W), l1 = new Float32Array(H);
      nat().attention({ ...common, nq: 1, q: q.subarray(i * W, (i + 1) * W), qStride: W, out: o1, outStride: W, lse: l1,
        mask: maskOf([ranges]) });
      assert.ok(sameBits(o1, out.subarray(i * W, (i + 1) * W)), `query ${i}: output differs`);
      assert.ok(sameBits(l1, lse.subarray(i * H, (i + 1) * H)), `query ${i}: lse differs`);
      // The same key set split into more, adjacent ranges is the same set: same bits.
      if (ranges.length === 1 && ranges[0][1] - ranges[0][0] > 3) {
        const [s, e] = ranges[0], mid = s + 3;
        const o2 = new Float32Array(W), l2 = new Float32Array(H);
        nat().attention({ ...common, nq: 1, q: q.subarray(i * W, (i + 1) * W), qStride: W, out: o2, outStride: W,
          lse: l2, mask: maskOf([[[s, mid], [mid, e]]]) });
        assert.ok(sameBits(o2, o1), `query ${i}: split ranges change the output`);
      }
    }
  }
});

test('attention: a query whose scores are all -Infinity leaves its group unchanged and gets a zero output', { skip }, () => {
  // Head dim 64, 6 queries sharing 40 keys: the batched chunk update skips query 2 (nothing finite to weight) and
  // packs the others; each must still get the bits it gets alone.
  const rng = new Rng(5);
  const H = 1, Dh = 64, nq = 6, nk = 48;
  const mask = maskOf(Array.from({ length: nq }, (_, i) => [[0, 40 + i]] as Array<[number, number]>));
  const q = rand32(rng, nq * Dh), k = rand32(rng, nk * Dh).map((x) => Math.abs(x) + 0.1), v = rand32(rng, nk * Dh);
  q.fill(-Infinity, 2 * Dh, 3 * Dh);
  const out = new Float32Array(nq * Dh), lse = new Float32Array(nq * H);
  const common = { nHeads: H, headDim: Dh, kStride: Dh, vStride: Dh, k, v, scale: 0.125 };
  nat().attention({ ...common, nq, q, qStride: Dh, out, outStride: Dh, lse, mask });
  assert.ok(out.subarray(2 * Dh, 3 * Dh).every((x) => x === 0), 'skipped query: zero output');
  assert.equal(lse[2], -Infinity);
  for (let i = 0; i < nq; i++) {
    const o1 = new Float32Array(Dh), l1 = new Float32Array(H);
    nat().attention({ ...common, nq: 1, q: q.subarray(i * Dh, (i + 1) * Dh), qStride: Dh, out: o1, outStride: Dh,
      lse: l1, mask: maskOf([[[0, 40 + i]]]) });
    assert.ok(sameBits(o1, out.subarray(i * Dh, (i + 1) * Dh)), `query ${i}: output differs`);
    assert.ok(sameBits(l1, lse.subarray(i, i + 1)), `query ${i}: lse differs`);
  }
});

test('results do not depend on the number of threads or on huge pages', { skip }, () => {
  // Same computation in a child process pinned to one pool thread (KFORCE_THREADS=1) and in this one.
  const code = `
    import { alignedFloat32, loadNativeBackend } from './src/tensor/native.ts';
    import { Rng } from './src/tensor/rng.ts';
    import { createHash } from 'node:crypto';
    const b = loadNativeBackend().backend;
    const rng = new Rng(5);
    const r = (n) => Float32Array.from({ length: n }, () => rng.normal(0, 1));
    const M = 37, K = 200, N = 300;
    const x = r(M * K), w = r(N * K), out = new Float32Array(M * N);
    b.linear(out, x, w, null, M, K, N);
    const T = 64, H = 4, Dh = 32, W = H * Dh;
    const q = r(T * W), k = r(T * W), v = r(T * W), ao = new Float32Array(T * W), lse = new Float32Array(T * H);
    const rowPtr = Int32Array.from({ length: T + 1 }, (_, i) => i);
    const ranges = Int32Array.from({ length: 2 * T }, (_, i) => (i % 2 ? (i + 1) / 2 : 0));
    b.attention({ nq: T, nHeads: H, headDim: Dh, q, qStride: W, k, kStride: W, v, vStride: W, out: ao, outStride: W,
      lse, mask: { rowPtr, ranges }, scale: 0.2 });
    const big = r(1 << 20);
    const g = new Float32Array(big.length);
    b.gelu(g, big, big.length, 'tanh');
    // row ops above the two-thread threshold (8192 elements)
    const LR = 64, LD = 256, lx = r(LR * LD), lo = new Float32Array(LR * LD), lm = new Float32Array(LR), ls = new Float32Array(LR);
    b.layerNorm(lo, lm, ls, lx, r(LD), r(LD), LR, LD, 1e-5);
    const rq = r(LR * 3 * LD), rpos = Int32Array.from({ length: LR }, (_, i) => 3 * i + 1);
    b.rope(rq, 3 * LD, LR, 4, 64, rpos, Float32Array.from({ length: 32 }, (_, i) => 1 / (1 + i)), false);
    // A weight matrix large enough (9 MB, in a 12 MB aligned buffer) for the huge-page path when it is switched on.
    const wl = alignedFloat32(3 << 20);
    wl.set(r(768 * 3072));
    const xl = r(3 * 768), ol = new Float32Array(3 * 3072);
    b.linear(ol, xl, wl.subarray(0, 768 * 3072), null, 3, 768, 3072);
    // 8 and 16 rows against the same bytes as 768 x 3072 (K chunked): the decode tiles whose prefetch
    // KFORCE_LIN_PF_BACK and KFORCE_LIN_HINT1 move (16 rows: two groups, the second one's next-block prefetch).
    const xm = r(16 * 3072), om = new Float32Array(16 * 768);
    b.linear(om, xm.subarray(0, 8 * 3072), wl.subarray(0, 768 * 3072), null, 8, 3072, 768);
    const om16 = new Float32Array(16 * 768);
    b.linear(om16, xm, wl.subarray(0, 768 * 3072), null, 16, 3072, 768);
    const h = createHash('sha256');
    for (const a of [out, ao, lse, g, ol, om, om16, lo, lm, ls, rq]) h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    h.update(String(b.sumSquares(big)));
    process.stdout.write(h.digest('hex'));`;
  const run = (env: Record<string, string>) => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code],
      { env: { ...process.env, ...env }, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  };
  const one = run({ KFORCE_THREADS: '1' });
  const two = run({ KFORCE_THREADS: '2' });
  assert.match(one, /^[0-9a-f]{64}$/);
  assert.equal(one, two);
  // Transparent huge pages (off by default) move memory, never values; neither does cutting the threads' last blocks
  // into pieces (KFORCE_LIN_TAIL, default 4) or not (1), nor where the decode tiles prefetch (KFORCE_LIN_PF_BACK:
  // 0 the next tile at the same k, 64 the default, 2000 more than a whole chunk; KFORCE_LIN_HINT1=1, the second group
  // prefetching the next block, off by default since session 14).
  assert.equal(run({ KFORCE_THREADS: '2', KFORCE_LIN_HUGE: '1' }), one);
  assert.equal(run({ KFORCE_THREADS: '2', KFORCE_LIN_TAIL: '1' }), one);
  assert.equal(run({ KFORCE_THREADS: '2', KFORCE_LIN_TAIL: '7' }), one);
  for (const back of ['0', '2000']) assert.equal(run({ KFORCE_THREADS: '2', KFORCE_LIN_PF_BACK: back }), one);
  assert.equal(run({ KFORCE_THREADS: '2', KFORCE_LIN_HINT1: '1' }), one);
});

test('attention at head dim 64: the batched chunk update gives the bits of the one-unit-at-a-time update', { skip }, () => {
  // KFORCE_ATTENTION_UNITS=0 sends every (query, head) through the single-unit chunk update. Covered: query groups of
  // 8, 5 and 3 sharing chunks (PV in fours plus the rest), every query's own chunks over 12 heads (units of 8 + 4),
  // partial chunks, a key list of two ranges.
  const code = `
    import { loadNativeBackend } from './src/tensor/native.ts';
    import { Rng } from './src/tensor/rng.ts';
    import { createHash } from 'node:crypto';
    const b = loadNativeBackend().backend;
    const rng = new Rng(8);
    const r = (n) => Float32Array.from({ length: n }, () => rng.normal(0, 1));
    const H = 12, Dh = 64, W = H * Dh, nk = 150;
    const lists = [];
    for (let i = 0; i < 13; i++) lists.push([[0, 100 + i]]);
    for (let s = 0; s < 3; s++) lists.push([[1, 38 + 40 * s]]);
    lists.push([[3, 70], [90, 140]]);
    const T = lists.length, rowPtr = new Int32Array(T + 1), flat = [];
    lists.forEach((l, i) => { for (const [s, e] of l) flat.push(s, e); rowPtr[i + 1] = rowPtr[i] + l.length; });
    const q = r(T * W), k = r(nk * 2 * W), ao = new Float32Array(T * W), lse = new Float32Array(T * H);
    b.attention({ nq: T, nHeads: H, headDim: Dh, q, qStride: W, k, kStride: 2 * W, v: k.subarray(W), vStride: 2 * W,
      out: ao, outStride: W, lse, mask: { rowPtr, ranges: Int32Array.from(flat) }, scale: 0.125 });
    const h = createHash('sha256');
    for (const a of [ao, lse]) h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    process.stdout.write(h.digest('hex'));`;
  const run = (units: string) => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code],
      { env: { ...process.env, KFORCE_ATTENTION_UNITS: units }, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  };
  const batched = run('1');
  assert.match(batched, /^[0-9a-f]{64}$/);
  assert.equal(run('0'), batched);
});
