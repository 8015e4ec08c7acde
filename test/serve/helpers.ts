// Shared pieces of the serving tests: tiny random models behind a real server on loopback, and a small HTTP client
// that speaks JSON and server-sent events.
import { initModel, type Model } from '../../src/model/factory.ts';
import type { ModelConfig } from '../../src/model/types.ts';
import { createServer, type KforceServer, type ServerOptions } from '../../src/serve/server.ts';

export function tinyConfig(vocabSize: number, maxK: number): ModelConfig {
  return { nBlocks: 2, hiddenSize: 32, nHeads: 4, vocabSize, maskIndex: vocabSize - 1, maxK, maxSeqLen: 128 };
}

export interface Running {
  server: KforceServer;
  model: Model;
  url: string;
}

export async function startServer(model: Model, opts: Partial<Omit<ServerOptions, 'decoder'>> = {}): Promise<Running> {
  const server = createServer({
    decoder: model.decoder(),
    modelName: 'tiny',
    tokenizer: null,
    penalty: 0,
    maxBatch: 16,
    maxQueue: 16,
    maxTokens: 100_000,
    defaultMaxTokens: 16,
    maxPromptTokens: 64,
    maxContext: 100_010,
    eos: [],
    kvReserveBytes: 0, // the tests' context limit is far above what they use
    ...opts,
  });
  const url = await server.listen('127.0.0.1', 0);
  return { server, model, url };
}

export function tinyModel(kind: 'ar' | 'pflm', vocabSize = 97, seed = 5): Model {
  return initModel(tinyConfig(vocabSize, kind === 'pflm' ? 4 : 0), kind, seed);
}

export interface Choice {
  text: string;
  index: number;
  finish_reason: string | null;
  token_ids: number[];
  logprobs: null;
}

export interface CompletionBody {
  id: string;
  object: string;
  created: number;
  model: string;
  seed: number;
  choices: Choice[];
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | null;
  error?: { message: string; type: string; param: string | null; code: number };
}

export async function post(url: string, body: unknown, init: { raw?: string; contentType?: string; signal?: AbortSignal } = {}):
  Promise<{ status: number; headers: Headers; json: CompletionBody }> {
  const r = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': init.contentType ?? 'application/json' },
    body: init.raw ?? JSON.stringify(body),
    signal: init.signal,
  });
  const text = await r.text();
  return { status: r.status, headers: r.headers, json: (text ? JSON.parse(text) : {}) as CompletionBody };
}

/** Reads a server-sent event stream to its end; `onEvent` sees each `data:` payload as it arrives. */
export async function postStream(url: string, body: unknown, opts: { signal?: AbortSignal; onEvent?: (data: string) => void } = {}):
  Promise<{ status: number; headers: Headers; events: string[] }> {
  const r = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...(body as object), stream: true }),
    signal: opts.signal,
  });
  const events: string[] = [];
  if (!r.body) return { status: r.status, headers: r.headers, events };
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!ev.startsWith('data: ')) throw new Error(`not an SSE data event: ${JSON.stringify(ev)}`);
      events.push(ev.slice(6));
      opts.onEvent?.(ev.slice(6));
    }
  }
  if (buf.length > 0) throw new Error(`stream ended inside an event: ${JSON.stringify(buf)}`);
  return { status: r.status, headers: r.headers, events };
}

export async function getJson<T>(url: string): Promise<{ status: number; body: T }> {
  const r = await fetch(url);
  return { status: r.status, body: (await r.json()) as T };
}

/** Value of one sample line of the Prometheus text (name with labels exactly as rendered). */
export async function metric(url: string, sample: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  if (!line) throw new Error(`metric ${sample} not found`);
  return Number(line.slice(sample.length + 1));
}

/** Polls /health until nothing runs or waits; returns the milliseconds it took. */
export async function waitIdle(url: string, timeoutMs = 5000): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    const h = await getJson<{ running: number; queued: number }>(`${url}/health`);
    if (h.body.running === 0 && h.body.queued === 0) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) throw new Error(`server still busy after ${timeoutMs} ms: ${JSON.stringify(h.body)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
