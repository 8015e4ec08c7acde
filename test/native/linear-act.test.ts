// linear with a fused GELU epilogue: the same bits as linear followed by gelu, on every path of the native kernel
// (grouped decode path for <= 64 rows, K-chunked groups, many-row tiles with K chunks, 1-row tail tiles).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tsBackend } from '../../src/tensor/ts-backend.ts';
import { withChecks } from '../../src/tensor/checked.ts';
import { nat, rand32, Rng, sameBits, skip } from './helpers.ts';

test('native linear(..., "gelu_tanh") equals linear then gelu bit for bit', { skip }, () => {
  const rng = new Rng(21);
  for (const [K, N] of [[96, 37], [3072, 50]] as const) {
    const w = rand32(rng, N * K, 0.05), b = rand32(rng, N);
    for (const M of [1, 3, 4, 8, 9, 17, 64, 65, 100]) {
      const x = rand32(rng, M * K);
      for (const bias of [b, null]) {
        const sep = new Float32Array(M * N), fused = new Float32Array(M * N);
        nat().linear(sep, x, w, bias, M, K, N);
        nat().gelu(sep, sep, M * N, 'tanh');
        nat().linear(fused, x, w, bias, M, K, N, 'gelu_tanh');
        assert.ok(sameBits(fused, sep), `K=${K} N=${N} M=${M} bias=${bias !== null}: fused GELU differs`);
      }
    }
  }
});

test('linear activation: the TypeScript backend applies the same GELU, bad names are refused', () => {
  const rng = new Rng(3);
  const M = 3, K = 20, N = 7;
  const x = rand32(rng, M * K), w = rand32(rng, N * K), b = rand32(rng, N);
  const sep = new Float32Array(M * N), fused = new Float32Array(M * N);
  tsBackend.linear(sep, x, w, b, M, K, N);
  tsBackend.gelu(sep, sep, M * N, 'tanh');
  tsBackend.linear(fused, x, w, b, M, K, N, 'gelu_tanh');
  assert.ok(sameBits(fused, sep));
  const checked = withChecks(tsBackend);
  // @ts-expect-error: not an activation
  assert.throws(() => checked.linear(fused, x, w, b, M, K, N, 'relu'), /activation must be 'gelu_tanh'/);
});
