// The generate and bench quality commands end to end on a fixture of saved random-weight models.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeFixture, type Fixture } from './fixture.ts';
import { runDemo } from '../../src/eval/demo.ts';

let fx: Fixture;
before(async () => {
  fx = await makeFixture();
});

function kforce(args: string[]) {
  const r = spawnSync(process.execPath, ['bin/kforce.js', ...args], { encoding: 'utf8', timeout: 60_000 });
  return { ...r, last: () => JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown> };
}

test('kforce generate: text prompts, same seed same output, PFLM k tokens per pass, ids without tokenizer', () => {
  const pflm = join(fx.models, 'pflm-k2.safetensors');
  const a = kforce(['generate', '--model', pflm, 'the cat', 'a dog ran', '--max-new-tokens', '7', '--seed', '3', '--no-eos', '--json']);
  assert.equal(a.status, 0, a.stderr);
  const b = kforce(['generate', '--model', pflm, 'the cat', 'a dog ran', '--max-new-tokens', '7', '--seed', '3', '--no-eos', '--json']);
  const ja = a.last() as { results: Array<{ tokens: number[]; text: string }>; steps: number; k: number };
  assert.deepEqual(ja, { ...ja, steps: 4, k: 2 });
  assert.deepEqual(ja.results.map((r) => r.tokens), (b.last() as typeof ja).results.map((r) => r.tokens));
  assert.ok(ja.results.every((r) => r.tokens.length === 7 && typeof r.text === 'string'));
  const c = kforce(['generate', '--model', pflm, 'the cat', 'a dog ran', '--max-new-tokens', '7', '--seed', '4', '--no-eos', '--json']);
  assert.notDeepEqual((c.last() as typeof ja).results.map((r) => r.tokens), ja.results.map((r) => r.tokens));
  // Plain text output: the prompt followed by its continuation.
  const t = kforce(['generate', '--model', join(fx.models, 'teacher.safetensors'), 'the cat', '--max-new-tokens', '5']);
  assert.equal(t.status, 0, t.stderr);
  assert.ok(t.stdout.startsWith('the cat'));
  assert.ok(t.stderr.includes('AR: '));
  // Token ids in, token ids out when the tokenizer is bypassed with an explicit id prompt.
  const ids = kforce(['generate', '--model', join(fx.models, 'teacher.safetensors'), '--ids', '1,2,3', '--max-new-tokens', '4', '--no-eos', '--json']);
  assert.deepEqual((ids.last() as { results: Array<{ promptIds: number[] }> }).results[0].promptIds, [1, 2, 3]);
  const bad = kforce(['generate', '--model', join(fx.models, 'teacher.safetensors'), '--k', '2', '--ids', '1']);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /needs a PFLM/);
});

test('kforce bench quality: teacher, PFLM k=1..2 with and without penalty, judge; JSON rows and report files', () => {
  const out = join(fx.root, 'quality');
  const r = kforce(['bench', 'quality', '--models', fx.models, '--data', fx.data, '--prompts', '5', '--new-tokens', '6', '--out', out,
    '--results', join(fx.root, 'RESULTS.md'), '--json']);
  assert.equal(r.status, 0, r.stderr);
  const j = r.last() as { rows: Array<{ label: string; judgePpl: number; teacherPpl: number; slotAgreement: number[] }> };
  assert.deepEqual(j.rows.map((x) => x.label), ['AR teacher', 'PFLM k=1 lambda=0', 'PFLM k=2 lambda=0', 'PFLM k=2 lambda=0.25']);
  for (const x of j.rows) assert.ok(x.judgePpl > 1 && x.teacherPpl > 1);
  assert.equal(j.rows[2].slotAgreement.length, 2);
  assert.ok(readFileSync(join(out, 'quality-ppl.svg'), 'utf8').startsWith('<svg'));
  assert.ok(readFileSync(join(fx.root, 'RESULTS.md'), 'utf8').includes('<!-- kforce:quality:begin -->'));
});

test('demo with a model folder: both models continue every prompt, then the speed table', async () => {
  const out: string[] = [];
  await runDemo({ models: fx.models, prompts: ['the cat', 'a dog'], newTokens: 6, batches: [1, 2], log: () => {}, print: (m) => out.push(m) });
  const text = out.join('\n');
  assert.equal(text.match(/^Prompt: /gm)!.length, 2);
  assert.equal(text.match(/^ {2}AR \(1 token per forward pass, 6 passes\)/gm)!.length, 2);
  assert.equal(text.match(/^ {2}PFLM k=2 \(2 tokens per forward pass, 3 passes\)/gm)!.length, 2);
  assert.ok(/^ {4}2 +PFLM k=2 /m.test(text), text);
});
