// End-to-end through the CLI: the smoke pipeline at a smaller size, and bad input.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kforce-pipe-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

const CLI = ['--import', 'tsx', 'src/cli/main.ts'];

test('scripts/smoke-pipeline.sh (small settings): corpus -> tokenizer -> teacher -> k=1 -> k=2 -> k=4, JSON last line', () => {
  const r = spawnSync('bash', ['scripts/smoke-pipeline.sh'], {
    encoding: 'utf8',
    env: {
      ...process.env, SMOKE_DIR: path.join(root, 'smoke'), SMOKE_BYTES: '250000', SMOKE_VOCAB: '300',
      SMOKE_TEACHER_ARGS: '--hidden 32 --heads 2 --steps 60 --batch 8 --seq-len 32 --eval-seqs 8',
      SMOKE_DISTILL_ARGS: '--steps 12 --batch 4 --seq-len 12 --eval-seqs 6',
    },
  });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  const out = JSON.parse(lines[lines.length - 1]);
  assert.equal(out.vocabSize, 300);
  assert.ok(out.teacherValLossEnd < out.teacherValLossStart - 0.5, `${out.teacherValLossStart} -> ${out.teacherValLossEnd}`);
  assert.deepEqual(out.stages.map((s: { k: number }) => s.k), [1, 2, 4]);
  assert.deepEqual(out.stages.map((s: { heldOutSlotAcc: number[] }) => s.heldOutSlotAcc.length), [1, 2, 4]);
  for (const s of out.stages) for (const a of s.heldOutSlotAcc) assert.ok(a >= 0 && a <= 1);
  // Students start from their teachers: slot 1 of k=2 and slots 1-2 of k=4 reproduce the teacher's argmax exactly.
  assert.equal(out.stages[1].heldOutSlotAccStart[0], 1);
  assert.deepEqual(out.stages[2].heldOutSlotAccStart.slice(0, 2), [1, 1]);
  for (const f of ['pflm-k1', 'pflm-k2', 'pflm-k4']) assert.ok(fs.existsSync(path.join(root, 'smoke', f, 'model.safetensors')));
});

test('CLI bad input: clear one-line errors, non-zero exit', () => {
  const run = (...a: string[]): { status: number | null; stderr: string } =>
    spawnSync(process.execPath, [...CLI, ...a], { encoding: 'utf8' });
  let r = run('train', '--data', path.join(root, 'missing'));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /kforce: error: no token data in/);
  r = run('distill', '--data', path.join(root, 'smoke', 'data'), '--teacher', path.join(root, 'smoke', 'teacher'),
    '--schedule', '1,3');
  assert.match(r.stderr, /double its teacher's, got 1 -> 3/);
  r = run('data', 'build', path.join(root, 'nothing-here'), '--out', path.join(root, 'o'));
  assert.match(r.stderr, /no such file or folder/);
});
