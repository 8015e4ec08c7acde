// The kernels must build for CPUs without AVX-512 (the portable fallback): compile every kernel source for x86-64-v2
// (AVX2 at most) and without BLAS, so a stray AVX-512-only name outside its #ifdef fails here, not on a user's machine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';

const cc = spawnSync('gcc', ['--version'], { encoding: 'utf8' });
const skip = cc.status !== 0 || process.arch !== 'x64' ? 'needs gcc on x86-64' : false;

test('native kernels compile without AVX-512 and without BLAS', { skip }, () => {
  const sources = readdirSync('native').filter((f) => f.endsWith('.c') && f !== 'addon.c').map((f) => `native/${f}`);
  assert.ok(sources.includes('native/attention.c') && sources.includes('native/linear.c'));
  const r = spawnSync('gcc', ['-std=gnu11', '-march=x86-64-v2', '-DKF_NO_BLAS', '-Wall', '-Werror', '-fsyntax-only',
    ...sources], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
});
