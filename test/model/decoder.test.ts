// The paged KV decoder under continuous batching: sequences join and leave at random, grow across many pages, and
// the pool compacts and grows; every returned logit row must equal the full forward of that sequence's tokens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { initModel } from '../../src/index.ts';
import { getBackend } from '../../src/tensor/select.ts';
import { maxRelDiff, TINY, tokenRows, uniforms } from './reference.ts';

const V = TINY.vocabSize;

test('AR: random join/leave schedule over multi-page sequences equals per-sequence full forwards', () => {
  const ar = initModel({ ...TINY, maxK: 0 }, 'ar', 3, { std: 0.3 });
  const L = 110;
  const seqs = tokenRows(12, L, V, 17);
  const want = seqs.map((r) => ar.logits([r]).data);
  const dec = ar.decoder();
  const coin = uniforms(20000, 5);
  let c = 0;
  const live = new Map<number, { b: number; n: number }>();
  let nextSeq = 0;
  let checked = 0;
  for (let step = 0; step < 2000 && (nextSeq < 12 || live.size > 0); step++) {
    if (nextSeq < 12 && (live.size < 2 || coin[c++] < 0.15)) {
      const n = 1 + Math.floor(coin[c++] * 40);
      live.set(dec.open(seqs[nextSeq].slice(0, n)), { b: nextSeq, n });
      nextSeq++;
    }
    const ids = [...live.keys()].filter(() => coin[c++] < 0.8);
    if (ids.length === 0) continue;
    const out = dec.step(ids);
    ids.forEach((id, i) => {
      const st = live.get(id)!;
      assert.ok(maxRelDiff(out[i], want[st.b].subarray((st.n - 1) * V, st.n * V)) < 1e-6, `seq ${st.b} at ${st.n}`);
      checked++;
      const add = Math.min(L - st.n, 1 + Math.floor(coin[c++] * 4));
      if (add === 0 || coin[c++] < 0.01) { dec.close(id); live.delete(id); return; }
      dec.append(id, seqs[st.b].slice(st.n, st.n + add));
      st.n += add;
    });
  }
  assert.ok(checked > 200, `checked ${checked}`);
  const st = dec.stats();
  assert.ok(st.grows >= 2 && st.compactions >= 1, JSON.stringify(st));
});

test('PFLM: transient noise rows at page boundaries, uneven pending tokens, compaction', () => {
  const pf = initModel(TINY, 'pflm', 4, { std: 0.3 });
  const dec = pf.decoder();
  const rows = tokenRows(5, 120, V, 23);
  const ids = rows.map((r, b) => dec.open(r.slice(0, 29 + b)));
  const lens = rows.map((_, b) => 29 + b);
  for (let step = 0; step < 12; step++) {
    if (step === 5) { dec.close(ids[1]); }
    const active = ids.filter((_, b) => !(step >= 5 && b === 1));
    const noise = active.map((_, i) => uniforms(4, 100 * step + i).slice(0, 1 + ((step + i) % 4)));
    const out = dec.step(active, { noise });
    active.forEach((id, i) => {
      const b = ids.indexOf(id);
      const ref = pf.session([rows[b].slice(0, lens[b])]).next([noise[i]]).data;
      assert.ok(maxRelDiff(out[i], ref) < 1e-6, `seq ${b} step ${step}`);
      const add = 1 + ((step * 3 + b) % 7);
      dec.append(id, rows[b].slice(lens[b], lens[b] + add));
      lens[b] += add;
    });
  }
  assert.ok(dec.stats().usedPages <= dec.stats().pages);
});

test('PFLM: noise rows encoded ahead (noiseAhead) give the bits of rows encoded in their own step', () => {
  const pf = initModel(TINY, 'pflm', 4, { std: 0.3 });
  const [plain, ahead] = [pf.decoder(), pf.decoder()];
  const rows = tokenRows(2, 40, V, 29);
  const idsP = rows.map((r) => plain.open(r.slice(0, 5)));
  const idsA = rows.map((r) => ahead.open(r.slice(0, 5)));
  const u = rows.map((_, i) => uniforms(24, 7 + i));
  const tau = [1, 0.7];
  for (let step = 0; step < 6; step++) {
    const noise = u.map((r) => r.slice(4 * step, 4 * step + 4));
    const noiseAhead = step % 3 === 0 ? u.map((r) => r.slice(4 * step + 4, 4 * step + 12)) : undefined;
    const a = ahead.step(idsA, { noise, tau, noiseAhead });
    const p = plain.step(idsP, { noise, tau });
    a.forEach((o, i) => assert.ok(o.every((v, j) => Object.is(v, p[i][j])), `step ${step} seq ${i}`));
    rows.forEach((r, i) => {
      plain.append(idsP[i], r.slice(5 + step, 6 + step));
      ahead.append(idsA[i], r.slice(5 + step, 6 + step));
    });
  }
  assert.equal(ahead.stats().noiseRowsReused, 2 * 4 * 4); // steps 1, 2, 4, 5 of both sequences
  assert.equal(plain.stats().noiseRowsReused, 0);
  // A cached row is reused only with its own tau.
  const reused = ahead.stats().noiseRowsReused;
  const both = (f: (d: typeof plain, ids: number[]) => void) => { f(plain, idsP as number[]); f(ahead, idsA as number[]); };
  ahead.step(idsA, { noise: [[0.25], [0.25]], tau: [1, 1], noiseAhead: [[0.625], [0.625]] });
  plain.step(idsP, { noise: [[0.25], [0.25]], tau: [1, 1] });
  both((d, ids) => ids.forEach((id) => d.append(id, [3])));
  const a2 = ahead.step(idsA, { noise: [[0.625], [0.625]], tau: [0.5, 0.5] });
  const p2 = plain.step(idsP, { noise: [[0.625], [0.625]], tau: [0.5, 0.5] });
  a2.forEach((o, i) => assert.ok(o.every((v, j) => Object.is(v, p2[i][j])), `other tau, seq ${i}`));
  assert.equal(ahead.stats().noiseRowsReused, reused);
  both((d, ids) => ids.forEach((id) => d.append(id, [4])));
  // Bad noiseAhead is refused.
  assert.throws(() => ahead.step(idsA, { noise: [[0.5], [0.5]], noiseAhead: [[0.5]] }), /noiseAhead must hold one array of uniforms per sequence \(2\)/);
  assert.throws(() => ahead.step(idsA, { noise: [[0.5], [0.5]], noiseAhead: [[1.5], []] }), /noiseAhead\[0\]\[0\]/);
});

test('preallocate sizes the KV pool up front: decoding within it never grows the pool, and bad sizes are refused', () => {
  const pf = initModel(TINY, 'pflm', 5, { std: 0.3 });
  const dec = pf.decoder();
  dec.preallocate(3, 100);
  const before = dec.stats();
  assert.equal(before.pages * before.pageRows >= 3 * 100, true);
  const rows = tokenRows(3, 100, V, 7);
  const ids = rows.map((r) => dec.open(r.slice(0, 10)));
  for (let step = 0; step < 20; step++) {
    dec.step(ids, { noise: ids.map((_, i) => uniforms(4, step * 10 + i)) });
    ids.forEach((id, b) => dec.append(id, rows[b].slice(10 + 4 * step, 14 + 4 * step)));
  }
  assert.equal(dec.stats().grows, before.grows);
  assert.equal(dec.stats().pages, before.pages);
  // the pages are backed by memory at once (written), not on the first decode step that touches them
  const big = pf.decoder();
  const bytes = TINY.nBlocks * 64 * 2048 * 2 * TINY.hiddenSize * 4;
  const rss0 = process.memoryUsage().rss;
  big.preallocate(64, 2048);
  const grown = process.memoryUsage().rss - rss0;
  assert.ok(grown > 0.5 * bytes, `resident memory grew by ${grown} bytes for a ${bytes}-byte pool`);
  assert.throws(() => dec.preallocate(-1, 10), /sequences must be an integer >= 0/);
  assert.throws(() => dec.preallocate(2, 1.5), /rows must be an integer >= 0/);
});

test('PFLM step: the last block runs attention, attention output and MLP for the noise rows only', () => {
  const cfg = { ...TINY, maxK: 4 };
  const pflm = initModel(cfg, 'pflm', 3, { std: 0.3 });
  const D = cfg.hiddenSize, L = cfg.nBlocks;
  const be = getBackend() as unknown as { linear: (...a: unknown[]) => void };
  const orig = be.linear;
  const calls: Array<[number, number, number]> = [];
  be.linear = function (this: unknown, ...a: unknown[]) {
    calls.push([a[4] as number, a[5] as number, a[6] as number]);
    return orig.apply(this, a);
  };
  let logits: Float32Array[];
  try {
    const dec = pflm.decoder();
    const id = dec.open([1, 2, 3, 4, 5]);
    calls.length = 0;
    logits = dec.step([id], { noise: [[0.2, 0.7, 0.4]] });
  } finally {
    be.linear = orig;
  }
  // the backbone's linear calls: 4 per block (qkv, attention output, fc1, fc2) on 5 context + 3 noise rows, but the
  // last block's last three on the 3 noise rows only; then the output layer on the noise rows
  const backbone = calls.filter(([, K, N]) => (K === D && (N === 3 * D || N === D || N === 4 * D)) || (K === 4 * D && N === D));
  const rows = backbone.slice(-4 * L).map(([M]) => M);
  assert.deepEqual(rows, [...Array.from({ length: 4 * (L - 1) }, () => 8), 8, 3, 3, 3]);
  // and the noise rows' logits are the full forward's (the other decoder tests check every layout against it)
  assert.equal(logits[0].length, 3 * cfg.vocabSize);
});
