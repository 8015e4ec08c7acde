import type { Command } from 'commander';
import path from 'node:path';
import { existsSync } from 'node:fs';
import { getBackend } from '../../tensor/select.ts';
import { preferNativeSettingsForDecoding } from '../../tensor/native.ts';
import { intList, intOption, numOption } from '../../train/cli-util.ts';
import { addDecodeBenchOptions, addRandomModelOptions, addReportOptions, decodeBenchSettings, randomModelConfig } from '../options.ts';
import type { DecodeBenchFlags, RandomModelFlags, ReportFlags } from '../options.ts';
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

interface SpeedFlags extends RandomModelFlags, DecodeBenchFlags, ReportFlags {
  randomWeights?: boolean;
  models?: string;
  ar?: string;
  pflm?: string;
  batch: string;
  repeats: string;
  warmup: string;
  promptLength: string;
}

async function speedModels(o: SpeedFlags): Promise<SpeedModels & { weights: Float32Array; hidden: number }> {
  if (o.randomWeights) {
    const cfg = randomModelConfig(o, true);
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
  const cmd = bench
    .command('speed')
    .description('decode throughput of AR vs PFLM k=1..K at several batch sizes, with the roofline prediction (KFORCING.md section 7)')
    .option('--random-weights', 'benchmark random-weight models of the given shape instead of trained ones');
  addRandomModelOptions(cmd, 'random weights')
    .option('--models <dir>', `folder with an AR teacher and PFLM(s) (default ${DEFAULT_MODELS})`)
    .option('--ar <file>', 'AR model file')
    .option('--pflm <file>', 'PFLM file')
    .option('--batch <list>', 'batch sizes', '1,4,16,64')
    .option('--repeats <n>', 'timed rounds per configuration (median reported)', '1')
    .option('--warmup <n>', 'tokens generated per configuration before timing', '8')
    .option('--prompt-length <n>', 'prompt length in tokens (random token ids; speed does not depend on them)', '6');
  addDecodeBenchOptions(cmd, { newTokens: '122', per: 'sequence', seed: 'seed of weights, prompts and noise' });
  addReportOptions(cmd, "this benchmark's section", 'runs/bench/speed')
    .action(async (o: SpeedFlags) => {
      uncheckedBackend();
      preferNativeSettingsForDecoding();
      const m = await speedModels(o);
      const report = runSpeedBench(m, {
        batches: intList('--batch', o.batch),
        ...decodeBenchSettings(o),
        repeats: intOption('--repeats', o.repeats, 1),
        warmupTokens: intOption('--warmup', o.warmup, 1),
        promptLength: intOption('--prompt-length', o.promptLength, 1),
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

interface QualityFlags extends DecodeBenchFlags, ReportFlags {
  models?: string;
  teacher?: string;
  pflm?: string[];
  judge?: string;
  tokenizer?: string;
  data?: string;
  sources: string;
  prompts: string;
  prefixLength: string;
  penalties: string;
  tau: string;
  batch: string;
}

function registerQuality(bench: Command): void {
  const cmd = bench
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
    .option('--prefix-length <n>', 'tokens per prefix, BOS included', '6');
  addDecodeBenchOptions(cmd, { newTokens: '128', per: 'prefix', seed: 'noise seed' })
    .option('--penalties <p>', "'both' (0 and the recommended lambda), 'none', 'recommended', or a list like 0,0.5", 'both')
    .option('--tau <t>', 'teacher temperature = the tau the PFLM imitates', '1')
    .option('--batch <n>', 'most sequences per forward pass', '64');
  addReportOptions(cmd, 'the quality section', 'runs/bench/quality')
    .action(async (o: QualityFlags) => {
      uncheckedBackend();
      preferNativeSettingsForDecoding();
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
        prompts, ...decodeBenchSettings(o), penalties, tau: numOption('--tau', o.tau, Number.MIN_VALUE),
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

interface EngineFlags extends Omit<ReportFlags, 'out'> {
  repeats: string;
}

function registerEngine(bench: Command): void {
  const cmd = bench
    .command('engine')
    .description('engine limits: train step, GEMM rates, batch-1 decode step against the DRAM bound (issue 2)')
    .option('--repeats <n>', 'timed repetitions per measurement (median reported)', '5');
  addReportOptions(cmd, 'the engine section')
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
