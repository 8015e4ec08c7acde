import type { Command } from 'commander';
import { Tokenizer } from '../../train/tokenizer.ts';
import { trainTokenizerOn, DEFAULT_VAL_FRACTION } from '../../train/dataset.ts';
import { intOption, numOption } from '../../train/cli-util.ts';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export function registerTokenizer(program: Command): void {
  const tok = program.command('tokenizer').description('train, export and try tokenizers (tokenizer.json files)');
  tok
    .command('train')
    .description('train a byte-level BPE on the training split of corpus sources; [MASK] is the last id')
    .argument('[sources...]', "corpus sources (built-in names, 'mix', files, folders)", ['brown'])
    .requiredOption('--out <file>', 'tokenizer.json to write')
    .option('--vocab-size <n>', 'ids in all: 256 bytes + merges + <|endoftext|> + [MASK]', '4096')
    .option('--val-fraction <f>', 'documents held out (not used for training the tokenizer)', String(DEFAULT_VAL_FRACTION))
    .option('--max-bytes <n>', 'train on at most this many bytes')
    .action(async (sources: string[], o: Record<string, string | undefined>) => {
      const t0 = Date.now();
      const { tokenizer, bytes } = await trainTokenizerOn(sources, intOption('--vocab-size', o.vocabSize, 258), {
        valFraction: numOption('--val-fraction', o.valFraction),
        maxBytes: o.maxBytes === undefined ? undefined : intOption('--max-bytes', o.maxBytes, 1),
      });
      tokenizer.save(String(o.out));
      console.error(`wrote ${o.out}: ${tokenizer.vocabSize} ids, trained on ${(bytes / 1e6).toFixed(2)} MB in ` +
        `${((Date.now() - t0) / 1000).toFixed(1)} s`);
    });
  tok
    .command('gpt2')
    .description("write GPT-2's tokenizer (gpt-tokenizer's ranks) as a tokenizer.json with [MASK] = 50257")
    .requiredOption('--out <file>', 'tokenizer.json to write')
    .action(async (o: { out: string }) => {
      (await Tokenizer.gpt2()).save(o.out);
      console.error(`wrote ${o.out}`);
    });
  tok
    .command('info')
    .description('print the vocabulary size and the BOS/EOS/[MASK] ids of a tokenizer')
    .argument('<spec>', 'tokenizer.json path or gpt2')
    .action(async (spec: string) => console.log(JSON.stringify((await Tokenizer.fromSpec(spec)).info())));
  tok
    .command('encode')
    .description('print the token ids of a text (the argument, or stdin)')
    .requiredOption('--tokenizer <spec>', 'tokenizer.json path or gpt2')
    .argument('[text]', 'text; read from stdin when absent')
    .action(async (text: string | undefined, o: { tokenizer: string }) => {
      const t = await Tokenizer.fromSpec(o.tokenizer);
      console.log(t.encode(text ?? (await readStdin())).join(' '));
    });
  tok
    .command('decode')
    .description('print the text of token ids')
    .requiredOption('--tokenizer <spec>', 'tokenizer.json path or gpt2')
    .argument('<ids...>', 'token ids')
    .action(async (ids: string[], o: { tokenizer: string }) => {
      const t = await Tokenizer.fromSpec(o.tokenizer);
      process.stdout.write(t.decode(ids.map((s) => intOption('token id', s, 0))) + '\n');
    });
}
