// Command-line options shared by `kforce train` and `kforce distill`: model shape and optimiser overrides of a preset.
import type { Command } from 'commander';
import path from 'node:path';
import type { ModelShape, OptimSettings } from './presets.ts';
import { intOption, numOption } from './cli-util.ts';

export function addOptimOptions(cmd: Command): Command {
  return cmd
    .option('--steps <n>', 'optimizer steps (may be raised when resuming)')
    .option('--batch <n>', 'sequences per step')
    .option('--seq-len <n>', 'tokens per sequence')
    .option('--lr <x>', 'peak learning rate')
    .option('--min-lr <x>', 'final learning rate of the cosine')
    .option('--warmup <n>', 'linear warm-up steps')
    .option('--weight-decay <x>', 'AdamW decoupled weight decay (linear weights only)')
    .option('--beta1 <x>', 'AdamW beta1')
    .option('--beta2 <x>', 'AdamW beta2')
    .option('--clip <x>', 'gradient-norm clip')
    .option('--eval-every <n>', 'steps between validation passes')
    .option('--eval-seqs <n>', 'validation sequences per pass')
    .option('--ckpt-every <n>', 'steps between checkpoints')
    .option('--log-every <n>', 'steps between log records')
    .option('--stop-at <step>', 'save a checkpoint and stop after this step, as on Ctrl-C (to split a run into sessions)');
}

export function addModelOptions(cmd: Command): Command {
  return cmd
    .option('--hidden <n>', 'hidden size D')
    .option('--heads <n>', 'attention heads')
    .option('--blocks <n>', 'transformer blocks');
}

type Opts = Record<string, string | boolean | undefined>;

const int = (o: Opts, key: string, flag: string, min = 1): number | undefined =>
  o[key] === undefined ? undefined : intOption(flag, o[key], min);
const num = (o: Opts, key: string, flag: string, min = 0): number | undefined =>
  o[key] === undefined ? undefined : numOption(flag, o[key], min);

export function optimOverrides(o: Opts): Partial<OptimSettings> {
  return {
    steps: int(o, 'steps', '--steps'), batchSize: int(o, 'batch', '--batch'), seqLen: int(o, 'seqLen', '--seq-len', 2),
    lr: num(o, 'lr', '--lr'), minLr: num(o, 'minLr', '--min-lr'), warmup: int(o, 'warmup', '--warmup', 0),
    weightDecay: num(o, 'weightDecay', '--weight-decay'), beta1: num(o, 'beta1', '--beta1'),
    beta2: num(o, 'beta2', '--beta2'), clip: num(o, 'clip', '--clip', Number.MIN_VALUE),
    evalEvery: int(o, 'evalEvery', '--eval-every'), evalSeqs: int(o, 'evalSeqs', '--eval-seqs'),
    ckptEvery: int(o, 'ckptEvery', '--ckpt-every'), logEvery: int(o, 'logEvery', '--log-every'),
  };
}

export function stopAt(o: Opts): number | undefined {
  return int(o, 'stopAt', '--stop-at');
}

export function modelOverrides(o: Opts): Partial<ModelShape> {
  return { hiddenSize: int(o, 'hidden', '--hidden'), nHeads: int(o, 'heads', '--heads'), nBlocks: int(o, 'blocks', '--blocks') };
}

/** A run name ('teacher') lives in runs/; anything with a slash is a folder path. */
export function runDirOf(run: string): string {
  return run.includes('/') || run.includes(path.sep) ? run : path.join('runs', run);
}
