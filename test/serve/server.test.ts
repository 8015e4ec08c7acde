// The server over real HTTP on loopback, with tiny random models (AR and PFLM k = 4): response shapes, agreement
// with the library's generate(), determinism, batch invariance, streaming, cancellation, overload, bad bodies,
// EOS and graceful shutdown.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generate } from '../../src/decode/generate.ts';
import { recommendedPenalty } from '../../src/decode/sampling.ts';
import { getJson, metric, post, postStream, startServer, tinyModel, waitIdle, type CompletionBody, type Running } from './helpers.ts';

const PFLM_K = 4;
let ar: Running;
let pf: Running;

before(async () => {
  ar = await startServer(tinyModel('ar'));
  pf = await startServer(tinyModel('pflm'), { k: PFLM_K, penalty: recommendedPenalty(PFLM_K) });
});

after(async () => {
  await ar.server.shutdown();
  await pf.server.shutdown();
});

const both = (): Array<[string, Running]> => [['ar', ar], ['pflm', pf]];

/** What the library generates for one prompt with the server's defaults. */
function reference(r: Running, prompt: number[], maxTokens: number, seed: number): number[] {
  const res = generate(r.model.decoder(), [prompt], { maxNewTokens: maxTokens, seed, k: r.model.kind === 'pflm' ? PFLM_K : undefined });
  return res.tokens[0];
}

describe('endpoints', () => {
  test('GET /v1/models, /health and /metrics', async () => {
    for (const [kind, r] of both()) {
      const models = await getJson<{ object: string; data: Array<{ id: string; object: string; kind: string; tokens_per_step: number }> }>(`${r.url}/v1/models`);
      assert.equal(models.status, 200);
      assert.equal(models.body.object, 'list');
      assert.equal(models.body.data[0].id, 'tiny');
      assert.equal(models.body.data[0].kind, kind);
      assert.equal(models.body.data[0].tokens_per_step, kind === 'pflm' ? PFLM_K : 1);
      const health = await getJson<{ status: string; running: number }>(`${r.url}/health`);
      assert.deepEqual([health.status, health.body.status], [200, 'ok']);
      const m = await fetch(`${r.url}/metrics`);
      assert.match(m.headers.get('content-type') ?? '', /^text\/plain/);
      const text = await m.text();
      for (const name of ['kforce_requests_total', 'kforce_generated_tokens_total', 'kforce_generated_tokens_per_second',
        'kforce_queue_depth', 'kforce_batch_size', 'kforce_step_latency_seconds_bucket', 'kforce_step_latency_seconds_count']) {
        assert.ok(text.includes(`\n${name}`) || text.startsWith(name), `metrics lack ${name}`);
      }
    }
    const nf = await getJson<CompletionBody>(`${ar.url}/v1/nothing`);
    assert.equal(nf.status, 404);
    assert.equal(nf.body.error?.type, 'not_found_error');
  });
});

describe('completions', () => {
  test('OpenAI response shape; tokens equal generate() for the same seed', async () => {
    for (const [kind, r] of both()) {
      const prompt = [3, 1, 4, 1, 5];
      const { status, json } = await post(r.url, { prompt, max_tokens: 11, seed: 21 });
      assert.equal(status, 200, JSON.stringify(json));
      assert.match(json.id, /^cmpl-/);
      assert.equal(json.object, 'text_completion');
      assert.equal(json.model, 'tiny');
      assert.equal(json.seed, 21);
      assert.equal(json.choices.length, 1);
      const c = json.choices[0];
      assert.equal(c.finish_reason, 'length');
      assert.equal(c.text, '', 'no tokenizer: token ids only');
      assert.deepEqual(json.usage, { prompt_tokens: 5, completion_tokens: 11, total_tokens: 16 });
      assert.deepEqual(c.token_ids, reference(r, prompt, 11, 21), `${kind}: server and generate() disagree`);
      assert.ok(c.token_ids.every((t) => t >= 0 && t < 96), 'never the [MASK] id');
    }
  });

  test('same seed, same completion; another seed, another completion', async () => {
    for (const [, r] of both()) {
      const body = { prompt: [7, 8, 9], max_tokens: 16, seed: 5 };
      const a = await post(r.url, body);
      const b = await post(r.url, body);
      const c = await post(r.url, { ...body, seed: 6 });
      assert.deepEqual(a.json.choices[0].token_ids, b.json.choices[0].token_ids);
      assert.notDeepEqual(a.json.choices[0].token_ids, c.json.choices[0].token_ids);
    }
  });

  test('without a seed the server picks one and reports it; replaying it reproduces the completion', async () => {
    const a = await post(ar.url, { prompt: [2, 2], max_tokens: 8 });
    assert.ok(Number.isSafeInteger(a.json.seed));
    const b = await post(ar.url, { prompt: [2, 2], max_tokens: 8, seed: a.json.seed });
    assert.deepEqual(b.json.choices[0].token_ids, a.json.choices[0].token_ids);
  });

  test('AR temperature 0 is greedy and ignores the seed', async () => {
    const a = await post(ar.url, { prompt: [4, 5], max_tokens: 10, temperature: 0, seed: 1 });
    const b = await post(ar.url, { prompt: [4, 5], max_tokens: 10, temperature: 0, seed: 2 });
    assert.equal(a.status, 200);
    assert.deepEqual(a.json.choices[0].token_ids, b.json.choices[0].token_ids);
  });

  test('greedy AR through the screened output layer: the tokens of the full layer, alone and in a batch', async () => {
    const prev = process.env.KFORCE_SCREEN;
    const run = async (screen: string) => {
      process.env.KFORCE_SCREEN = screen;
      const reqs = [
        { prompt: [4, 5], max_tokens: 10, temperature: 0, frequency_penalty: 0.5 },
        { prompt: [7, 1, 3], max_tokens: 7, temperature: 0 },
        { prompt: [9], max_tokens: 9, temperature: 0.8, seed: 4 }, // sampling in the batch: the full layer for all
      ];
      const alone = await post(ar.url, reqs[0]);
      const together = await Promise.all(reqs.map((b) => post(ar.url, b)));
      const all = [alone, ...together];
      for (const r of all) assert.equal(r.status, 200, JSON.stringify(r.json));
      return all.map((r) => r.json.choices[0].token_ids);
    };
    try {
      assert.deepEqual(await run('1'), await run('0'));
    } finally {
      if (prev === undefined) delete process.env.KFORCE_SCREEN;
      else process.env.KFORCE_SCREEN = prev;
    }
  });

  test('requests in one batch get exactly what they get alone', async () => {
    for (const [kind, r] of both()) {
      const reqs = Array.from({ length: 6 }, (_, i) => ({
        prompt: Array.from({ length: 1 + ((i * 5) % 9) }, (_, j) => (i * 13 + j * 7) % 90),
        max_tokens: 9 + 3 * i,
        seed: 100 + i,
      }));
      const alone: number[][] = [];
      for (const q of reqs) alone.push((await post(r.url, q)).json.choices[0].token_ids);
      const beforeCount = await metric(r.url, 'kforce_step_batch_size_count');
      const beforeSingle = await metric(r.url, 'kforce_step_batch_size_bucket{le="1"}');
      const together = await Promise.all(reqs.map((q) => post(r.url, q)));
      together.forEach((t, i) => assert.deepEqual(t.json.choices[0].token_ids, alone[i], `${kind} request ${i}`));
      const multi = (await metric(r.url, 'kforce_step_batch_size_count') - beforeCount)
        - (await metric(r.url, 'kforce_step_batch_size_bucket{le="1"}') - beforeSingle);
      assert.ok(multi > 0, `${kind}: no step ran more than one sequence, so batching was not exercised`);
    }
  });

  test('eos ends a completion with finish_reason stop, the eos token excluded', async () => {
    const prompt = [10, 20, 30];
    const full = reference(ar, prompt, 12, 9);
    const eos = full[4];
    const first = full.indexOf(eos);
    const r = await startServer(ar.model, { eos: [eos] });
    try {
      const { json } = await post(r.url, { prompt, max_tokens: 12, seed: 9 });
      assert.equal(json.choices[0].finish_reason, 'stop');
      assert.deepEqual(json.choices[0].token_ids, full.slice(0, first));
    } finally {
      await r.server.shutdown();
    }
  });
});

describe('streaming', () => {
  test('server-sent events carry the same tokens, then finish_reason, usage and [DONE]', async () => {
    for (const [kind, r] of both()) {
      const body = { prompt: [1, 2, 3], max_tokens: 10, seed: 77 };
      const whole = (await post(r.url, body)).json.choices[0].token_ids;
      const s = await postStream(r.url, { ...body, stream_options: { include_usage: true } });
      assert.equal(s.status, 200);
      assert.match(s.headers.get('content-type') ?? '', /^text\/event-stream/);
      assert.equal(s.events.at(-1), '[DONE]');
      const chunks = s.events.slice(0, -1).map((e) => JSON.parse(e) as CompletionBody);
      const usageChunk = chunks.pop()!;
      assert.deepEqual(usageChunk.choices, []);
      assert.deepEqual(usageChunk.usage, { prompt_tokens: 3, completion_tokens: 10, total_tokens: 13 });
      const last = chunks.pop()!;
      assert.equal(last.choices[0].finish_reason, 'length');
      const tokens = chunks.flatMap((c) => c.choices[0].token_ids);
      assert.deepEqual(tokens, whole, `${kind}: streamed tokens differ from the JSON answer`);
      const per = kind === 'pflm' ? PFLM_K : 1;
      // One event per step: k tokens per PFLM step (the last step only what remains), 1 per AR step.
      assert.deepEqual(chunks.map((c) => c.choices[0].token_ids.length), Array.from({ length: Math.ceil(10 / per) }, (_, i) => Math.min(per, 10 - i * per)));
      assert.ok(chunks.every((c) => c.choices[0].finish_reason === null && c.id === last.id));
    }
  });
});

describe('cancellation and overload', () => {
  test('a client that disconnects frees its slot at once (streaming and plain)', async () => {
    for (const stream of [true, false]) {
      const tokensBefore = await metric(ar.url, 'kforce_generated_tokens_total');
      const cancelledBefore = await metric(ar.url, 'kforce_completions_total{finish_reason="cancelled"}');
      const ctl = new AbortController();
      const body = { prompt: [5, 6], max_tokens: 50_000, seed: 1 };
      const req = stream
        ? postStream(ar.url, body, { signal: ctl.signal, onEvent: () => ctl.abort() })
        : post(ar.url, body, { signal: ctl.signal });
      if (!stream) setTimeout(() => ctl.abort(), 100);
      await assert.rejects(req, /abort/i);
      await waitIdle(ar.url);
      assert.equal(await metric(ar.url, 'kforce_completions_total{finish_reason="cancelled"}'), cancelledBefore + 1);
      const generated = (await metric(ar.url, 'kforce_generated_tokens_total')) - tokensBefore;
      assert.ok(generated < 50_000, `stream=${stream}: ${generated} tokens generated for a client that left`);
    }
  });

  test('beyond batch and queue bounds: 429 with Retry-After; the server recovers', async () => {
    const r = await startServer(ar.model, { maxBatch: 1, maxQueue: 1 });
    try {
      const ctl = new AbortController();
      let firstToken!: () => void;
      const started = new Promise<void>((res) => (firstToken = res));
      const long = { prompt: [1, 2], max_tokens: 50_000, seed: 3 };
      const a = postStream(r.url, long, { signal: ctl.signal, onEvent: () => firstToken() }).catch(() => null);
      await started;
      // The second one waits in the queue: its headers arrive, its tokens do not.
      const b = fetch(`${r.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...long, stream: true }), signal: ctl.signal });
      await b;
      assert.equal((await getJson<{ queued: number }>(`${r.url}/health`)).body.queued, 1);
      const c = await post(r.url, { prompt: [1], max_tokens: 4 });
      assert.equal(c.status, 429);
      assert.equal(c.json.error?.type, 'rate_limit_error');
      const retry = Number(c.headers.get('retry-after'));
      assert.ok(Number.isInteger(retry) && retry >= 1, `Retry-After ${c.headers.get('retry-after')}`);
      ctl.abort();
      await a;
      await waitIdle(r.url);
      const d = await post(r.url, { prompt: [1], max_tokens: 4, seed: 0 });
      assert.equal(d.status, 200);
      assert.equal(await metric(r.url, 'kforce_requests_total{code="429"}'), 1);
    } finally {
      await r.server.shutdown();
    }
  });
});

describe('validation', () => {
  test('bad bodies get a 400 naming the field, and the server keeps serving', async () => {
    const cases: Array<[unknown, string, RegExp]> = [
      [{}, 'prompt', /required/],
      [{ prompt: [] }, 'prompt', /empty/],
      [{ prompt: '' }, 'prompt', /empty/],
      [{ prompt: [1, 2, 97] }, 'prompt[2]', /out of range/],
      [{ prompt: [1, -1] }, 'prompt[1]', /out of range/],
      [{ prompt: [1, 96] }, 'prompt[1]', /\[MASK\]/],
      [{ prompt: [1, 2.5] }, 'prompt[1]', /integers/],
      [{ prompt: [1, '2'] }, 'prompt[1]', /integers/],
      [{ prompt: [[1], [2]] }, 'prompt', /one request per prompt/],
      [{ prompt: Array.from({ length: 65 }, () => 1) }, 'prompt', /65 tokens exceed the limit of 64/],
      [{ prompt: 'hello' }, 'prompt', /tokenizer/],
      [{ prompt: [1], max_tokens: 100_001 }, 'max_tokens', /between 1 and 100000/],
      [{ prompt: Array.from({ length: 20 }, () => 1), max_tokens: 99_995 }, 'max_tokens', /prompt \(20 tokens\) plus max_tokens \(99995\) exceed the context limit of 100010/],
      [{ prompt: [1], max_tokens: 0 }, 'max_tokens', /between/],
      [{ prompt: [1], max_tokens: '5' }, 'max_tokens', /integer/],
      [{ prompt: [1], temperature: 'hot' }, 'temperature', /number/],
      [{ prompt: [1], temperature: 3 }, 'temperature', /between 0 and 2/],
      [{ prompt: [1], top_p: 0 }, 'top_p', /between/],
      [{ prompt: [1], seed: 1.5 }, 'seed', /integer/],
      [{ prompt: [1], seed: -1 }, 'seed', /between/],
      [{ prompt: [1], stream: 'yes' }, 'stream', /boolean/],
      [{ prompt: [1], stop: 5 }, 'stop', /string/],
      [{ prompt: [1], stop: 'x' }, 'stop', /tokenizer/],
      [{ prompt: [1], stream_options: { include_usage: true } }, 'stream_options', /stream is true/],
      [{ prompt: [1], n: 2 }, 'n', /not supported/],
      [{ prompt: [1], logprobs: 3 }, 'logprobs', /not supported/],
      [{ prompt: [1], frequency_penalty: 'high' }, 'frequency_penalty', /number/],
      [{ prompt: [1], model: 7 }, 'model', /string/],
      [{ prompt: [1], bogus: true }, 'bogus', /unknown field/],
      [[1, 2], '', /JSON object/],
      ['text', '', /JSON object/],
      [null, '', /JSON object/],
    ];
    for (const [body, param, msg] of cases) {
      const { status, json } = await post(ar.url, body);
      assert.equal(status, 400, `${JSON.stringify(body)} -> ${status} ${JSON.stringify(json)}`);
      assert.equal(json.error?.type, 'invalid_request_error');
      assert.equal(json.error?.param ?? '', param, JSON.stringify(json));
      assert.match(json.error!.message, msg);
      if (param) assert.ok(json.error!.message.startsWith(`${param}:`), json.error!.message);
    }
    const malformed = await post(ar.url, null, { raw: '{"prompt": [1, 2' });
    assert.equal(malformed.status, 400);
    assert.equal(malformed.json.error?.param, 'body');
    assert.match(malformed.json.error!.message, /JSON/);
    const emptyBody = await post(ar.url, null, { raw: '' });
    assert.equal(emptyBody.status, 400);
    const wrongType = await post(ar.url, null, { raw: 'prompt=1', contentType: 'application/x-www-form-urlencoded' });
    assert.equal(wrongType.status, 415);
    const wrongModel = await post(ar.url, { prompt: [1], model: 'gpt-4' });
    assert.equal(wrongModel.status, 404);
    assert.equal(wrongModel.json.error?.param, 'model');
    // A neutral value of an unsupported OpenAI field is fine.
    const ok = await post(ar.url, { prompt: [1], n: 1, logprobs: null, echo: false, model: 'tiny', user: 'u', max_tokens: 2 });
    assert.equal(ok.status, 200, JSON.stringify(ok.json));
    assert.equal((await getJson<{ status: string }>(`${ar.url}/health`)).body.status, 'ok');
  });

  test('a PFLM refuses temperature 0 and top_p below 1', async () => {
    const t0 = await post(pf.url, { prompt: [1], temperature: 0 });
    assert.equal(t0.status, 400);
    assert.equal(t0.json.error?.param, 'temperature');
    const tp = await post(pf.url, { prompt: [1], top_p: 0.9 });
    assert.equal(tp.status, 400);
    assert.equal(tp.json.error?.param, 'top_p');
  });
});

describe('shutdown', () => {
  test('shutdown drains running requests, refuses new ones with 503, then closes', async () => {
    const r = await startServer(ar.model);
    let firstToken!: () => void;
    const started = new Promise<void>((res) => (firstToken = res));
    const running = postStream(r.url, { prompt: [9], max_tokens: 400, seed: 4 }, { onEvent: () => firstToken() });
    await started;
    const closing = r.server.shutdown();
    const refused = await post(r.url, { prompt: [1], max_tokens: 2 });
    assert.equal(refused.status, 503);
    const health = await getJson<{ status: string }>(`${r.url}/health`);
    assert.deepEqual([health.status, health.body.status], [503, 'draining']);
    const s = await running;
    assert.equal(s.events.at(-1), '[DONE]');
    const tokens = s.events.slice(0, -1).flatMap((e) => (JSON.parse(e) as CompletionBody).choices[0].token_ids);
    assert.equal(tokens.length, 400);
    await closing;
    await assert.rejects(fetch(`${r.url}/health`));
  });
});
