import type { Command } from 'commander';
import { distill, distillChain } from '../../train/distill.ts';
import type { DistillResult, TargetKind } from '../../train/distill.ts';
import { PRESETS } from '../../train/presets.ts';
import { addOptimOptions, optimOverrides, runDirOf, stopAt } from '../../train/cli-options.ts';
import { intList, intOption, rangeOption } from '../../train/cli-util.ts';

const TARGETS = ['auto', 'inverse-cdf', 'self-forcing', 'noise-inversion'];

function summary(r: DistillResult): string {
  const h = r.heldOut;
  const f = (xs: number[] | undefined): string => (xs ?? []).map((x) => x.toFixed(3)).join(' / ');
  return `k=${r.k} (${r.targets}): ${r.steps} steps, ${r.wallSeconds.toFixed(0)} s; held-out per-slot accuracy ` +
    `${f(r.heldOutStart?.acc)} -> ${f(h?.acc)}, loss ${f(h?.loss)}; model ${r.model}`;
}

export function registerDistill(program: Command): void {
  const cmd = program
    .command('distill')
    .description('distil a teacher into a k-token PFLM: AR -> k=1 (inverse-CDF targets), PFLM k -> 2k (self-forcing); ' +
      '--schedule 1,2,4 runs the chain. Resumes automatically; Ctrl-C saves')
    .requiredOption('--data <dir>', 'token data folder (the teacher\'s tokenizer)')
    .requiredOption('--teacher <model>', 'teacher model file or finished run folder (AR for k=1 and for --schedule)')
    .option('--k <n>', 'student k (default: 1 from an AR teacher, double the teacher\'s k from a PFLM)')
    .option('--schedule <list>', 'distil a chain, e.g. 1,2,4 (each stage in runs/<run>-k<k>)')
    .option('--run <name>', 'run name (runs/<name>) or folder, \'{k}\' standing for k (default pflm-k{k}); with --schedule, ' +
      'the prefix of the stage runs (default pflm)')
    .option('--targets <kind>', `${TARGETS.join(' | ')} (noise-inversion: the paper's ablation baseline)`, 'auto')
    .option('--ar-teacher <model>', 'AR model for noise-inversion targets when --teacher is a PFLM')
    .option('--tau <lo:hi>', 'tau conditioning: draw each sequence\'s temperature uniformly in [lo, hi]')
    .option('--preset <name>', `recipe: ${Object.keys(PRESETS).join(', ')} (default: small)`)
    .option('--seed <n>', 'seed of the noise, the noise-encoder initialisation and the data order')
    .option('--fresh', 'discard existing runs of that name and start over')
    .option('--quiet', 'no progress output')
    .option('--json', 'print the result(s) as one JSON line');
  addOptimOptions(cmd);
  cmd.action(async (o: Record<string, string | boolean | undefined>, c: Command) => {
    const targets = String(o.targets);
    if (!TARGETS.includes(targets)) throw new Error(`--targets must be one of ${TARGETS.join(', ')}, got '${targets}'`);
    const common = {
      data: String(o.data), targets: targets as 'auto' | TargetKind,
      tau: o.tau === undefined ? null : rangeOption('--tau', String(o.tau)),
      preset: c.getOptionValueSource('preset') === 'cli' ? String(o.preset) : undefined, optim: optimOverrides(o),
      seed: o.seed === undefined ? undefined : intOption('--seed', o.seed),
      fresh: Boolean(o.fresh), quiet: Boolean(o.quiet), stopAtStep: stopAt(o),
    };
    let results: DistillResult[];
    if (o.schedule !== undefined) {
      if (o.k !== undefined) throw new Error('give either --k or --schedule, not both');
      results = await distillChain({
        ...common, runPrefix: runDirOf(String(o.run ?? 'pflm')), teacher: String(o.teacher),
        schedule: intList('--schedule', String(o.schedule)),
      });
    } else {
      const k = o.k === undefined ? undefined : intOption('--k', o.k, 1);
      results = [await distill({
        ...common, runDir: runDirOf(String(o.run ?? 'pflm-k{k}')), teacher: String(o.teacher), k,
        arTeacher: o.arTeacher === undefined ? undefined : String(o.arTeacher),
      })];
    }
    if (o.json) console.log(JSON.stringify(results.length === 1 ? results[0] : results));
    for (const r of results) console.error(r.completed ? summary(r) : `k=${r.k}: stopped at step ${r.steps}; run again to resume`);
    if (results.some((r) => !r.completed)) process.exitCode = 130;
  });
}
