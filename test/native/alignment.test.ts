// Model buffers start on a cache line (the kernels' 64-byte row loads would otherwise split two lines each; V8 puts
// large typed arrays 16 bytes past one). Checked on real addresses through the addon.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { initModel } from '../../src/index.ts';
import { alignedFloat32, cacheLineOffset } from '../../src/tensor/native.ts';
import { TINY } from '../model/reference.ts';
import { skip } from './helpers.ts';

test('alignedFloat32 returns zeroed arrays on a cache line, for small and large sizes', { skip }, () => {
  for (const n of [1, 17, 1000, 100_000, 3_000_000]) {
    const a = alignedFloat32(n);
    assert.equal(a.length, n);
    assert.equal(cacheLineOffset(a), 0, `n=${n}`);
    assert.ok(a.every((v) => v === 0));
  }
});

test('model parameters, gradients and workspace buffers start on a cache line', { skip }, () => {
  for (const kind of ['ar', 'pflm'] as const) {
    const m = initModel(kind === 'ar' ? { ...TINY, maxK: 0 } : TINY, kind, 1);
    assert.equal(cacheLineOffset(m.params as Float32Array), 0, `${kind} params`);
    assert.equal(cacheLineOffset(m.newGrads() as Float32Array), 0, `${kind} grads`);
    assert.equal(cacheLineOffset(m.ws.get(`probe-${kind}`, 123_457) as Float32Array), 0, `${kind} workspace`);
  }
});

test('a model loaded from a file gets cache-line-aligned parameters', { skip }, async () => {
  const { loadModel } = await import('../../src/io/model-file.ts');
  const m = await loadModel(new URL('../fixtures/tiny-pflm.safetensors', import.meta.url).pathname);
  assert.equal(cacheLineOffset(m.params as Float32Array), 0);
});
