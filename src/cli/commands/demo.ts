import type { Command } from 'commander';
import { runDemo } from '../../eval/demo.ts';
import { intList, intOption } from '../../train/cli-util.ts';

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('continue a few prompts with the AR teacher and the k=4 PFLM side by side, then print the speed table ' +
      '(uses the bundled models/small; without them, trains tiny models first)')
    .option('--models <dir>', 'model folder (default: models/small of the package)')
    .option('--train', 'train tiny models even when bundled ones exist')
    .option('--work-dir <dir>', 'where tiny models are trained', 'runs/demo')
    .option('--prompt <text>', 'a prompt (repeatable; default: four built-in prompts)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--new-tokens <n>', 'tokens per prompt', '40')
    .option('--seed <n>', 'noise seed', '0')
    .option('--batch <list>', 'batch sizes of the speed table', '1,4,16')
    .action(async (o: { models?: string; train?: boolean; workDir: string; prompt?: string[]; newTokens: string; seed: string; batch: string }) => {
      if (process.env.KFORCE_UNCHECKED === undefined) process.env.KFORCE_UNCHECKED = '1';
      await runDemo({
        models: o.models, train: Boolean(o.train), workDir: o.workDir, prompts: o.prompt,
        newTokens: intOption('--new-tokens', o.newTokens, 1), seed: intOption('--seed', o.seed, 0), batches: intList('--batch', o.batch),
      });
    });
}
