import type { Command } from 'commander';
import { generate } from '../../decode/generate.ts';
import { checkTokenizerFits, loadModelFile, parseIds, tokenizerFor } from '../../decode/load.ts';
import { TextStream } from '../../serve/text-stream.ts';
import { intOption, numOption } from '../../train/cli-util.ts';
import { preferNativeSettingsForDecoding } from '../../tensor/native.ts';

interface GenerateCliOptions {
  model: string;
  tokenizer?: string;
  ids?: string[];
  maxNewTokens: string;
  k?: string;
  tau: string;
  penalty?: string;
  temperature: string;
  topP: string;
  seed: string;
  batch?: string;
  eos: boolean;
  stream?: boolean;
  json?: boolean;
}

export function registerGenerate(program: Command): void {
  program
    .command('generate')
    .description('continue prompts with an AR model or a PFLM (k tokens per forward pass); same seed, same output')
    .argument('[prompts...]', 'text prompts (BOS is prepended); use --ids for models without a tokenizer')
    .requiredOption('--model <file>', 'model file (.safetensors, or an official .ckpt)')
    .option('--tokenizer <file>', 'tokenizer.json (default: tokenizer.json beside the model, else token ids only)')
    .option('--ids <list>', 'a prompt as comma-separated token ids (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--max-new-tokens <n>', 'token budget per prompt', '64')
    .option('--k <n>', 'PFLM: tokens per forward pass, 1..maxK (default maxK)')
    .option('--tau <t>', 'PFLM: the sampling temperature it imitates', '1')
    .option('--penalty <lambda>', 'frequency penalty (default: 0 for AR; k=2 0.25, k=3 0.45, k=4 0.5 for a PFLM)')
    .option('--temperature <t>', 'AR: sampling temperature (0 = greedy)', '1')
    .option('--top-p <p>', 'AR: nucleus mass', '1')
    .option('--seed <n>', 'noise seed', '0')
    .option('--batch <n>', 'most sequences per forward pass (default: all prompts)')
    .option('--no-eos', 'do not stop at the end-of-text token')
    .option('--stream', 'print tokens as they are generated (one prompt)')
    .option('--json', 'print one JSON object')
    .action(async (texts: string[], o: GenerateCliOptions) => {
      preferNativeSettingsForDecoding();
      const model = await loadModelFile(o.model);
      const tok = tokenizerFor(o.model, o.tokenizer);
      if (tok) checkTokenizerFits(tok, model, 'generate');
      const V = model.config.vocabSize;
      const prompts: number[][] = [];
      const labels: string[] = [];
      if (texts.length > 0 && !tok) {
        throw new Error(`generate: text prompts need a tokenizer (none given and no tokenizer.json beside ${o.model}); pass --ids`);
      }
      for (const t of texts) {
        prompts.push([tok!.bosId, ...tok!.encode(t)]);
        labels.push(t);
      }
      for (const s of o.ids ?? []) {
        const ids = parseIds(s, V);
        prompts.push(ids);
        labels.push(tok ? tok.decode(ids, { skipSpecial: true }) : ids.join(' '));
      }
      if (prompts.length === 0) {
        // No prompt: start from BOS alone (or token 0 for id-only models), like unconditional sampling.
        prompts.push([tok ? tok.bosId : 0]);
        labels.push(tok ? '' : '0');
      }
      const maxNewTokens = intOption('--max-new-tokens', o.maxNewTokens, 1);
      const dec = model.decoder();
      const stream = o.stream && !o.json;
      if (o.stream && prompts.length > 1) throw new Error('generate: --stream prints one prompt; give a single prompt');
      const text = tok ? new TextStream(tok, []) : null;
      if (stream) process.stdout.write(labels[0]);
      const t0 = process.hrtime.bigint();
      const res = generate(dec, prompts, {
        maxNewTokens,
        seed: intOption('--seed', o.seed, 0),
        k: o.k === undefined ? undefined : intOption('--k', o.k, 1),
        tau: numOption('--tau', o.tau, Number.MIN_VALUE),
        penalty: o.penalty === undefined ? undefined : numOption('--penalty', o.penalty, 0),
        temperature: numOption('--temperature', o.temperature, 0),
        topP: numOption('--top-p', o.topP, Number.MIN_VALUE, 1),
        maxBatch: o.batch === undefined ? undefined : intOption('--batch', o.batch, 1),
        eos: o.eos && tok ? [tok.eosId] : [],
        onTokens: stream ? (e) => {
          process.stdout.write(text ? text.push(e.tokens) : e.tokens.map((t) => ` ${t}`).join(''));
        } : undefined,
      });
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const total = res.tokens.reduce((s, t) => s + t.length, 0);
      const decode = (ids: number[]) => (tok ? tok.decode(ids, { skipSpecial: true }) : ids.join(' '));
      if (o.json) {
        console.log(JSON.stringify({
          kind: model.kind, k: model.kind === 'pflm' ? (o.k ? Number(o.k) : model.config.maxK) : 1,
          results: prompts.map((p, i) => ({ prompt: labels[i], promptIds: p, tokens: res.tokens[i], text: tok ? decode(res.tokens[i]) : null, finish: res.finish[i] })),
          steps: res.steps, seconds, tokensPerSecond: total / seconds,
        }));
        return;
      }
      if (stream) {
        if (text) process.stdout.write(text.flush());
        process.stdout.write('\n');
      } else {
        prompts.forEach((_, i) => {
          if (prompts.length > 1) console.log(`--- [${i}] ${labels[i]}`);
          console.log(tok ? `${labels[i]}${decode(res.tokens[i])}` : `${labels[i]} | ${decode(res.tokens[i])}`);
        });
      }
      console.error(`${model.kind === 'pflm' ? 'PFLM' : 'AR'}: ${total} tokens in ${res.steps} forward passes, ${seconds.toFixed(2)} s (${(total / seconds).toFixed(1)} tokens/s)`);
    });
}
