// The HTTP front of the scheduler: an OpenAI-compatible completions endpoint (JSON or server-sent events), the model
// list, a health check and Prometheus metrics. AR and PFLM models share one API; only the token selection differs
// (src/serve/scheduler.ts). Handlers never compute: they validate, submit and await, so a request's cost lands in
// the scheduler's steps and HTTP stays responsive between them.
import { randomBytes, randomInt } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { kvPoolBytes } from '../model/decoder.ts';
import type { BatchDecoder } from '../model/types.ts';
import { ApiError, badField } from './errors.ts';
import { ServeMetrics } from './metrics.ts';
import { parseCompletionRequest, resolvePrompt, type CompletionParams, type RequestLimits } from './request.ts';
import { Scheduler, type JobHandle, type JobResult } from './scheduler.ts';
import { TextStream } from './text-stream.ts';

/** What the server needs from a tokenizer. */
export interface TextTokenizer {
  encode(text: string): number[];
  decode(ids: number[]): string;
}

export interface ServerOptions {
  decoder: BatchDecoder;
  /** The id reported by /v1/models and accepted in a request's `model` field. */
  modelName: string;
  /** null: token-id prompts only. */
  tokenizer: TextTokenizer | null;
  /** PFLM: tokens per step (default maxK). */
  k?: number;
  /** Default frequency penalty (a request's frequency_penalty overrides it). */
  penalty: number;
  maxBatch: number;
  maxQueue: number;
  /** Largest max_tokens a request may ask for. */
  maxTokens: number;
  /** max_tokens when a request gives none. */
  defaultMaxTokens: number;
  maxPromptTokens: number;
  /** Most tokens of one sequence, prompt plus completion: bounds the KV cache (2 x blocks x D floats per token). */
  maxContext: number;
  /** Token ids that end a completion (finish_reason 'stop'). */
  eos: number[];
  /** Largest request body in bytes (default 1 MiB). */
  bodyLimit?: number;
  /** KV cache reserved at start-up, at most this many bytes (default 1 GiB; 0: none): room for maxBatch sequences of
   * maxContext tokens, or as many as fit. A pool that grows on demand instead stalls the steps that grow it (a copy
   * of the pool and fresh pages from the OS: 3.6 s in the first batch-64 generation of the official architecture,
   * docs/RESULTS.md session 11); it still grows beyond the reservation when needed. */
  kvReserveBytes?: number;
}

export interface KforceServer {
  app: FastifyInstance;
  scheduler: Scheduler;
  metrics: ServeMetrics;
  /** Starts listening; resolves to the base URL (port 0 picks a free port). */
  listen(host: string, port: number): Promise<string>;
  /** What was reserved at start-up (ServerOptions.kvReserveBytes): whole sequences of maxContext tokens. */
  kvReserved: { sequences: number; bytes: number };
  /** Stops taking requests, lets running and queued ones finish, then closes the listener. */
  shutdown(): Promise<void>;
}

type Choice = { text: string; index: 0; logprobs: null; finish_reason: string | null; token_ids: number[] };

const COMPLETIONS = '/v1/completions';

function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  const e = err as { statusCode?: number; code?: string; message?: string };
  const status = typeof e.statusCode === 'number' ? e.statusCode : 500;
  if (status >= 400 && status < 500) {
    // Fastify's own parse errors: malformed JSON, empty JSON body, body too large, wrong content type.
    const param = status === 415 ? 'content-type' : 'body';
    return new ApiError(status, `${param}: ${e.message ?? 'invalid request'}`, { param });
  }
  return new ApiError(500, `internal error: ${e.message ?? String(err)}`);
}

/** Sizes the decoder's KV pool at start-up for as many whole sequences (maxContext tokens plus a PFLM step's k noise
 * rows) as the budget allows, up to maxBatch. */
function reserveKv(decoder: BatchDecoder, opts: ServerOptions, k: number): { sequences: number; bytes: number } {
  const budget = opts.kvReserveBytes ?? 2 ** 30;
  if (!(Number.isFinite(budget) && budget >= 0)) throw new Error(`serve: kvReserveBytes must be a number >= 0, got ${String(budget)}`);
  const rows = opts.maxContext + (decoder.kind === 'pflm' ? k : 0);
  const perSequence = kvPoolBytes(decoder.config, 1, rows);
  const sequences = decoder.preallocate ? Math.min(opts.maxBatch, Math.floor(budget / perSequence)) : 0;
  if (sequences > 0) decoder.preallocate!(sequences, rows);
  return { sequences, bytes: kvPoolBytes(decoder.config, sequences, rows) };
}

export function createServer(opts: ServerOptions): KforceServer {
  const { decoder, tokenizer } = opts;
  const cfg = decoder.config;
  const pflm = decoder.kind === 'pflm';
  const k = pflm ? (opts.k ?? cfg.maxK) : 1;
  const metrics = new ServeMetrics();
  const scheduler = new Scheduler(decoder, { maxBatch: opts.maxBatch, maxQueue: opts.maxQueue, k, eos: opts.eos, metrics });
  const kvReserved = reserveKv(decoder, opts, k);
  if (decoder.stats) metrics.kvSource = () => decoder.stats!();
  const limits: RequestLimits = {
    maxTokens: opts.maxTokens,
    defaultMaxTokens: opts.defaultMaxTokens,
    maxPromptTokens: opts.maxPromptTokens,
    vocabSize: cfg.vocabSize,
    maskIndex: cfg.maskIndex,
  };
  const created = Math.floor(Date.now() / 1000);
  const app = Fastify({ logger: false, bodyLimit: opts.bodyLimit ?? 1 << 20 });

  app.setErrorHandler((err, req, reply) => {
    const api = toApiError(err);
    if (api.retryAfter !== null) void reply.header('retry-after', String(api.retryAfter));
    void reply.code(api.status).send(api.toBody());
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send(new ApiError(404, `no route ${req.method} ${req.url}`).toBody());
  });
  app.addHook('onResponse', async (req, reply) => {
    if (req.routeOptions.url === COMPLETIONS) metrics.response(reply.statusCode);
  });

  app.get('/health', async (_req, reply) => {
    const body = {
      status: scheduler.isDraining ? 'draining' : 'ok',
      model: opts.modelName,
      kind: decoder.kind,
      k,
      running: scheduler.running,
      queued: scheduler.queued,
    };
    return reply.code(scheduler.isDraining ? 503 : 200).send(body);
  });

  app.get('/v1/models', async () => ({
    object: 'list',
    data: [{
      id: opts.modelName,
      object: 'model',
      created,
      owned_by: 'kforce',
      kind: decoder.kind,
      tokens_per_step: k,
      frequency_penalty: opts.penalty,
      vocab_size: cfg.vocabSize,
      max_tokens: opts.maxTokens,
      max_prompt_tokens: opts.maxPromptTokens,
      text_prompts: tokenizer !== null,
    }],
  }));

  app.get('/metrics', async (_req, reply) => {
    return reply.header('content-type', 'text/plain; version=0.0.4; charset=utf-8').send(metrics.render());
  });

  /** Model-kind rules on top of the generic validation. */
  function checkForModel(p: CompletionParams): void {
    if (p.model !== null && p.model !== opts.modelName) {
      throw new ApiError(404, `model: '${p.model}' is not served here; this server serves '${opts.modelName}'`, { param: 'model' });
    }
    if (pflm) {
      if (p.temperature === 0) throw badField('temperature', 'a PFLM has no greedy mode; it needs the temperature it imitates, > 0 (it was trained at 1)');
      if (p.topP !== 1) throw badField('top_p', 'a PFLM selects tokens by argmax over learned noise slots, so top_p must be 1');
    }
    if (p.stop.length > 0 && !tokenizer) throw badField('stop', 'stop sequences need a tokenizer and this server has none');
  }

  app.post(COMPLETIONS, async (req: FastifyRequest, reply: FastifyReply) => {
    const p = parseCompletionRequest(req.body, limits);
    checkForModel(p);
    const prompt = resolvePrompt(p.prompt, limits, tokenizer ? (t) => tokenizer.encode(t) : null);
    if (prompt.length + p.maxTokens > opts.maxContext) {
      throw badField('max_tokens', `the prompt (${prompt.length} tokens) plus max_tokens (${p.maxTokens}) exceed the context limit of ${opts.maxContext} tokens`);
    }
    const seed = p.seed ?? randomInt(0, 2 ** 47);
    const text = tokenizer ? new TextStream(tokenizer, p.stop) : null;
    const id = `cmpl-${randomBytes(12).toString('hex')}`;
    const head = { id, object: 'text_completion', created: Math.floor(Date.now() / 1000), model: opts.modelName, seed };
    const usage = (r: JobResult) => ({ prompt_tokens: r.promptTokens, completion_tokens: r.tokens.length, total_tokens: r.promptTokens + r.tokens.length });
    const res = reply.raw;
    let handle: JobHandle;
    // Frees the slot of a client that went away before its answer was complete.
    const watchDisconnect = (): void => {
      res.on('close', () => {
        if (!res.writableEnded) handle.cancel();
      });
    };
    const job = {
      prompt,
      maxTokens: p.maxTokens,
      seed,
      temperature: p.temperature,
      topP: p.topP,
      penalty: p.frequencyPenalty ?? opts.penalty,
    };

    if (!p.stream) {
      handle = scheduler.submit({ ...job, onTokens: text ? (t) => (text.push(t), text.stopped) : undefined });
      watchDisconnect();
      const r = await handle.done;
      if (r.finishReason === 'error') throw new ApiError(500, `generation failed: ${r.error?.message ?? 'unknown error'}`);
      if (r.finishReason === 'cancelled') return reply.code(499).send();
      const choice: Choice = { text: text ? text.finalText() : '', index: 0, logprobs: null, finish_reason: r.finishReason, token_ids: r.tokens };
      return reply.send({ ...head, choices: [choice], usage: usage(r) });
    }

    const send = (data: unknown): void => {
      if (!res.writableEnded && !res.destroyed) res.write(`data: ${JSON.stringify(data)}\n\n`);
    };
    const chunk = (delta: string, tokenIds: number[], finish: string | null): void => {
      const choice: Choice = { text: delta, index: 0, logprobs: null, finish_reason: finish, token_ids: tokenIds };
      send({ ...head, choices: [choice], usage: null });
    };
    handle = scheduler.submit({
      ...job,
      onTokens: (tokens) => {
        const delta = text ? text.push(tokens) : '';
        chunk(delta, tokens, null);
        return text?.stopped ?? false;
      },
    });
    // From here the response is ours: fastify's reply is bypassed for the event stream.
    reply.hijack();
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.flushHeaders();
    watchDisconnect();
    const r = await handle.done;
    if (r.finishReason === 'cancelled') {
      metrics.response(499);
      res.end();
      return;
    }
    metrics.response(200);
    if (r.finishReason === 'error') {
      send(new ApiError(500, `generation failed: ${r.error?.message ?? 'unknown error'}`).toBody());
    } else {
      chunk(text ? text.flush() : '', [], r.finishReason);
      if (p.includeUsage) send({ ...head, choices: [], usage: usage(r) });
    }
    if (!res.writableEnded && !res.destroyed) res.end('data: [DONE]\n\n');
  });

  return {
    app,
    scheduler,
    metrics,
    kvReserved,
    async listen(host: string, port: number): Promise<string> {
      await app.listen({ host, port });
      const addr = app.server.address();
      if (addr === null || typeof addr === 'string') throw new Error(`serve: unexpected listen address ${String(addr)}`);
      const h = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
      return `http://${h}:${addr.port}`;
    },
    async shutdown(): Promise<void> {
      await scheduler.drain();
      await app.close();
    },
  };
}
