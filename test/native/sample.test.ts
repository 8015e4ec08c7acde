// The native token-selection kernels (native/sample.c) against the TypeScript rules of src/decode/sampling.ts, which
// use Math.exp, a full sort for top-p and plain scalar loops: the tokens (and errors, and penalty counts) must be
// identical, row for row, on rows built to hit the boundaries (ties, cdf values equal to u, underflowing
// exponentials, -inf and NaN logits, top-p cut points).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  TokenCounts, inverseCdf, sampleArRows, selectPflmRows, softmax64, type ArSamplingOptions,
} from '../../src/decode/sampling.ts';
import { generate } from '../../src/decode/generate.ts';
import { initModel } from '../../src/index.ts';
import { nativeSelect } from '../../src/tensor/native.ts';
import { Rng } from '../../src/tensor/rng.ts';
import { skip } from './helpers.ts';
import { TINY, tokenRows } from '../model/reference.ts';

function kernels() {
  const k = nativeSelect();
  if (!k) throw new Error('native addon unavailable');
  return k;
}

test('exp64 gives the bits of Math.exp', { skip }, () => {
  const rng = new Rng(5);
  const n = 300_000;
  const x = new Float64Array(n + 40), out = new Float64Array(n + 40);
  const ranges: Array<[number, number]> = [[-60, 0], [-750, 750], [-1e-7, 1e-7], [-1.1, 1.1], [-746, -700], [700, 710]];
  for (let i = 0; i < n; i++) {
    const [a, b] = ranges[i % ranges.length];
    x[i] = a + (b - a) * rng.uniform();
  }
  const special = [0, -0, Infinity, -Infinity, NaN, 709.78, 709.7827128933841, -745.1332191019411, -745.1332191019412,
    -708.3964185322641, -708.4, -0.34657359027997264, -0.3465735902799727, 0.34657359027997264, -1.0397207708399179,
    -1.039720770839918, 1.0397207708399179, 3.725290298461914e-9, -3.7252902984619136e-9, 5e-324, -5e-324, 1e-310,
    -1e-310, 1, -1, 0.5, -0.5, 2, -2, 1e-300];
  special.forEach((v, i) => { x[n + i] = v; });
  // Groups of 8 (one vector each) on both sides of the kernel's general-range test (1.5 ln2 < |x|, -707 < x < 709):
  // all inside it (the short path), then each with one lane just outside (the masked path).
  const ln15 = 1.0397207708399179, up = (v: number) => v + Math.abs(v) * 2 ** -52, dn = (v: number) => v - Math.abs(v) * 2 ** -52;
  const inside = [up(ln15), -up(ln15), dn(709), up(-707), 1.5, -1.5, -700.5, 700.5];
  const edges = [ln15, -ln15, 709, -707, dn(ln15), -dn(ln15), 709.5, -707.5];
  const groups = [inside, ...edges.map((e, i) => inside.map((v, j) => (j === i ? e : v)))].flat();
  const g = new Float64Array(groups), gout = new Float64Array(groups.length);
  kernels().exp64(gout, g);
  g.forEach((v, i) => {
    if (!Object.is(gout[i], Math.exp(v))) assert.fail(`exp64(${v}) = ${gout[i]}, Math.exp gives ${Math.exp(v)}`);
  });
  // lengths that are not multiples of the vector width go through the masked tail
  for (const len of [x.length, x.length - 3, 5, 1]) {
    kernels().exp64(out.subarray(0, len), x.subarray(x.length - len));
    for (let i = 0; i < len; i++) {
      const v = x[x.length - len + i];
      if (!Object.is(out[i], Math.exp(v))) assert.fail(`exp64(${v}) = ${out[i]}, Math.exp gives ${Math.exp(v)}`);
    }
  }
});

/** The running sum of the first `blocks` blocks of 64 probabilities, each summed in 8 lanes (lane l: indices l,
 * l + 8, ..., l + 56 in order; lanes combined pairwise as ((0+1)+(2+3))+((4+5)+(6+7))), as the AR scan skips them. */
function blockPrefix(p: Float64Array, blocks: number): number {
  let c = 0;
  for (let b = 0; b < blocks; b++) {
    const t: number[] = [];
    for (let l = 0; l < 8; l++) {
      let a = p[64 * b + l];
      for (let i = 1; i < 8; i++) a += p[64 * b + 8 * i + l];
      t.push(a);
    }
    c += ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
  }
  return c;
}

/** A logits row of one of several shapes that stress the selection rules. */
function makeRow(rng: Rng, V: number, kind: number): Float32Array {
  const r = new Float32Array(V);
  for (let v = 0; v < V; v++) {
    const g = rng.normal(0, 1);
    switch (kind) {
      case 0: r[v] = g * 3; break; // ordinary
      case 1: r[v] = Math.round(g * 2) / 2; break; // many exact ties
      case 2: r[v] = 0; break; // all equal
      case 3: r[v] = g * 400; break; // most exponentials underflow, some to subnormals
      case 4: r[v] = rng.uniform() < 0.3 ? -Infinity : g; break; // -inf entries (probability 0)
      case 5: r[v] = v === V - 1 ? 50 : g; break; // one dominant token at the end
      default: r[v] = g * 0.01; break; // nearly flat
    }
  }
  return r;
}

const V_LIST = [1, 2, 7, 16, 37, 1000, 5003];

test('sampleArRows: native kernel and TypeScript rule choose the same tokens', { skip }, () => {
  const rng = new Rng(11);
  const temps = [0, 1e-3, 0.3, 1, 1.7];
  const topPs = [1, 0.9, 0.5, 1e-9, 0.999999, 0.3];
  for (const V of V_LIST) {
    const rows: Float32Array[] = [];
    const us: number[] = [];
    const opts: ArSamplingOptions[] = [];
    for (let i = 0; i < 120; i++) {
      const row = makeRow(rng, V, i % 7);
      const o: ArSamplingOptions = { temperature: temps[i % temps.length], topP: topPs[(i >> 2) % topPs.length], penalty: 0, maskIndex: V > 3 ? V - 2 : -1 };
      let u = [rng.uniformOpen(), 1, 2 ** -53, 0.5][i % 4];
      if (i % 9 === 8 && o.temperature > 0 && o.topP === 1) {
        // u exactly equal to a cumulative probability: the boundary of the `>=` test
        const p = softmax64(row.map((x, v) => (v === o.maskIndex ? -1000 : x)), o.temperature);
        let c = 0;
        const stop = Math.floor(rng.uniform() * V);
        for (let v = 0; v <= stop; v++) c += p[v];
        if (c > 0 && c <= 1) u = c;
        assert.equal(inverseCdf(p, u), inverseCdf(p, u)); // the TS scan is what the kernel is compared to below
      } else if (i % 9 === 4 && o.temperature > 0 && o.topP === 1 && V >= 64) {
        // u exactly equal to the running sum of whole blocks: the boundary of the blocked scan's skip test
        const p = softmax64(row.map((x, v) => (v === o.maskIndex ? -1000 : x)), o.temperature);
        const c = blockPrefix(p, Math.floor(rng.uniform() * Math.floor(V / 64)) + 1);
        if (c > 0 && c <= 1) u = c;
      }
      rows.push(row);
      us.push(u);
      opts.push(o);
    }
    const a = sampleArRows(rows.map((r) => r.slice()), us, null, opts, 'ts');
    const b = sampleArRows(rows.map((r) => r.slice()), us, null, opts, 'native');
    assert.deepEqual(b, a, `V = ${V}`);
    // a row's token does not depend on the rows around it
    const pick = [5, 3, 77, 0];
    const c = sampleArRows(pick.map((i) => rows[i].slice()), pick.map((i) => us[i]), null, pick.map((i) => opts[i]), 'native');
    assert.deepEqual(c, pick.map((i) => a[i]));
  }
});

test('sampleArRows: u at the running sums of whole blocks (where the skip test decides), native = TypeScript = the rule', { skip }, () => {
  const rng = new Rng(21);
  const rows: Float32Array[] = [];
  const us: number[] = [];
  const want: number[] = [];
  const o: ArSamplingOptions = { temperature: 1, topP: 1, penalty: 0, maskIndex: -1 };
  const V = 647; // one call takes rows of one length
  for (let i = 0; i < 400; i++) {
    const row = makeRow(rng, V, [0, 4, 6][i % 3]);
    const p = softmax64(row, 1);
    const b = 1 + Math.floor(rng.uniform() * 9);
    let u = blockPrefix(p, b);
    if (i % 2) u = Math.min(1, u + u * 2 ** -52); // one ulp above
    if (!(u > 0)) continue;
    // the rule written out: skip blocks while their running sum stays below u, then token by token
    let c = 0, v = 0, t = V - 1;
    while (v + 64 <= V && blockPrefix(p, v / 64 + 1) < u) v += 64;
    c = blockPrefix(p, v / 64);
    for (; v < V; v++) if ((c += p[v]) >= u) { t = v; break; }
    rows.push(row);
    us.push(u);
    want.push(t);
  }
  const a = sampleArRows(rows.map((r) => r.slice()), us, null, o, 'ts');
  const n = sampleArRows(rows.map((r) => r.slice()), us, null, o, 'native');
  assert.deepEqual(a, want);
  assert.deepEqual(n, want);
});

test('sampleArRows: full vocabulary rows, frequency penalty and counts', { skip }, () => {
  const rng = new Rng(12);
  const V = 50258;
  const rows: Float32Array[] = [];
  const counts: TokenCounts[] = [];
  const counts2: TokenCounts[] = [];
  const us: number[] = [];
  for (let i = 0; i < 24; i++) {
    rows.push(makeRow(rng, V, i % 7));
    const c = new TokenCounts(V), c2 = new TokenCounts(V);
    for (let j = 0; j < 40; j++) {
      const t = rng.int(V);
      c.add(t);
      c2.add(t);
    }
    counts.push(c);
    counts2.push(c2);
    us.push(rng.uniformOpen());
  }
  for (const o of [
    { temperature: 1, topP: 1, penalty: 0.5, maskIndex: V - 1 },
    { temperature: 0.7, topP: 0.95, penalty: 0.25, maskIndex: V - 1 },
    { temperature: 0, topP: 1, penalty: 1, maskIndex: V - 1 },
  ]) {
    const a = sampleArRows(rows.map((r) => r.slice()), us, counts, o, 'ts');
    const b = sampleArRows(rows.map((r) => r.slice()), us, counts2, o, 'native');
    assert.deepEqual(b, a);
    assert.ok(a.every((t) => typeof t === 'number' && t >= 0 && t < V));
  }
});

test('sampleArRows: bad rows and options fail alone, with the TypeScript rule\'s errors', { skip }, () => {
  const rng = new Rng(13);
  const V = 300;
  const good = makeRow(rng, V, 0);
  const nanRow = good.slice(); nanRow[17] = NaN;
  const infRow = good.slice(); infRow[3] = Infinity;
  const allNeg = new Float32Array(V).fill(-Infinity);
  const nanFirst = new Float32Array(V).fill(NaN);
  const o = { temperature: 1, topP: 1, penalty: 0, maskIndex: -1 };
  const cases: Array<[Float32Array, number, ArSamplingOptions]> = [
    [good, 0.3, o], [nanRow, 0.3, o], [infRow, 0.3, o], [allNeg, 0.3, o], [nanFirst, 0.3, { ...o, temperature: 0 }],
    [nanRow, 0.3, { ...o, topP: 0.5 }], [good, 0, o], [good, 1.5, o], [good, 0.3, { ...o, temperature: -1 }],
    [good, 0.3, { ...o, topP: 0 }], [good, 0.3, { ...o, temperature: NaN }], [good, 0.7, { ...o, topP: NaN }],
    [nanRow, 0.3, { ...o, temperature: 0 }],
  ];
  const a = sampleArRows(cases.map((c) => c[0].slice()), cases.map((c) => c[1]), null, cases.map((c) => c[2]), 'ts');
  const b = sampleArRows(cases.map((c) => c[0].slice()), cases.map((c) => c[1]), null, cases.map((c) => c[2]), 'native');
  assert.equal(b.length, a.length);
  for (let i = 0; i < a.length; i++) {
    if (a[i] instanceof Error) {
      assert.ok(b[i] instanceof Error, `case ${i}: TS threw ${(a[i] as Error).message}, native gave ${String(b[i])}`);
      assert.equal((b[i] as Error).message, (a[i] as Error).message);
    } else {
      assert.equal(b[i], a[i], `case ${i}`);
    }
  }
  assert.equal(typeof a[0], 'number');
  assert.ok(a[1] instanceof Error && /NaN/.test(a[1].message));
});

test('selectPflmRows: native kernel and TypeScript rule pick the same slots and leave the same counts', { skip }, () => {
  const rng = new Rng(21);
  for (const V of [3, 16, 50, 1001, 50258]) {
    const n = V > 2000 ? 10 : 40;
    const blocks: Float32Array[] = [];
    const ca: TokenCounts[] = [], cb: TokenCounts[] = [];
    const lambdas: number[] = [], takes: number[] = [];
    for (let i = 0; i < n; i++) {
      const k = 1 + (i % 4);
      const b = new Float32Array(k * V);
      for (let s = 0; s < k; s++) b.set(makeRow(rng, V, (i + s) % 7), s * V);
      if (i % 5 === 4) b.fill(b[0]); // every slot ties everywhere: the penalty alone separates them
      blocks.push(b);
      const x = new TokenCounts(V), y = new TokenCounts(V);
      for (let j = 0; j < (i % 3) * 7; j++) {
        const t = rng.int(V);
        x.add(t);
        y.add(t);
      }
      ca.push(x);
      cb.push(y);
      lambdas.push([0, 0.25, 0.5, 1e-40, 3][i % 5]);
      takes.push(i % 7 === 6 ? k - 1 : k);
    }
    const a = selectPflmRows(blocks.map((b) => b.slice()), V, ca, lambdas, V - 1, takes, 'ts');
    const b = selectPflmRows(blocks.map((b) => b.slice()), V, cb, lambdas, V - 1, takes, 'native');
    assert.deepEqual(b, a, `V = ${V}`);
    for (let i = 0; i < n; i++) {
      assert.deepEqual(cb[i].counts, ca[i].counts);
      assert.deepEqual(cb[i].distinct(), ca[i].distinct());
    }
  }
});

test('selectPflmRows: a NaN slot fails its sequence only, counts as the TypeScript rule leaves them', { skip }, () => {
  const rng = new Rng(22);
  const V = 40;
  const mk = (nanSlot: number) => {
    const b = new Float32Array(3 * V);
    for (let s = 0; s < 3; s++) b.set(makeRow(rng, V, 0), s * V);
    if (nanSlot >= 0) b.fill(NaN, nanSlot * V, (nanSlot + 1) * V);
    return b;
  };
  const blocks = [mk(-1), mk(1), mk(0), mk(2)];
  for (const lam of [0, 0.5]) {
    const ca = blocks.map(() => new TokenCounts(V)), cb = blocks.map(() => new TokenCounts(V));
    // no mask index: with one, the mask logit (-1000) would win over a NaN row instead of an error
    const a = selectPflmRows(blocks.map((b) => b.slice()), V, ca, blocks.map(() => lam), -1, [3, 3, 3, 3], 'ts');
    const b = selectPflmRows(blocks.map((b) => b.slice()), V, cb, blocks.map(() => lam), -1, [3, 3, 3, 3], 'native');
    assert.ok(Array.isArray(a[0]) && a.slice(1).every((x) => x instanceof Error));
    assert.deepEqual(b.map((x) => (x instanceof Error ? x.message : x)), a.map((x) => (x instanceof Error ? x.message : x)));
    for (let i = 0; i < blocks.length; i++) assert.deepEqual(cb[i].distinct(), ca[i].distinct());
  }
});

test('sampleAr and selectPflm kernels reject malformed arguments with named errors', { skip }, () => {
  const k = kernels();
  const row = new Float32Array(10);
  const one = (v: number) => new Float64Array([v]);
  assert.throws(() => k.sampleAr([row], 11, one(1), one(1), one(0.5), new Int32Array(1)), /sampleAr: rows\[0\] has 10 elements/);
  assert.throws(() => k.sampleAr([row], 10, one(-1), one(1), one(0.5), new Int32Array(1)), /sampleAr: temps\[0\]/);
  assert.throws(() => k.sampleAr([row], 10, one(1), one(0), one(0.5), new Int32Array(1)), /sampleAr: topPs\[0\]/);
  assert.throws(() => k.sampleAr([row], 10, one(1), one(1), one(0), new Int32Array(1)), /sampleAr: us\[0\]/);
  assert.throws(() => k.sampleAr([new Float64Array(10) as unknown as Float32Array], 10, one(1), one(1), one(0.5),
    new Int32Array(1)), /rows\[0\] must be a Float32Array/);
  const c = new Int32Array(10);
  assert.throws(() => k.selectPflm([row, row], [c, c], new Int32Array([1, 1]), new Float64Array(2), 10, 1, -1,
    new Int32Array(2)), /selectPflm: counts\[0\] and counts\[1\] are the same array/);
  assert.throws(() => k.selectPflm([row], [c], new Int32Array([2]), new Float64Array(1), 10, 1, -1, new Int32Array(2)),
    /takes\[0\] = 2 is outside/);
  assert.throws(() => k.selectPflm([row], [c], new Int32Array([1]), new Float64Array([-1]), 10, 1, -1, new Int32Array(1)),
    /lambdas\[0\]/);
});

test('generate: native selection reproduces the TypeScript selection end to end (AR and PFLM)', { skip }, () => {
  const cfg = { ...TINY, vocabSize: 300, maskIndex: 299 };
  const ar = initModel({ ...cfg, maxK: 0 }, 'ar', 5, { std: 0.5 });
  const pf = initModel(cfg, 'pflm', 6, { std: 0.5 });
  const prompts = tokenRows(5, 4, cfg.vocabSize - 1, 9);
  const runs: Array<[typeof ar | typeof pf, object]> = [
    [ar, { temperature: 1 }], [ar, { temperature: 0.8, topP: 0.9, penalty: 0.4 }], [ar, { temperature: 0, penalty: 1 }],
    [pf, { k: 3 }], [pf, { k: 2, penalty: 0 }],
  ];
  for (const [m, o] of runs) {
    const go = () => generate(m.decoder(), prompts, { maxNewTokens: 13, seed: 4, maxBatch: 3, ...o });
    const prev = process.env.KFORCE_SELECT;
    process.env.KFORCE_SELECT = 'ts';
    let ts;
    try {
      ts = go();
    } finally {
      if (prev === undefined) delete process.env.KFORCE_SELECT;
      else process.env.KFORCE_SELECT = prev;
    }
    assert.deepEqual(go().tokens, ts.tokens, `${m.kind} ${JSON.stringify(o)}`);
  }
});
