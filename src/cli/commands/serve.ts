import type { Command } from 'commander';
import fs from 'node:fs';
import path from 'node:path';
import { initModel, type Model } from '../../model/factory.ts';
import type { ModelConfig } from '../../model/types.ts';
import { loadModel } from '../../io/model-file.ts';
import { recommendedPenalty } from '../../decode/sampling.ts';
import { Tokenizer } from '../../train/tokenizer.ts';
import { createServer } from '../../serve/server.ts';
import { intOption, numOption } from '../../train/cli-util.ts';
import { preferNativeSettingsForDecoding } from '../../tensor/native.ts';
import { addRandomModelOptions, randomModelConfig } from '../options.ts';
import type { RandomModelFlags } from '../options.ts';

interface ServeFlags extends RandomModelFlags {
  model?: string;
  random?: string;
  seed: string;
  tokenizer?: string;
  k?: string;
  penalty?: string;
  name?: string;
  host: string;
  port: string;
  maxBatch: string;
  maxQueue: string;
  maxTokens?: string;
  defaultMaxTokens: string;
  maxPromptTokens?: string;
  maxContext?: string;
  kvReserveMb: string;
  eos?: string | boolean;
}

async function buildModel(o: ServeFlags): Promise<{ model: Model; source: string }> {
  if (o.model && o.random) throw new Error('give either --model <file> or --random <ar|pflm>, not both');
  if (o.model) return { model: await loadModel(o.model), source: o.model };
  if (!o.random) throw new Error('nothing to serve: give --model <file> or --random <ar|pflm>');
  if (o.random !== 'ar' && o.random !== 'pflm') throw new Error(`--random must be 'ar' or 'pflm', got '${o.random}'`);
  const config = randomModelConfig(o, o.random === 'pflm');
  return { model: initModel(config, o.random, intOption('--seed', o.seed, 0)), source: `random ${o.random} (seed ${o.seed})` };
}

async function buildTokenizer(o: ServeFlags, config: ModelConfig): Promise<Tokenizer | null> {
  let spec = o.tokenizer ?? null;
  if (!spec && o.model) {
    const beside = path.join(path.dirname(o.model), 'tokenizer.json');
    if (fs.existsSync(beside)) spec = beside;
  }
  if (!spec) return null;
  const tok = await Tokenizer.fromSpec(spec);
  if (tok.vocabSize !== config.vocabSize) {
    throw new Error(`tokenizer ${spec} has ${tok.vocabSize} ids but the model's vocabulary is ${config.vocabSize}`);
  }
  if (tok.maskId !== config.maskIndex) {
    throw new Error(`tokenizer ${spec} has [MASK] = ${tok.maskId} but the model's mask index is ${config.maskIndex}`);
  }
  return tok;
}

export function registerServe(program: Command): void {
  const cmd = program
    .command('serve')
    .description('serve an AR model or a PFLM over HTTP: OpenAI-style /v1/completions with continuous batching (docs/SERVING.md)')
    .option('--model <file>', 'model file (.safetensors or .ckpt); AR or PFLM is read from the file')
    .option('--random <kind>', "serve random weights of kind 'ar' or 'pflm' (benchmarks, tests)");
  addRandomModelOptions(cmd, 'random model')
    .option('--seed <n>', 'random model: init seed', '0')
    .option('--tokenizer <spec>', "tokenizer.json path or 'gpt2' (default: tokenizer.json beside --model; none = token-id prompts only)")
    .option('--k <n>', 'PFLM: tokens per step, 1..maxK (default maxK)')
    .option('--penalty <lambda>', 'default frequency penalty (default: PFLM the recommended value for k, AR 0)')
    .option('--name <id>', 'model id in /v1/models and requests (default: the file name, or random-<kind>)')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port (0 picks a free one)', '8000')
    .option('--max-batch <n>', 'most sequences per step', '64')
    .option('--max-queue <n>', 'most requests waiting for a slot; beyond that 429', '64')
    .option('--max-tokens <n>', 'largest max_tokens a request may ask for (default: the context limit - 1)')
    .option('--default-max-tokens <n>', 'max_tokens when a request omits it', '16')
    .option('--max-prompt-tokens <n>', 'longest prompt in tokens (default: the context limit - 1)')
    .option('--max-context <n>', 'most tokens of one sequence, prompt plus completion; bounds the KV cache (default: the model context length, else 1024)')
    .option('--kv-reserve-mb <n>', 'KV cache reserved at start-up for --max-batch sequences of --max-context tokens, at most this many MB (0: none; it grows on demand beyond)', '1024')
    .option('--eos <ids>', 'comma-separated token ids that end a completion (default: the tokenizer end-of-text id)')
    .option('--no-eos', 'never stop before max_tokens (fixed-length generation, as in benchmarks)')
    .action(async (o: ServeFlags) => {
      const t0 = performance.now();
      preferNativeSettingsForDecoding();
      const { model, source } = await buildModel(o);
      const cfg = model.config;
      const tokenizer = await buildTokenizer(o, cfg);
      const k = model.kind === 'pflm' ? intOption('--k', o.k ?? String(cfg.maxK), 1, cfg.maxK) : 1;
      if (model.kind === 'ar' && o.k !== undefined && o.k !== '1') throw new Error(`--k ${o.k} needs a PFLM; this model is AR`);
      const penalty = o.penalty === undefined ? (model.kind === 'pflm' ? recommendedPenalty(k) : 0) : numOption('--penalty', o.penalty, 0, 2);
      let eos: number[] = [];
      if (typeof o.eos === 'string') eos = o.eos.split(',').map((s) => intOption('--eos', s, 0, cfg.vocabSize - 1));
      else if (o.eos !== false && tokenizer) eos = [tokenizer.eosId];
      const maxBatch = intOption('--max-batch', o.maxBatch, 1);
      const maxContext = o.maxContext === undefined ? (cfg.maxSeqLen > 1 ? cfg.maxSeqLen : 1024) : intOption('--max-context', o.maxContext, 2);
      const name = o.name ?? (o.model ? path.basename(o.model).replace(/\.[^.]+$/, '') : `random-${model.kind}`);
      const server = createServer({
        decoder: model.decoder(),
        modelName: name,
        tokenizer,
        k,
        penalty,
        maxBatch,
        maxQueue: intOption('--max-queue', o.maxQueue, 0),
        maxTokens: o.maxTokens === undefined ? maxContext - 1 : intOption('--max-tokens', o.maxTokens, 1),
        defaultMaxTokens: intOption('--default-max-tokens', o.defaultMaxTokens, 1),
        maxPromptTokens: o.maxPromptTokens === undefined ? maxContext - 1 : intOption('--max-prompt-tokens', o.maxPromptTokens, 1),
        maxContext,
        eos,
        kvReserveBytes: numOption('--kv-reserve-mb', o.kvReserveMb, 0, 1e9) * 2 ** 20,
      });
      const url = await server.listen(o.host, intOption('--port', o.port, 0, 65535));
      console.error(`kforce serve: ${name} (${model.kind}${model.kind === 'pflm' ? `, k = ${k}, penalty ${penalty}` : ''}) from ${source}, ` +
        `${tokenizer ? 'text and token-id prompts' : 'token-id prompts only (no tokenizer)'}, KV cache for ${server.kvReserved.sequences} of ` +
        `${maxBatch} sequences reserved (${(server.kvReserved.bytes / 2 ** 20).toFixed(0)} MB), ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      // One machine-readable line on stdout: the benchmark waits for it to learn the port.
      console.log(JSON.stringify({ listening: url, model: name, kind: model.kind, k, config: cfg }));

      let stopping = false;
      const stop = (signal: string): void => {
        if (stopping) {
          console.error(`kforce serve: ${signal} again, exiting without draining`);
          process.exit(1);
        }
        stopping = true;
        const { running, queued } = server.scheduler;
        console.error(`kforce serve: ${signal}, draining ${running} running and ${queued} queued requests`);
        server.shutdown().then(() => process.exit(0), (err: unknown) => {
          console.error(`kforce serve: shutdown failed: ${err instanceof Error ? err.message : String(err)}`);
          process.exit(1);
        });
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
    });
}
