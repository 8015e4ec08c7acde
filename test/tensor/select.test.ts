import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { tsBackend } from '../../src/tensor/ts-backend.ts';

process.env.KFORCE_BACKEND = 'ts';
delete process.env.KFORCE_UNCHECKED;
const { getBackend } = await import('../../src/tensor/select.ts');

test('getBackend() returns the chosen backend wrapped with argument checks', () => {
  const b = getBackend();
  assert.equal(b.name, 'ts');
  assert.notEqual(b, tsBackend);
  assert.throws(() => b.linear(new Float32Array(30), new Float32Array(100), new Float32Array(640), null, 3, 64, 10),
    { message: 'linear: x has 100 elements, expected M*K = 3*64 = 192' });
  assert.equal(getBackend(), b); // chosen once per process
});

test('KFORCE_UNCHECKED=1 returns the raw backend', () => {
  const code = `const { getBackend } = await import('./src/tensor/select.ts');
const { tsBackend } = await import('./src/tensor/ts-backend.ts');
process.stdout.write(String(getBackend() === tsBackend));`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    env: { ...process.env, KFORCE_BACKEND: 'ts', KFORCE_UNCHECKED: '1' }, encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'true');
});
