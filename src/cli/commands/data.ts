import type { Command } from 'commander';
import path from 'node:path';
import { buildDataset, DEFAULT_VAL_FRACTION } from '../../train/dataset.ts';
import { BUILTIN_SOURCES } from '../../train/corpus.ts';
import { readMeta } from '../../train/shards.ts';
import { intOption, numOption } from '../../train/cli-util.ts';

export function registerData(program: Command): void {
  const data = program.command('data').description('build and inspect tokenised training data');
  data
    .command('build')
    .description(`tokenise a corpus into train/validation token shards. Sources: built-in names (${BUILTIN_SOURCES.join(', ')}), ` +
      "'mix' (every built-in that is installed; absent ones are skipped with a note), text files or folders")
    .argument('[sources...]', 'corpus sources', ['mix'])
    .option('--out <dir>', 'output folder', 'runs/data/mix')
    .option('--tokenizer <spec>', 'bpe:<vocab size> (trained on the training split), gpt2, or a tokenizer.json path', 'bpe:4096')
    .option('--val-fraction <f>', 'share of documents held out for validation (by a hash of the document id)', String(DEFAULT_VAL_FRACTION))
    .option('--max-bytes <n>', 'use at most this many bytes of text (all sources together)')
    .option('--tokenizer-bytes <n>', 'train the BPE on at most this many bytes of the training split')
    .option('--shard-tokens <n>', 'tokens per shard file', String(2 ** 27))
    .option('--force', 'replace an existing output folder')
    .option('--json', 'print the resulting meta.json as one line')
    .action(async (sources: string[], o: Record<string, string | boolean | undefined>) => {
      const meta = await buildDataset({
        sources, out: String(o.out), tokenizer: String(o.tokenizer),
        valFraction: numOption('--val-fraction', o.valFraction),
        maxBytes: o.maxBytes === undefined ? undefined : intOption('--max-bytes', o.maxBytes, 1),
        tokenizerBytes: o.tokenizerBytes === undefined ? undefined : intOption('--tokenizer-bytes', o.tokenizerBytes, 1),
        shardTokens: intOption('--shard-tokens', o.shardTokens, 1),
        force: Boolean(o.force),
        log: (m) => console.error(m),
      });
      if (o.json) console.log(JSON.stringify(meta));
    });
  data
    .command('info')
    .description('print what a data folder holds')
    .argument('<dir>', 'data folder')
    .action((dir: string) => {
      const m = readMeta(dir);
      console.log(`${path.resolve(dir)}: tokenizer ${m.tokenizerKind} (${m.vocabSize} ids, ${m.dtype}), val fraction ${m.valFraction}`);
      for (const s of m.sources) {
        console.log(`  source ${s.name}: ${s.used ? `${s.docs} docs, ${(s.bytes / 1e6).toFixed(2)} MB` : `skipped (${s.note})`}`);
      }
      for (const [k, v] of Object.entries(m.splits)) {
        console.log(`  ${k}: ${v.docs} docs, ${v.tokens} tokens in ${v.shards.length} shard(s), ${(v.bytes / 1e6).toFixed(2)} MB of text`);
      }
    });
}
