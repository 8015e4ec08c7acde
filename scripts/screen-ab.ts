// The screened output layer against the full fp32 one inside real decoding: official-shape random PFLM (k=4), the two
// alternating round by round in one process (KFORCE_SCREEN is read per step), ms per step and whether the tokens agree.
// Usage: npx tsx scripts/screen-ab.ts [batches, default 4,16,64] [new tokens, default 122] [rounds, default 4]
import { generate } from '../src/decode/generate.ts';
import { DECODE_REF } from '../src/eval/bench-engine.ts';
import { randomModels } from '../src/eval/random-model.ts';

const batches = (process.argv[2] ?? '4,16,64').split(',').map(Number);
const tokens = Number(process.argv[3] ?? 122);
const rounds = Number(process.argv[4] ?? 4);
if (!batches.every((b) => Number.isInteger(b) && b >= 1) || !(Number.isInteger(tokens) && tokens >= 1) ||
  !(Number.isInteger(rounds) && rounds >= 1)) {
  throw new Error(`screen-ab: usage: [batches like 4,16,64] [new tokens >= 1] [rounds >= 1], got ${process.argv.slice(2).join(' ')}`);
}
const pflm = randomModels({ ...DECODE_REF, maxK: 4 }, 1).pflm.decoder();
const prior = process.env.KFORCE_SCREEN;
for (const B of batches) {
  const prompts = Array.from({ length: B }, (_, i) => [1, 2, 3, 4, 5, 6].map((x) => (x * 7919 + i * 13) % (DECODE_REF.vocabSize - 1)));
  pflm.preallocate(B, 6 + tokens + 4);
  const ms: Record<'on' | 'off', number[]> = { on: [], off: [] };
  const out: Record<'on' | 'off', string> = { on: '', off: '' };
  for (let r = 0; r < rounds; r++) {
    for (const mode of (r % 2 ? ['off', 'on'] : ['on', 'off']) as ('on' | 'off')[]) {
      if (mode === 'off') process.env.KFORCE_SCREEN = '0';
      else delete process.env.KFORCE_SCREEN;
      generate(pflm, prompts, { seed: r, eos: [], k: 4, maxNewTokens: 8 }); // warm-up
      const t0 = performance.now();
      const res = generate(pflm, prompts, { seed: 7, eos: [], k: 4, maxNewTokens: tokens });
      ms[mode].push((performance.now() - t0) / res.steps);
      out[mode] = JSON.stringify(res.tokens);
    }
  }
  console.log(`batch ${B}: ms per step, screen on ${ms.on.map((x) => x.toFixed(1)).join(' ')} | off ` +
    `${ms.off.map((x) => x.toFixed(1)).join(' ')} | same tokens: ${out.on === out.off}`);
}
if (prior === undefined) delete process.env.KFORCE_SCREEN;
else process.env.KFORCE_SCREEN = prior;
