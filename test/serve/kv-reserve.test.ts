// The server's KV reservation at start-up: whole sequences of maxContext tokens (plus a PFLM step's k noise rows), up to
// maxBatch or the byte budget, so that a burst of requests does not stall on the pool's growth.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KvDecoder, kvPoolBytes } from '../../src/model/decoder.ts';
import { createServer, type ServerOptions } from '../../src/serve/server.ts';
import { metric, post, tinyConfig, tinyModel } from './helpers.ts';

function serverWith(kind: 'ar' | 'pflm', opts: Partial<ServerOptions>): { decoder: KvDecoder; server: ReturnType<typeof createServer> } {
  const decoder = tinyModel(kind).decoder() as KvDecoder;
  const server = createServer({
    decoder, modelName: 'tiny', tokenizer: null, penalty: 0, maxBatch: 3, maxQueue: 3, maxTokens: 30, defaultMaxTokens: 8,
    maxPromptTokens: 9, maxContext: 40, eos: [], k: 4, ...opts,
  });
  return { decoder, server };
}

test('kvPoolBytes: whole 32-row pages of K and V for every layer, float32', () => {
  const cfg = tinyConfig(97, 4); // 2 blocks, D = 32
  assert.equal(kvPoolBytes(cfg, 1, 1), 32 * 2 * 32 * 2 * 4);
  assert.equal(kvPoolBytes(cfg, 3, 44), 3 * 64 * 2 * 32 * 2 * 4);
  assert.equal(kvPoolBytes(cfg, 0, 44), 0);
});

test('the server reserves maxBatch sequences of maxContext (+ k for a PFLM) tokens by default', async () => {
  for (const kind of ['ar', 'pflm'] as const) {
    const { decoder, server } = serverWith(kind, {});
    // PFLM: 40 + 4 rows -> 2 pages of 32 per sequence; AR: 40 rows -> 2 pages
    assert.deepEqual(server.kvReserved, { sequences: 3, bytes: 3 * 64 * 2 * 32 * 2 * 4 });
    assert.equal(decoder.stats().pages, 6);
    assert.equal(decoder.stats().grows, 1);
    // a full batch of the longest requests runs in the reserved pool: no growth while serving
    const url = await server.listen('127.0.0.1', 0);
    const bodies = await Promise.all([0, 1, 2].map((i) => post(url, { prompt: [1, 2, 3, 4, 5, 6, 7, 8, 9 - i], max_tokens: 30, seed: i })));
    for (const b of bodies) assert.equal(b.status, 200);
    assert.equal(decoder.stats().grows, 1);
    // and /metrics reports the pool
    assert.equal(await metric(url, 'kforce_kv_pages'), 6);
    assert.equal(await metric(url, 'kforce_kv_pages_used'), 0);
    assert.equal(await metric(url, 'kforce_kv_grows_total'), 1);
    assert.equal(await metric(url, 'kforce_kv_compactions_total'), decoder.stats().compactions);
    await server.shutdown();
  }
});

test('the reservation stops at the byte budget, and 0 reserves nothing', async () => {
  const one = kvPoolBytes(tinyConfig(97, 4), 1, 44);
  const { decoder, server } = serverWith('pflm', { kvReserveBytes: 2.5 * one });
  assert.deepEqual(server.kvReserved, { sequences: 2, bytes: 2 * one });
  assert.equal(decoder.stats().pages, 4);
  const none = serverWith('pflm', { kvReserveBytes: 0 });
  assert.deepEqual(none.server.kvReserved, { sequences: 0, bytes: 0 });
  assert.equal(none.decoder.stats().pages, 0);
  assert.throws(() => serverWith('ar', { kvReserveBytes: -1 }), /kvReserveBytes/);
  assert.throws(() => serverWith('ar', { kvReserveBytes: NaN }), /kvReserveBytes/);
});
