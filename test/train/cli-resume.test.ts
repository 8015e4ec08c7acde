// Interrupting the CLI: Ctrl-C, and runs split over several processes, which must continue bit-identically.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { buildDataset } from '../../src/train/dataset.ts';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kforce-resume-'));
const data = path.join(root, 'data');
before(async () => {
  await buildDataset({ sources: ['brown'], out: data, tokenizer: 'bpe:300', maxBytes: 200_000, valFraction: 0.1 });
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

const CLI = ['--import', 'tsx', 'src/cli/main.ts'];

test('Ctrl-C saves a checkpoint and exits; the same command resumes and finishes', async () => {
  const run = path.join(root, 'sigint');
  const args = [...CLI, 'train', '--data', data, '--run', run, '--preset', 'tiny', '--hidden', '32', '--heads', '2',
    '--steps', '5000', '--batch', '4', '--seq-len', '16', '--log-every', '1', '--ckpt-every', '100000', '--eval-seqs', '4'];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const log = path.join(run, 'log.jsonl');
  for (let i = 0; i < 300; i++) {
    await new Promise((r) => setTimeout(r, 100));
    if (fs.existsSync(log) && fs.readFileSync(log, 'utf8').split('\n').filter((l) => l.includes('"train"')).length >= 3) break;
  }
  child.kill('SIGINT');
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 130, err);
  assert.match(err, /saving a checkpoint/);
  const state = JSON.parse(fs.readFileSync(path.join(run, 'ckpt', 'state.json'), 'utf8'));
  assert.ok(state.step >= 3 && state.step < 5000, `stopped at ${state.step}`);
  const r = spawnSync(process.execPath, [...CLI, 'train', '--data', data, '--run', run, '--steps', String(state.step + 3), '--json'],
    { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const res = JSON.parse(r.stdout.trim());
  assert.equal(res.steps, state.step + 3);
  assert.equal(res.completed, true);
});

test('separate processes: a run stopped with --stop-at and resumed equals an uninterrupted one (train and distill)', () => {
  const cli = (...a: string[]): void => {
    const r = spawnSync(process.execPath, [...CLI, ...a, '--quiet'], { encoding: 'utf8' });
    assert.ok(r.status === 0 || r.status === 130, r.stderr);
  };
  const losses = (run: string): number[] => fs.readFileSync(path.join(run, 'log.jsonl'), 'utf8').trim().split('\n')
    .map((l) => JSON.parse(l)).filter((x) => x.event === 'train').map((x) => x.loss);
  const base = ['--preset', 'tiny', '--steps', '30', '--log-every', '1', '--eval-seqs', '4', '--batch', '4', '--seq-len', '16'];
  const t = ['train', '--data', data, ...base, '--hidden', '32', '--heads', '2'];
  cli(...t, '--run', path.join(root, 'xa'), '--stop-at', '13');
  assert.equal(losses(path.join(root, 'xa')).length, 13);
  cli(...t, '--run', path.join(root, 'xa'));
  cli(...t, '--run', path.join(root, 'xb'));
  assert.equal(losses(path.join(root, 'xb')).length, 30);
  assert.deepEqual(losses(path.join(root, 'xa')), losses(path.join(root, 'xb')));
  assert.deepEqual(fs.readFileSync(path.join(root, 'xa', 'model.safetensors')), fs.readFileSync(path.join(root, 'xb', 'model.safetensors')));
  const d = ['distill', '--data', data, '--teacher', path.join(root, 'xb'), ...base];
  cli(...d, '--run', path.join(root, 'da'), '--stop-at', '7');
  cli(...d, '--run', path.join(root, 'da'));
  cli(...d, '--run', path.join(root, 'db'));
  assert.deepEqual(losses(path.join(root, 'da')), losses(path.join(root, 'db')));
  assert.equal(losses(path.join(root, 'db')).length, 30);
});
