// Where a decode step's time goes: AR and PFLM generation on the official architecture with random weights, every
// call into the native addon timed (linear by shape, attention, the screen, token selection, ...), printed as
// milliseconds per step (then #calls in the run: `linear 768x3072 m4=0.235#30` is the last block's MLP of the noise
// rows, once a step) next to the step's wall time. Rounds alternate AR and PFLM after a warm-up each.
//
//   npm run profile -- [--batch 1] [--tokens 122] [--k 4] [--rounds 3] [--temperature 1] [--small 1] [--top 16]
//                      [--packed 1]
//
// (--small 1: a 2-block D=64 model instead, for tests; --packed 0: without the packed weights of 9-64-row linears,
// which the decoding commands turn on: `linearP` below.)
// Needs the native addon. Timers add a few microseconds per call; compare runs of this script with each other, not
// with `kforce bench speed`.
import { generate } from '../src/decode/generate.ts';
import { DECODE_REF } from '../src/eval/bench-engine.ts';
import { randomModels } from '../src/eval/random-model.ts';
import { nativeAddonExports, packedLinears } from '../src/tensor/native.ts';

function flags(argv: string[]): { batch: number; tokens: number; k: number; rounds: number; temperature: number; small: number; top: number; packed: number } {
  const o = { batch: 1, tokens: 122, k: 4, rounds: 3, temperature: 1, small: 0, top: 16, packed: 1 };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '');
    const v = Number(argv[i + 1]);
    if (!(name in o) || !Number.isFinite(v)) throw new Error(`profile-step: unknown flag or bad value: ${argv[i]} ${argv[i + 1] ?? ''}`);
    (o as Record<string, number>)[name] = v;
  }
  return o;
}

const o = flags(process.argv.slice(2));
const addon = nativeAddonExports();
if (!addon) throw new Error('profile-step: the native addon is unavailable (npm run build:native)');
packedLinears(o.packed !== 0);
const timers = new Map<string, number>();
const calls = new Map<string, number>();
let on = false;
for (const [name, f] of Object.entries(addon)) {
  if (typeof f !== 'function' || name === 'info') continue;
  const fn = f as (...a: unknown[]) => unknown;
  addon[name] = (...a: unknown[]) => {
    if (!on) return fn(...a);
    const t = performance.now();
    const r = fn(...a);
    const key = name === 'linear' || name === 'linearVpacked'
      ? `${name === 'linear' ? 'linear' : 'linearP'} ${String(a[5])}x${String(a[6])} m${String(a[4])}` : name;
    timers.set(key, (timers.get(key) ?? 0) + performance.now() - t);
    calls.set(key, (calls.get(key) ?? 0) + 1);
    return r;
  };
}

const config = o.small ? { vocabSize: 1000, hiddenSize: 64, nHeads: 4, nBlocks: 2, maskIndex: 999, maxK: 0, maxSeqLen: 256 } : DECODE_REF;
const models = randomModels({ ...config, maxK: Math.max(4, o.k) }, 1);
const ar = models.ar.decoder(), pflm = models.pflm.decoder();
const prompts = Array.from({ length: o.batch }, (_, i) => [1, 2, 3, 4, 5, 6].map((x) => (x * 7919 + i * 13) % (config.vocabSize - 1)));
// The KV pool sized (and backed by memory) up front, as `kforce bench speed` does in its warm-up.
ar.preallocate(o.batch, 6 + o.tokens + 1);
pflm.preallocate(o.batch, 6 + o.tokens + o.k);
for (let r = 0; r < o.rounds; r++) {
  for (const k of [0, o.k]) {
    const dec = k ? pflm : ar;
    const opts = { seed: r, eos: [], ...(k ? { k } : { temperature: o.temperature }) };
    generate(dec, prompts, { ...opts, maxNewTokens: 8 });
    timers.clear();
    calls.clear();
    on = true;
    const t = performance.now();
    const res = generate(dec, prompts, { ...opts, maxNewTokens: o.tokens });
    const ms = performance.now() - t;
    on = false;
    const sorted = [...timers.entries()].sort((a, b) => b[1] - a[1]);
    const inNative = sorted.reduce((acc, [, v]) => acc + v, 0);
    const rest = sorted.slice(o.top).reduce((acc, [, v]) => acc + v, 0);
    const parts = sorted.slice(0, o.top).map(([n, v]) => `${n}=${(v / res.steps).toFixed(3)}#${calls.get(n)}`).join(' ');
    // outside=: the step's time in none of the addon's calls (JavaScript: masks, bookkeeping, token handling)
    console.log(`${k ? `PFLM k=${k}` : 'AR'} batch ${o.batch}: ${(ms / res.steps).toFixed(2)} ms/step, ` +
      `${((o.batch * o.tokens) / ms * 1000).toFixed(1)} tok/s | ${parts} other-native=${(rest / res.steps).toFixed(3)} ` +
      `outside=${((ms - inNative) / res.steps).toFixed(3)}`);
  }
}
