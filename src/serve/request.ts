// Validation of POST /v1/completions bodies. The body is untrusted JSON: every field is type-checked here and any
// problem becomes a 400 naming the field, so nothing malformed reaches the scheduler. Only one prompt per request
// (batching is the server's job, not the client's).
import { ApiError, badField } from './errors.ts';

/** A completion request after validation, before the prompt is tokenised. */
export interface CompletionParams {
  model: string | null;
  /** Text (needs a tokenizer) or token ids (checked against the vocabulary by `resolvePrompt`). */
  prompt: string | number[];
  maxTokens: number;
  temperature: number;
  topP: number;
  /** null: the server picks a fresh seed and reports it. */
  seed: number | null;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
  /** null: the server's default (the PFLM's lambda, 0 for AR). */
  frequencyPenalty: number | null;
}

export interface RequestLimits {
  /** Largest accepted max_tokens. */
  maxTokens: number;
  /** Default max_tokens when the field is absent (OpenAI's default is 16). */
  defaultMaxTokens: number;
  maxPromptTokens: number;
  vocabSize: number;
  /** The [MASK] id: a valid embedding row but never a real token, so prompts may not contain it. */
  maskIndex: number;
}

const MAX_STOP_SEQUENCES = 4;
const MAX_STOP_CHARS = 256;

// Fields a client may send. OpenAI fields whose features this server lacks are accepted only at their neutral value,
// so a standard client that sends e.g. `n: 1` or `logprobs: null` still works while a request that asks for the
// missing feature is refused rather than silently ignored.
const KNOWN_FIELDS = new Set([
  'model', 'prompt', 'max_tokens', 'temperature', 'top_p', 'seed', 'stop', 'stream', 'stream_options', 'n',
  'best_of', 'user', 'frequency_penalty', 'presence_penalty', 'logprobs', 'echo', 'suffix',
]);

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return `a ${typeof v}`;
}

function optNumber(body: Record<string, unknown>, name: string, min: number, max: number, fallback: number): number {
  const v = body[name];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw badField(name, `must be a number, got ${typeName(v)}`);
  if (v < min || v > max) throw badField(name, `must be between ${min} and ${max}, got ${v}`);
  return v;
}

function optInteger(body: Record<string, unknown>, name: string, min: number, max: number): number | null {
  const v = body[name];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw badField(name, `must be an integer, got ${typeName(v)}${typeof v === 'number' ? ` ${v}` : ''}`);
  if (v < min || v > max) throw badField(name, `must be between ${min} and ${max}, got ${v}`);
  return v;
}

function optBoolean(body: Record<string, unknown>, name: string): boolean {
  const v = body[name];
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw badField(name, `must be a boolean, got ${typeName(v)}`);
  return v;
}

/** Fields kept for client compatibility: any value other than the neutral one names a feature this server lacks. */
function neutralOnly(body: Record<string, unknown>, name: string, ok: (v: unknown) => boolean, feature: string): void {
  const v = body[name];
  if (v === undefined || v === null) return;
  if (!ok(v)) throw badField(name, `${feature} is not supported (got ${JSON.stringify(v)})`);
}

function parsePrompt(v: unknown): string | number[] {
  if (v === undefined || v === null) throw badField('prompt', 'is required');
  if (typeof v === 'string') {
    if (v.length === 0) throw badField('prompt', 'is empty');
    return v;
  }
  if (!Array.isArray(v)) throw badField('prompt', `must be a string or an array of token ids, got ${typeName(v)}`);
  if (v.length === 0) throw badField('prompt', 'is empty');
  if (v.length === 1 && (typeof v[0] === 'string' || Array.isArray(v[0]))) return parsePrompt(v[0]);
  if (typeof v[0] === 'string' || Array.isArray(v[0])) {
    throw badField('prompt', `holds ${v.length} prompts; send one request per prompt`);
  }
  for (let i = 0; i < v.length; i++) {
    const t = v[i];
    if (typeof t !== 'number' || !Number.isInteger(t)) throw badField(`prompt[${i}]`, `token ids must be integers, got ${typeName(t)}${typeof t === 'number' ? ` ${t}` : ''}`);
  }
  return v as number[];
}

function parseStop(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list)) throw badField('stop', `must be a string or an array of strings, got ${typeName(v)}`);
  if (list.length > MAX_STOP_SEQUENCES) throw badField('stop', `at most ${MAX_STOP_SEQUENCES} sequences, got ${list.length}`);
  return list.map((s, i) => {
    if (typeof s !== 'string') throw badField(`stop[${i}]`, `must be a string, got ${typeName(s)}`);
    if (s.length === 0) throw badField(`stop[${i}]`, 'is empty');
    if (s.length > MAX_STOP_CHARS) throw badField(`stop[${i}]`, `longer than ${MAX_STOP_CHARS} characters`);
    return s;
  });
}

/** Checks the JSON body of a completion request. Throws ApiError(400) naming the first bad field. */
export function parseCompletionRequest(body: unknown, limits: RequestLimits): CompletionParams {
  if (!isPlainObject(body)) throw new ApiError(400, `request body must be a JSON object, got ${body === undefined ? 'no body' : typeName(body)}`);
  for (const key of Object.keys(body)) {
    if (!KNOWN_FIELDS.has(key)) throw badField(key, 'unknown field');
  }
  const model = body.model;
  if (model !== undefined && model !== null && typeof model !== 'string') throw badField('model', `must be a string, got ${typeName(model)}`);
  if (body.user !== undefined && body.user !== null && typeof body.user !== 'string') throw badField('user', `must be a string, got ${typeName(body.user)}`);
  neutralOnly(body, 'n', (v) => v === 1, 'more than one choice per request');
  neutralOnly(body, 'best_of', (v) => v === 1, 'best_of');
  neutralOnly(body, 'echo', (v) => v === false, 'echo');
  neutralOnly(body, 'logprobs', () => false, 'logprobs');
  neutralOnly(body, 'suffix', (v) => v === '', 'suffix');
  neutralOnly(body, 'presence_penalty', (v) => v === 0, 'presence_penalty (use frequency_penalty)');

  const streamOptions = body.stream_options;
  let includeUsage = false;
  if (streamOptions !== undefined && streamOptions !== null) {
    if (!isPlainObject(streamOptions)) throw badField('stream_options', `must be an object, got ${typeName(streamOptions)}`);
    for (const key of Object.keys(streamOptions)) {
      if (key !== 'include_usage') throw badField(`stream_options.${key}`, 'unknown field');
    }
    const iu = streamOptions.include_usage;
    if (iu !== undefined && iu !== null && typeof iu !== 'boolean') throw badField('stream_options.include_usage', `must be a boolean, got ${typeName(iu)}`);
    includeUsage = iu === true;
  }
  const stream = optBoolean(body, 'stream');
  if (includeUsage && !stream) throw badField('stream_options', 'is only allowed when stream is true');

  const maxTokens = optInteger(body, 'max_tokens', 1, limits.maxTokens) ?? Math.min(limits.defaultMaxTokens, limits.maxTokens);
  const seed = optInteger(body, 'seed', 0, Number.MAX_SAFE_INTEGER);
  const fp = body.frequency_penalty;
  const frequencyPenalty = fp === undefined || fp === null ? null : optNumber(body, 'frequency_penalty', 0, 2, 0);
  return {
    model: typeof model === 'string' ? model : null,
    prompt: parsePrompt(body.prompt),
    maxTokens,
    temperature: optNumber(body, 'temperature', 0, 2, 1),
    topP: optNumber(body, 'top_p', Number.MIN_VALUE, 1, 1),
    seed,
    stop: parseStop(body.stop),
    stream,
    includeUsage,
    frequencyPenalty,
  };
}

/** Turns the prompt into token ids and checks them against the vocabulary and the length limit. */
export function resolvePrompt(prompt: string | number[], limits: RequestLimits, encode: ((text: string) => number[]) | null): number[] {
  let ids: number[];
  if (typeof prompt === 'string') {
    if (!encode) {
      throw badField('prompt', 'text prompts need a tokenizer and this server has none (start it with --tokenizer or put tokenizer.json next to the model); send token ids instead');
    }
    ids = encode(prompt);
    if (ids.length === 0) throw badField('prompt', 'tokenizes to zero tokens');
  } else {
    ids = prompt;
    for (let i = 0; i < ids.length; i++) {
      const t = ids[i];
      if (t < 0 || t >= limits.vocabSize) throw badField(`prompt[${i}]`, `token id ${t} is out of range [0, ${limits.vocabSize})`);
      if (t === limits.maskIndex) throw badField(`prompt[${i}]`, `token id ${t} is the [MASK] token, which is not a text token`);
    }
  }
  if (ids.length > limits.maxPromptTokens) {
    throw badField('prompt', `${ids.length} tokens exceed the limit of ${limits.maxPromptTokens}`);
  }
  return ids;
}
