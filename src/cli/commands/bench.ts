import type { Command } from 'commander';
import path from 'node:path';
import { existsSync } from 'node:fs';
import type { ModelConfig } from '../../model/types.ts';
import { getBackend } from '../../tensor/select.ts';
import { intList, intOption, numOption } from '../../train/cli-util.ts';
import { Tokenizer } from '../../train/tokenizer.ts';
import { loadModelFile } from '../../decode/load.ts';
import { runSpeedBench, speedChart, speedJson, speedMarkdown, speedText, type SpeedModels } from '../../eval/bench-speed.ts';
import { qualityCharts, qualityMarkdown, runQualityBench } from '../../eval/bench-quality.ts';
import { measureDecodeRates } from '../../eval/machine-rates.ts';
import { loadModelSet } from '../../eval/model-set.ts';
import { prefixesFromCorpus, prefixesFromDataDir } from '../../eval/prefixes.ts';
import { randomModels } from '../../eval/random-model.ts';
import { machineLine, updateResultsFile, writeReport } from '../../eval/report.ts';
import { runEngineBench } from '../../eval/bench-engine.ts';

const DEFAULT_MODELS = 'models/small';

/** Benchmarks measure kernels, not argument checks (select.ts reads this on the first getBackend()). */
function uncheckedBackend(): void {
  if (process.env.KFORCE_UNCHECKED === undefined) process.env.KFORCE_UNCHECKED = '1';
}

const progress = (m: string) => console.error(`[bench] ${m}`);

/** The command as typed, for reports. */
export function commandLine(): string {
  const q = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`);
  return ['kforce', ...process.argv.slice(2)].map(q).join(' ');
}

function resultsBody(markdown: string, charts: string[], outDir: string, resultsFile: string): string {
  const rel = (f: string) => path.relative(path.dirname(path.resolve(resultsFile)), path.resolve(outDir, f)).split(path.sep).join('/');
  return [
    `Command: \`${commandLine()}\``,
    '',
    `Machine: ${machineLine(getBackend())}. Measured ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC.`,
    '',
    markdown.trimEnd(),
    '',
    ...charts.map((c) => `![${c}](${rel(c)})`),
  ].join('\n');
}

interface SpeedFlags {
  randomWeights?: boolean;
  blocks: string;
  hidden: string;
  heads: string;
  vocab: string;
  maxK: string;
  models?: string;
  ar?: string;
  pflm?: string;
  newTokens: string;
  batch: string;
  k?: string;
  repeats: string;
  warmup: string;
  promptLength: string;
  seed: string;
  out: string;
  results?: string;
  json?: boolean;
}

async function speedModels(o: SpeedFlags): Promise<SpeedModels & { weights: Float32Array; hidden: number }> {
  if (o.randomWeights) {
    const vocabSize = intOption('--vocab', o.vocab, 2);
    const cfg: ModelConfig = {
      nBlocks: intOption('--blocks', o.blocks, 1), hiddenSize: intOption('--hidden', o.hidden, 2),
      nHeads: intOption('--heads', o.heads, 1), vocabSize, maskIndex: vocabSize - 1,
      maxK: intOption('--max-k', o.maxK, 1), maxSeqLen: 1024,
    };
    progress(`initialising random weights: ${cfg.nBlocks} blocks, D=${cfg.hiddenSize}, H=${cfg.nHeads}, V=${cfg.vocabSize}`);
    const t0 = Date.now();
    const { ar, pflm } = randomModels(cfg, intOption('--seed', o.seed, 0));
    progress(`initialised ${(pflm.params.length / 1e6).toFixed(1)} M parameters in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    return {
      ar: ar.decoder(), pflm: pflm.decoder(), weights: pflm.params, hidden: cfg.hiddenSize,
      description: `random weights, ${cfg.nBlocks} blocks, D=${cfg.hiddenSize}, H=${cfg.nHeads}, V=${cfg.vocabSize}, fp32`,
    };
  }
  if (o.ar || o.pflm) {
    if (!o.ar || !o.pflm) throw new Error('bench speed: give both --ar <file> and --pflm <file> (or --models <dir>, or --random-weights)');
    const ar = await loadModelFile(o.ar);
    const pflm = await loadModelFile(o.pflm);
    if (ar.kind !== 'ar') throw new Error(`bench speed: ${o.ar} is not an AR model`);
    if (pflm.kind !== 'pflm') throw new Error(`bench speed: ${o.pflm} is not a PFLM`);
    return { ar: ar.decoder(), pflm: pflm.decoder(), weights: pflm.params, hidden: pflm.config.hiddenSize, description: `${o.ar} vs ${o.pflm}` };
  }
  const dir = o.models ?? DEFAULT_MODELS;
  if (!existsSync(dir)) {
    throw new Error(`bench speed: no model folder ${dir}; pass --models <dir>, --ar/--pflm files, or --random-weights`);
  }
  const set = await loadModelSet(dir);
  if (!set.teacher || set.pflms.length === 0) throw new Error(`bench speed: ${dir} needs an AR teacher and a PFLM`);
  const pflm = set.pflms[set.pflms.length - 1];
  return {
    ar: set.teacher.decoder(), pflm: pflm.decoder(), weights: pflm.params, hidden: pflm.config.hiddenSize,
    description: `${set.teacherFile} vs ${set.pflmFiles[set.pflmFiles.length - 1]}`,
  };
}

function registerSpeed(bench: Command): void {
  bench
    .command('speed')
    .description('decode throughput of AR vs PFLM k=1..K at several batch sizes, with the roofline prediction (KFORCING.md section 7)')
    .option('--random-weights', 'benchmark random-weight models of the given shape instead of trained ones')
    .option('--blocks <n>', 'random weights: blocks', '12')
    .option('--hidden <n>', 'random weights: hidden size D', '768')
    .option('--heads <n>', 'random weights: attention heads', '12')
    .option('--vocab <n>', 'random weights: vocabulary size (with [MASK])', '50258')
    .option('--max-k <n>', 'random weights: the PFLM\'s maxK', '4')
    .option('--models <dir>', `folder with an AR teacher and PFLM(s) (default ${DEFAULT_MODELS})`)
    .option('--ar <file>', 'AR model file')
    .option('--pflm <file>', 'PFLM file')
    .option('--new-tokens <n>', 'tokens generated per sequence', '122')
    .option('--batch <list>', 'batch sizes', '1,4,16,64')
    .option('--k <list>', 'PFLM k values (default 1..maxK)')
    .option('--repeats <n>', 'timed rounds per configuration (median reported)', '1')
    .option('--warmup <n>', 'tokens generated per configuration before timing', '8')
    .option('--prompt-length <n>', 'prompt length in tokens (random token ids; speed does not depend on them)', '6')
    .option('--seed <n>', 'seed of weights, prompts and noise', '0')
    .option('--out <dir>', 'report folder (markdown, SVG, JSON)', 'runs/bench/speed')
    .option('--results <file>', 'also replace this benchmark\'s section in a results markdown file (e.g. docs/RESULTS.md)')
    .option('--json', 'print one JSON object as the last line')
    .action(async (o: SpeedFlags) => {
      uncheckedBackend();
      const m = await speedModels(o);
      const report = runSpeedBench(m, {
        batches: intList('--batch', o.batch),
        ks: o.k === undefined ? undefined : intList('--k', o.k),
        newTokens: intOption('--new-tokens', o.newTokens, 1),
        repeats: intOption('--repeats', o.repeats, 1),
        warmupTokens: intOption('--warmup', o.warmup, 1),
        promptLength: intOption('--prompt-length', o.promptLength, 1),
        seed: intOption('--seed', o.seed, 0),
        measureRates: () => measureDecodeRates(m.weights, m.hidden),
        onProgress: progress,
      });
      const md = speedMarkdown(report);
      const files = writeReport(o.out, { 'speed.md': md, 'speed.svg': speedChart(report), 'speed.json': JSON.stringify(speedJson(report), null, 2) + '\n' });
      if (o.results) {
        const id = `speed-${o.randomWeights ? 'random' : 'trained'}-${report.newTokens}`;
        const heading = `Decode speed, ${o.randomWeights ? 'random weights' : 'trained models'}, ${report.newTokens} new tokens`;
        updateResultsFile(o.results, id, heading, resultsBody(md, ['speed.svg'], o.out, o.results));
        progress(`updated section '${id}' of ${o.results}`);
      }
      console.log(speedText(report));
      progress(`report: ${files.join(', ')}`);
      if (o.json) console.log(JSON.stringify(speedJson(report)));
    });
}

interface QualityFlags {
  models?: string;
  teacher?: string;
  pflm?: string[];
  judge?: string;
  tokenizer?: string;
  data?: string;
  sources: string;
  prompts: string;
  prefixLength: string;
  newTokens: string;
  k?: string;
  penalties: string;
  seed: string;
  tau: string;
  batch: string;
  out: string;
  results?: string;
  json?: boolean;
}

function registerQuality(bench: Command): void {
  bench
    .command('quality')
    .description('sample quality of PFLM k=1..K vs its AR teacher: judge and teacher perplexity, entropy, repetition, per-slot agreement')
    .option('--models <dir>', `folder with the teacher, PFLM(s), judge and tokenizer.json (default ${DEFAULT_MODELS})`)
    .option('--teacher <file>', 'AR teacher (overrides the folder\'s)')
    .option('--pflm <file>', 'PFLM (repeatable; k uses the smallest maxK >= k)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--judge <file>', 'independent AR judge (overrides the folder\'s)')
    .option('--tokenizer <file>', 'tokenizer.json (default: the folder\'s)')
    .option('--data <dir>', 'token data folder (`kforce data build`, e.g. runs/small/data) whose validation split gives the prefixes')
    .option('--sources <list>', 'without --data: corpus sources whose validation documents give the prefixes', 'mix')
    .option('--prompts <n>', 'number of held-out prefixes', '64')
    .option('--prefix-length <n>', 'tokens per prefix, BOS included', '6')
    .option('--new-tokens <n>', 'tokens generated per prefix', '128')
    .option('--k <list>', 'PFLM k values (default 1..maxK)')
    .option('--penalties <p>', "'both' (0 and the recommended lambda), 'none', 'recommended', or a list like 0,0.5", 'both')
    .option('--seed <n>', 'noise seed', '0')
    .option('--tau <t>', 'teacher temperature = the tau the PFLM imitates', '1')
    .option('--batch <n>', 'most sequences per forward pass', '64')
    .option('--out <dir>', 'report folder', 'runs/bench/quality')
    .option('--results <file>', 'also replace the quality section of a results markdown file (e.g. docs/RESULTS.md)')
    .option('--json', 'print one JSON object as the last line')
    .action(async (o: QualityFlags) => {
      uncheckedBackend();
      const dir = o.models ?? DEFAULT_MODELS;
      const set = existsSync(dir) ? await loadModelSet(dir) : null;
      const teacher = o.teacher ? await loadModelFile(o.teacher) : set?.teacher;
      const judge = o.judge ? await loadModelFile(o.judge) : set?.judge;
      const pflms = o.pflm ? await Promise.all(o.pflm.map(loadModelFile)) : set?.pflms ?? [];
      if (!teacher || teacher.kind !== 'ar') throw new Error(`bench quality: no AR teacher (pass --teacher or a --models folder; looked in ${dir})`);
      if (!judge || judge.kind !== 'ar') throw new Error(`bench quality: no judge model (train one with \`kforce train --preset judge\`, pass --judge)`);
      if (pflms.length === 0 || pflms.some((p) => p.kind !== 'pflm')) throw new Error('bench quality: no PFLM (pass --pflm files or a --models folder)');
      const tokFile = o.tokenizer ?? set?.tokenizerFile;
      const n = intOption('--prompts', o.prompts, 1);
      const len = intOption('--prefix-length', o.prefixLength, 1);
      let prompts: number[][];
      if (o.data) {
        prompts = prefixesFromDataDir(o.data, n, len);
      } else {
        if (!tokFile) throw new Error('bench quality: prefixes need --data <dir> or a tokenizer (--tokenizer, or tokenizer.json in the models folder)');
        progress(`reading validation documents of ${o.sources}`);
        prompts = await prefixesFromCorpus(Tokenizer.load(tokFile), n, len, o.sources.split(',').map((s) => s.trim()).filter(Boolean));
      }
      const penalties = ['both', 'none', 'recommended'].includes(o.penalties)
        ? (o.penalties as 'both' | 'none' | 'recommended')
        : o.penalties.split(',').map((s) => numOption('--penalties', s.trim(), 0));
      const report = runQualityBench({ teacher: teacher.decoder(), judge: judge.decoder(), pflms: pflms.map((p) => p.decoder()) }, {
        prompts, newTokens: intOption('--new-tokens', o.newTokens, 1),
        ks: o.k === undefined ? undefined : intList('--k', o.k), penalties,
        seed: intOption('--seed', o.seed, 0), tau: numOption('--tau', o.tau, Number.MIN_VALUE),
        maxBatch: intOption('--batch', o.batch, 1), onProgress: progress,
      });
      const desc = `Teacher ${o.teacher ?? set?.teacherFile}, judge ${o.judge ?? set?.judgeFile}, PFLM(s) ${(o.pflm ?? set?.pflmFiles ?? []).join(', ')}; ` +
        `${report.prompts} held-out ${len}-token prefixes, ${report.newTokens} new tokens, seed ${report.seed}, tau ${report.tau}.\n\n`;
      const md = desc + qualityMarkdown(report);
      const charts = qualityCharts(report);
      const json = { ...report, samples: undefined };
      const files = writeReport(o.out, { 'quality.md': md, ...charts, 'quality.json': JSON.stringify(json, null, 2) + '\n' });
      if (o.results) {
        updateResultsFile(o.results, 'quality', 'Sample quality', resultsBody(md, Object.keys(charts), o.out, o.results));
        progress(`updated section 'quality' of ${o.results}`);
      }
      console.log(md);
      progress(`report: ${files.join(', ')}`);
      if (o.json) console.log(JSON.stringify(json));
    });
}

interface EngineFlags {
  repeats: string;
  json?: boolean;
  results?: string;
}

function registerEngine(bench: Command): void {
  bench
    .command('engine')
    .description('engine limits: train step, GEMM rates, batch-1 decode step against the DRAM bound (issue 2)')
    .option('--repeats <n>', 'timed repetitions per measurement (median reported)', '5')
    .option('--results <file>', 'also replace the engine section of a results markdown file (e.g. docs/RESULTS.md)')
    .option('--json', 'print one JSON object as the last line')
    .action(async (o: EngineFlags) => {
      uncheckedBackend();
      await runEngineBench({ repeats: intOption('--repeats', o.repeats, 1), json: Boolean(o.json), results: o.results, onProgress: progress, commandLine: commandLine() });
    });
}

export function registerBench(program: Command): void {
  const bench = program.command('bench').description('benchmarks: decode speed, sample quality, engine limits');
  registerSpeed(bench);
  registerQuality(bench);
  registerEngine(bench);
}
