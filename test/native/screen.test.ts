// The screened PFLM selection (native/screen.c) against the plain path: the full output layer (backend linear) and
// the PFLM rule (selectPflmRows). Same tokens, same errors, same counts, on weights built to stress the bound: exact
// ties between tokens (the first must win), logits one float apart, penalties that move the winner, the [MASK]
// token, rows with thousands of equal candidates (the fallback to the full row), NaN inputs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenCounts, selectPflmRows } from '../../src/decode/sampling.ts';
import { getBackend } from '../../src/tensor/select.ts';
import { nativeScreen, SCREEN_META } from '../../src/tensor/native.ts';
import { Rng } from '../../src/tensor/rng.ts';
import { skip } from './helpers.ts';

const screen = nativeScreen();
const skipScreen = skip || (screen ? false : 'addon built without int8 dot-product kernels (AVX512_VNNI)');

interface Case {
  N: number;
  K: number;
  w: Float32Array;
  bias: Float32Array;
  h: Float32Array; // [M, K]
  takes: number[];
  lambdas: number[];
  maskIndex: number;
  counts: (rng: Rng) => TokenCounts[];
}

function fill(rng: Rng, a: Float32Array, scale: number): Float32Array {
  for (let i = 0; i < a.length; i++) a[i] = rng.normal(0, scale);
  return a;
}

/** Tokens (or errors) and final counts from the plain path and from the screen, on copies of the same counts. */
function both(c: Case, seed: number): { plain: (number[] | Error)[]; screened: (number[] | Error)[]; cp: TokenCounts[]; cs: TokenCounts[] } {
  const { N, K, w, bias, h, takes, lambdas, maskIndex } = c;
  const M = h.length / K;
  const cp = c.counts(new Rng(seed)), cs = c.counts(new Rng(seed));
  const logits = new Float32Array(M * N);
  getBackend().linear(logits, h, w, bias, M, K, N);
  const blocks: Float32Array[] = [];
  const rowStart = new Int32Array(takes.length);
  for (let i = 0, r = 0; i < takes.length; i++) {
    rowStart[i] = r;
    blocks.push(logits.slice(r * N, (r + takes[i]) * N));
    r += takes[i];
  }
  const plain = selectPflmRows(blocks, N, cp, lambdas, maskIndex, takes, 'ts');
  const wq = new Int8Array(screen!.bytes(N, K));
  const meta = new Float32Array(SCREEN_META * N);
  assert.ok(screen!.prepare(w, N, K, wq, meta));
  const kmax = Math.max(...takes);
  const out = new Int32Array(takes.length * kmax);
  screen!.select(h, M, K, N, wq, meta, w, bias, new Int32Array(M * N), rowStart, Int32Array.from(takes),
    cs.map((t) => t.counts), Float64Array.from(lambdas), maskIndex, kmax, out);
  const screened = takes.map((t, i) => {
    const toks = Array.from(out.subarray(i * kmax, i * kmax + t));
    if (toks.some((x) => x < 0)) return new Error(`screen: ${toks.join(',')}`);
    for (const x of toks) cs[i].add(x);
    return toks;
  });
  return { plain, screened, cp, cs };
}

function assertSame(c: Case, seed: number, what: string): void {
  const { plain, screened, cp, cs } = both(c, seed);
  plain.forEach((p, i) => {
    if (p instanceof Error) assert.ok(screened[i] instanceof Error, `${what}: sequence ${i}: plain failed (${p.message}), screen gave ${String(screened[i])}`);
    else assert.deepEqual(screened[i], p, `${what}: sequence ${i}`);
  });
  cp.forEach((t, i) => assert.deepEqual(cs[i].counts, t.counts, `${what}: counts of sequence ${i}`));
}

function randomCounts(S: number, N: number, n: number): (rng: Rng) => TokenCounts[] {
  return (rng) => Array.from({ length: S }, () => {
    const t = new TokenCounts(N);
    for (let j = 0; j < n; j++) t.add(rng.int(N));
    return t;
  });
}

test('screened selection: same tokens and counts as the full output layer on random weights', { skip: skipScreen }, () => {
  const rng = new Rng(31);
  for (const [N, K] of [[1, 16], [7, 40], [257, 100], [1000, 64], [5003, 768], [50258, 96]] as const) {
    // every row count of the integer pass's tiles (groups of 1 to 4 rows: M = 8, 5, 2, 3, 7, 1, 4), a penalised
    // sequence alone (a batch-1 PFLM step: its slots in order, one worker), and 20 slots of three sequences (penalised
    // ones among them: top lists of 1 to 8 tokens) shared by both threads
    for (const [lambdas, takes] of [[[0, 0, 0], [4, 1, 3]], [[0.5, 1.7, 0], [4, 1, 3]], [[0.25, 0.25, 3], [4, 1, 3]],
      [[0, 0], [1, 4]], [[0.5, 0], [1, 1]], [[0, 1], [2, 1]], [[0, 0.5, 0], [3, 2, 2]], [[0], [1]], [[0.5], [4]],
      [[0.5, 0, 0.25], [8, 7, 5]]]) {
      const M = takes.reduce((a, b) => a + b, 0);
      const c: Case = {
        N, K, w: fill(rng, new Float32Array(N * K), 0.05), bias: fill(rng, new Float32Array(N), 0.1),
        h: fill(rng, new Float32Array(M * K), 1), takes, lambdas, maskIndex: N > 3 ? N - 2 : -1,
        counts: randomCounts(takes.length, N, 30),
      };
      assertSame(c, N + K, `N=${N} K=${K} lambdas=${lambdas.join(',')} takes=${takes.join(',')}`);
    }
  }
});

test('screened selection: exact ties go to the first token, near-ties are decided exactly', { skip: skipScreen }, () => {
  const rng = new Rng(32);
  const N = 4000, K = 64;
  const w = fill(rng, new Float32Array(N * K), 0.02);
  const bias = new Float32Array(N);
  const h = fill(rng, new Float32Array(4 * K), 1);
  // Tokens 900 < 1800 < 3500 get the same row aligned with h, so they tie for the maximum; 2500 and 2501 are one
  // float apart in one weight; 3999 sits just under the tie.
  const top = new Float32Array(K);
  for (let k = 0; k < K; k++) top[k] = h[k] * 0.5;
  for (const v of [900, 1800, 3500, 2500, 2501, 3999]) w.set(top, v * K);
  w[2501 * K + 3] = Math.fround(w[2501 * K + 3] * (1 + 2 ** -23));
  w[3999 * K + 5] = Math.fround(w[3999 * K + 5] * (1 - 2 ** -22));
  for (const lambdas of [[0], [0.5], [2]]) {
    const c: Case = { N, K, w, bias, h, takes: [4], lambdas, maskIndex: N - 1, counts: () => [new TokenCounts(N)] };
    assertSame(c, 1, `ties, lambda ${lambdas[0]}`);
    const { plain } = both(c, 1);
    if (lambdas[0] === 0) assert.equal((plain[0] as number[])[0], 900, 'the tie is real: the first tied token wins');
  }
  // Quantisation errors that all point the same way (h just below half-steps of its int8 grid, a weight row of equal
  // positive values): the int8 estimate of token 0 is low by the full error bound, token 1's is exact, and token 0
  // still has the larger logit. A bound that undercounts the activation error would drop token 0.
  {
    const K2 = 64;
    const ha = new Float32Array(K2).fill(10.49);
    ha[0] = 127; // sets the activation scale to exactly 1
    const w2 = new Float32Array(3 * K2);
    w2.fill(0.01, 0, K2); // true logit 0.01 * (127 + 63 * 10.49) = 7.8787
    w2[K2] = Math.fround(7.85 / 127); // token 1: 7.85, represented exactly by the int8 grid
    for (const lambdas of [[0], [0.5]]) {
      const c: Case = { N: 3, K: K2, w: w2, bias: new Float32Array(3), h: ha, takes: [1], lambdas, maskIndex: 2,
        counts: () => [new TokenCounts(3)] };
      assertSame(c, 7, 'aligned quantisation errors');
      assert.deepEqual(both(c, 7).plain[0], [0]);
    }
    // The same error against a rival with no error of its own (its logit is its bias): 7.877 lies 98.7% of the way
    // from token 0's int8 estimate (7.57) to the Cauchy-Schwarz bound of its error (||h - h^||_2 ||w||_2 = 0.311; the
    // true error is 0.3087, the elementwise bound 0.3136), so a first-round bound 1.3% short of it drops token 0.
    // Ten tokens (the rest zero) with the mask last, and two counted: tokens 0-7 go through the scan's vector path,
    // then the scalar one; with token 0 counted (its penalty at lambda 0.5 subtracted from it and from 7.877), the
    // scalar bounds decide.
    const N3 = 10, w3 = new Float32Array(N3 * K2);
    w3.fill(0.01, 0, K2);
    const b3 = new Float32Array(N3);
    for (const [lambda, counted] of [[0, -1], [0.5, 0]]) {
      b3[1] = 7.877 - (counted === 0 ? 0.5 : 0);
      const c3: Case = { N: N3, K: K2, w: w3, bias: b3, h: ha, takes: [1], lambdas: [lambda], maskIndex: N3 - 1,
        counts: () => { const t = new TokenCounts(N3); if (counted >= 0) t.add(counted); return [t]; } };
      assertSame(c3, 11, `aligned quantisation errors, exact rival, lambda ${lambda}`);
      assert.deepEqual(both(c3, 11).plain[0], [0]);
    }
  }
  // The same for the weights' grid: token 0's weights sit just below half-steps, h is exact on its grid.
  {
    const K2 = 64;
    const w2 = new Float32Array(3 * K2);
    w2.fill(0.1049, 0, K2);
    w2[0] = 1.27; // weight scale 0.01; true logit 1.27 + 63 * 0.1049 = 7.8787, the int8 estimate 7.57
    w2[K2] = 7.85;
    const c: Case = { N: 3, K: K2, w: w2, bias: new Float32Array(3), h: new Float32Array(K2).fill(1), takes: [1],
      lambdas: [0], maskIndex: 2, counts: () => [new TokenCounts(3)] };
    assertSame(c, 8, 'aligned weight quantisation errors');
    assert.deepEqual(both(c, 8).plain[0], [0]);
  }
  // Thousands of equal rows: past the candidate cap the full row is ranked instead (same answer).
  const flat = new Float32Array(3000 * K).fill(0.01);
  const cFlat: Case = { N: 3000, K, w: flat, bias: new Float32Array(3000), h: h.slice(0, 2 * K), takes: [2], lambdas: [0.5],
    maskIndex: 0, counts: randomCounts(1, 3000, 5) };
  assertSame(cFlat, 2, 'all equal, 3000 tokens');
  const cMid: Case = { ...cFlat, N: 1500, w: flat.subarray(0, 1500 * K), bias: new Float32Array(1500), counts: randomCounts(1, 1500, 5) };
  assertSame(cMid, 3, 'all equal, 1500 tokens (under the cap)');
  // So many first-round candidates that the second round is skipped for the full row (more than 16384).
  const NB = 20000, KB = 16;
  const cHuge: Case = { N: NB, K: KB, w: new Float32Array(NB * KB).fill(0.01), bias: new Float32Array(NB),
    h: h.slice(0, 2 * KB), takes: [2], lambdas: [0.5], maskIndex: 5, counts: randomCounts(1, NB, 5) };
  assertSame(cHuge, 4, 'all equal, 20000 tokens');
});

test('screened selection: the [MASK] token, dominant penalties, NaN rows, non-finite weights', { skip: skipScreen }, () => {
  const rng = new Rng(33);
  const N = 600, K = 48;
  const w = fill(rng, new Float32Array(N * K), 0.05);
  const bias = fill(rng, new Float32Array(N), 0.1);
  const h = fill(rng, new Float32Array(8 * K), 1);
  // Every logit far below -1000 except none: the mask's -1000 wins (the plain path picks it too).
  const low = new Float32Array(N).fill(-5000);
  assertSame({ N, K, w, bias: low, h: h.slice(0, K), takes: [1], lambdas: [0], maskIndex: 17, counts: () => [new TokenCounts(N)] }, 4, 'mask wins');
  // Heavy counts on the likeliest tokens: the penalty decides.
  const heavy = (r: Rng): TokenCounts[] => [0, 1].map(() => {
    const t = new TokenCounts(N);
    for (let j = 0; j < 400; j++) t.add(r.int(40));
    return t;
  });
  assertSame({ N, K, w, bias, h, takes: [4, 4], lambdas: [0.01, 0.3], maskIndex: N - 1, counts: heavy }, 5, 'penalties');
  // A NaN in one row: every logit of that slot is NaN, so the [MASK] token's -1000 wins; without a mask token the
  // rule fails on that slot (and the other sequence is unaffected).
  const hn = h.slice();
  hn[2 * K + 7] = NaN;
  const nanCase: Case = { N, K, w, bias, h: hn, takes: [4, 4], lambdas: [0.5, 0], maskIndex: N - 1,
    counts: () => [new TokenCounts(N), new TokenCounts(N)] };
  assertSame(nanCase, 6, 'NaN row with a mask token');
  const r = both({ ...nanCase, maskIndex: -1 }, 6);
  assert.ok(r.plain[0] instanceof Error && r.screened[0] instanceof Error);
  assert.deepEqual(r.screened[1], r.plain[1]);
  // Non-finite weights cannot be bounded: prepare says so.
  const bad = w.slice();
  bad[123] = Infinity;
  assert.equal(screen!.prepare(bad, N, K, new Int8Array(screen!.bytes(N, K)), new Float32Array(SCREEN_META * N)), false);
});

test('screened selection: the second round bounds its own error; later slots of a penalised block see past the first slot', { skip: skipScreen }, () => {
  // Second round (more than a handful of first-round candidates): h sits 0.49 of a second-part step above its grid in
  // every element, so token 0's second-round estimate is low by its whole error term, and token 1 (exact on the grid)
  // sits between that estimate and token 0's true logit. Tokens 2..9 are near ties that keep the first round wide.
  const K = 64, N = 12;
  const h = new Float32Array(K).fill(10 + 100.49 / 256);
  h[0] = 127; // activation scale 1
  const w = new Float32Array(N * K);
  w.fill(0.01, 0, K);
  const true0 = 0.01 * (127 + 63 * h[1]), est0 = 0.01 * (127 + 63 * (10 + 100 / 256));
  const mid = (true0 + est0) / 2;
  for (let v = 1; v < 10; v++) w[v * K] = Math.fround((mid - 0.001 * (v - 1)) / 127);
  const c: Case = { N, K, w, bias: new Float32Array(N), h, takes: [1], lambdas: [0], maskIndex: N - 1,
    counts: () => [new TokenCounts(N)] };
  assertSame(c, 9, 'aligned second-part errors');
  assert.deepEqual(both(c, 9).plain[0], [0], 'token 0 has the largest logit');

  // A penalised block of three slots on the same row: A > B > C > the rest, lambda 0.5. Slot 0 takes A, slot 1 B (A is
  // penalised), slot 2 C: tokens that are not candidates for the first slot's counts.
  const N2 = 3000, K2 = 64;
  const rng = new Rng(34);
  const w2 = fill(rng, new Float32Array(N2 * K2), 0.01);
  const h2 = new Float32Array(3 * K2);
  for (let s = 0; s < 3; s++) h2[s * K2] = 1;
  for (const [v, l] of [[700, 1.0], [1500, 0.9], [2200, 0.8]] as const) w2[v * K2] = l;
  const pen: Case = { N: N2, K: K2, w: w2, bias: new Float32Array(N2), h: h2, takes: [3], lambdas: [0.5], maskIndex: 0,
    counts: () => [new TokenCounts(N2)] };
  assertSame(pen, 10, 'penalised block');
  assert.deepEqual(both(pen, 10).plain[0], [700, 1500, 2200]);
});
