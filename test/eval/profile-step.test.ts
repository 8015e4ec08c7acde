// scripts/profile-step.ts (npm run profile) on a small model: one line per model with the step time and its native
// calls; bad flags are refused by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { loadNativeBackend } from '../../src/tensor/native.ts';

const skip = loadNativeBackend().backend ? false : 'the profile times the native addon\'s calls';

test('npm run profile: AR and PFLM steps split into their native calls', { skip }, () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/profile-step.ts', '--small', '1', '--tokens', '8',
    '--rounds', '1', '--k', '2'], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 2, r.stdout);
  assert.match(lines[0], /^AR batch 1: [\d.]+ ms\/step, [\d.]+ tok\/s \| .*linear 64x1000 m1=/);
  // a k=2 step feeds 2 context + 2 noise rows; the output layer takes the 2 noise rows
  assert.match(lines[1], /^PFLM k=2 batch 1: [\d.]+ ms\/step, [\d.]+ tok\/s \| .*linear 64x1000 m2=/);
  const bad = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/profile-step.ts', '--bogus', '1'], { encoding: 'utf8' });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /unknown flag or bad value: --bogus 1/);
});
