import type { Command } from 'commander';
import { trainAr } from '../../train/train-ar.ts';
import { PRESETS } from '../../train/presets.ts';
import { addModelOptions, addOptimOptions, modelOverrides, optimOverrides, runDirOf, stopAt } from '../../train/cli-options.ts';
import { intOption } from '../../train/cli-util.ts';

export function registerTrain(program: Command): void {
  const cmd = program
    .command('train')
    .description('train the AR teacher on token data (resumes automatically from the run\'s last checkpoint; Ctrl-C saves)')
    .requiredOption('--data <dir>', 'token data folder from `kforce data build`')
    .option('--run <name>', 'run name (runs/<name>) or folder', 'teacher')
    .option('--preset <name>', `model and optimiser recipe: ${Object.keys(PRESETS).join(', ')} (default: small)`)
    .option('--seed <n>', 'seed of the initialisation and the data order')
    .option('--fresh', 'discard an existing run of that name and start over')
    .option('--quiet', 'no progress output')
    .option('--json', 'print the result as one JSON line');
  addModelOptions(cmd);
  addOptimOptions(cmd);
  cmd.action(async (o: Record<string, string | boolean | undefined>, c: Command) => {
    const r = await trainAr({
      // A preset typed on the command line must match a resumed run's; the default does not count as typed.
      runDir: runDirOf(String(o.run)), data: String(o.data),
      preset: c.getOptionValueSource('preset') === 'cli' ? String(o.preset) : undefined,
      model: modelOverrides(o), optim: optimOverrides(o),
      seed: o.seed === undefined ? undefined : intOption('--seed', o.seed),
      fresh: Boolean(o.fresh), quiet: Boolean(o.quiet), stopAtStep: stopAt(o),
    });
    if (o.json) console.log(JSON.stringify(r));
    else if (!r.completed) console.error(`stopped at step ${r.steps}; run the same command again to resume`);
    else {
      console.error(`done: ${r.steps} steps, ${(r.params / 1e6).toFixed(2)} M parameters, ${r.wallSeconds.toFixed(0)} s; ` +
        `val loss ${r.valLossStart?.toFixed(4)} -> ${r.valLossEnd?.toFixed(4)} (ppl ${r.valPplEnd?.toFixed(2)}); model ${r.model}`);
    }
    if (!r.completed) process.exitCode = 130;
  });
}
