// Options shared by several commands: the shape of a random-weight model (`bench speed`, `serve`), and what the
// decode benchmarks generate and where they report. Values are validated where they are read, naming their flag.
import type { Command } from 'commander';
import { DEFAULT_PFLM_MAX_K } from '../model/factory.ts';
import type { ModelConfig } from '../model/types.ts';
import { intList, intOption } from '../train/cli-util.ts';

export interface RandomModelFlags {
  blocks: string;
  hidden: string;
  heads: string;
  vocab: string;
  maxK: string;
}

/** --blocks, --hidden, --heads, --vocab, --max-k; `what` heads their help ('random weights'). */
export function addRandomModelOptions(cmd: Command, what: string): Command {
  return cmd
    .option('--blocks <n>', `${what}: blocks`, '12')
    .option('--hidden <n>', `${what}: hidden size D`, '768')
    .option('--heads <n>', `${what}: attention heads`, '12')
    .option('--vocab <n>', `${what}: vocabulary size V, [MASK] = V - 1`, '50258')
    .option('--max-k <n>', `${what}: the PFLM's largest k`, String(DEFAULT_PFLM_MAX_K));
}

/** The config those flags describe; `pflm` false gives an AR config (maxK 0, --max-k not read). */
export function randomModelConfig(o: RandomModelFlags, pflm: boolean): ModelConfig {
  const vocabSize = intOption('--vocab', o.vocab, 2);
  return {
    nBlocks: intOption('--blocks', o.blocks, 1), hiddenSize: intOption('--hidden', o.hidden, 2),
    nHeads: intOption('--heads', o.heads, 1), vocabSize, maskIndex: vocabSize - 1,
    maxK: pflm ? intOption('--max-k', o.maxK, 1) : 0, maxSeqLen: 1024,
  };
}

export interface DecodeBenchFlags {
  newTokens: string;
  k?: string;
  seed: string;
}

/** --new-tokens, --k <list> and --seed: what a decode benchmark generates; `per` is what gets --new-tokens. */
export function addDecodeBenchOptions(cmd: Command, d: { newTokens: string; per: string; seed: string }): Command {
  return cmd
    .option('--new-tokens <n>', `tokens generated per ${d.per}`, d.newTokens)
    .option('--k <list>', 'PFLM k values (default 1..maxK)')
    .option('--seed <n>', d.seed, '0');
}

/** The values of those flags; `ks` undefined means every k of the model. */
export function decodeBenchSettings(o: DecodeBenchFlags): { newTokens: number; ks: number[] | undefined; seed: number } {
  return {
    newTokens: intOption('--new-tokens', o.newTokens, 1),
    ks: o.k === undefined ? undefined : intList('--k', o.k),
    seed: intOption('--seed', o.seed, 0),
  };
}

export interface ReportFlags {
  out: string;
  results?: string;
  json?: boolean;
}

/** --out (when `outDir` is given), --results and --json; `section` names what --results replaces. */
export function addReportOptions(cmd: Command, section: string, outDir?: string): Command {
  if (outDir !== undefined) cmd.option('--out <dir>', 'report folder (markdown, SVG, JSON)', outDir);
  return cmd
    .option('--results <file>', `also replace ${section} of a results markdown file (e.g. docs/RESULTS.md)`)
    .option('--json', 'print one JSON object as the last line');
}
