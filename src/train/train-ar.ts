// `kforce train`: the AR teacher, trained on next-token loss with validation loss as its evaluation. The loop (AdamW
// with warm-up and cosine decay, clipping, JSONL log, checkpoints, Ctrl-C, exact resume) is loop.ts. Data order
// comes from the seed and the data position alone, so a resumed run replays the uninterrupted one step for step.
import fs from 'node:fs';
import path from 'node:path';
import { initModel } from '../model/factory.ts';
import type { ArModel } from '../model/ar.ts';
import { arLossAndGrad } from '../model/loss.ts';
import type { ModelConfig } from '../model/types.ts';
import { getBackend } from '../tensor/select.ts';
import { BatchSampler, validationBatches } from './batches.ts';
import { runLoop, startOrResume } from './loop.ts';
import type { RunOptions } from './loop.ts';
import { getPreset } from './presets.ts';
import type { ModelShape, OptimSettings } from './presets.ts';
import { checkOptim, openRun, TOKENIZER_FILE } from './run.ts';
import { readMeta, TokenReader } from './shards.ts';

export interface TrainArConfig {
  kind: 'ar';
  data: string; // absolute path of the data folder
  dataTokens: number; // training tokens of that folder: a rebuilt folder would shift the data position
  preset: string | null;
  model: ModelShape;
  optim: OptimSettings;
  seed: number;
}

export interface TrainArOptions extends RunOptions {
  model?: Partial<ModelShape>;
}

export interface TrainArResult {
  kind: 'ar';
  runDir: string;
  model: string; // path of the exported model file
  tokenizer: string;
  params: number;
  config: ModelConfig;
  steps: number;
  completed: boolean; // false when stopped early (signal or stopAtStep)
  tokens: number;
  wallSeconds: number;
  valLossStart: number | null;
  valLossEnd: number | null;
  valPplEnd: number | null;
  backend: string;
}

export const DEFAULT_SEED = 1234;

/** Mean next-token loss over fixed validation batches. */
export function arValLoss(model: ArModel, batches: Int32Array[], seqLen: number): number {
  let sum = 0;
  let count = 0;
  for (const b of batches) {
    const rows = b.length / seqLen;
    const r = arLossAndGrad(model, b, rows, seqLen, null);
    sum += r.loss * r.count;
    count += r.count;
  }
  return count > 0 ? sum / count : NaN;
}

function resolveConfig(opts: TrainArOptions): { config: TrainArConfig; explicit: Record<string, unknown> } {
  const preset = getPreset(opts.preset ?? 'small');
  const model = { ...preset.model, ...definedOnly(opts.model ?? {}) };
  const optim = { ...preset.teacher, ...definedOnly(opts.optim ?? {}) };
  const explicit: Record<string, unknown> = { ...definedOnly(opts.model ?? {}), ...definedOnly(opts.optim ?? {}) };
  if (opts.seed !== undefined) explicit.seed = opts.seed;
  if (opts.preset !== undefined) explicit.preset = opts.preset;
  if (opts.data !== undefined) explicit.data = path.resolve(opts.data);
  return {
    config: { kind: 'ar', data: path.resolve(opts.data), dataTokens: 0, preset: opts.preset ?? 'small', model, optim, seed: opts.seed ?? DEFAULT_SEED },
    explicit,
  };
}

export function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function checkShape(s: ModelShape): void {
  for (const k of ['hiddenSize', 'nHeads', 'nBlocks'] as const) {
    if (!Number.isSafeInteger(s[k]) || s[k] < 1) throw new Error(`${k} must be an integer >= 1, got ${s[k]}`);
  }
  if (s.hiddenSize % s.nHeads !== 0 || (s.hiddenSize / s.nHeads) % 2 !== 0) {
    throw new Error(`hiddenSize ${s.hiddenSize} must split into ${s.nHeads} heads of an even size`);
  }
}

export async function trainAr(opts: TrainArOptions): Promise<TrainArResult> {
  const { config: wanted, explicit } = resolveConfig(opts);
  // Every input is checked before the run folder is touched.
  checkShape(wanted.model);
  checkOptim(wanted.optim);
  const meta = readMeta(wanted.data);
  wanted.dataTokens = meta.splits.train.tokens;
  explicit.dataTokens = meta.splits.train.tokens;
  const tokSrc = path.join(wanted.data, meta.tokenizer);
  if (!fs.existsSync(tokSrc)) throw new Error(`data folder ${wanted.data} has no ${meta.tokenizer}`);
  const trainReader = new TokenReader(wanted.data, meta, 'train');
  const valReader = new TokenReader(wanted.data, meta, 'val');
  const { config, resuming } = openRun(opts.runDir, wanted, explicit, Boolean(opts.fresh));
  const o = config.optim;
  const sampler = new BatchSampler(trainReader, o.seqLen, config.seed);
  const valBatches = validationBatches(valReader, o.seqLen, o.evalSeqs, o.batchSize);
  fs.copyFileSync(tokSrc, path.join(opts.runDir, TOKENIZER_FILE));
  const modelConfig: ModelConfig = {
    vocabSize: meta.vocabSize, hiddenSize: config.model.hiddenSize, nHeads: config.model.nHeads,
    nBlocks: config.model.nBlocks, maskIndex: meta.maskId, maxK: 0, maxSeqLen: o.seqLen,
  };
  const { model, opt, state } = await startOrResume(opts.runDir, resuming, o, sampler,
    (stored) => {
      if (stored.kind !== 'ar') throw new Error(`${opts.runDir}: checkpoint holds a ${stored.kind} model, expected ar`);
      return stored;
    },
    () => initModel(modelConfig, 'ar', config.seed) as ArModel, null);
  const T = o.seqLen;
  try {
    return await runLoop({
      runDir: opts.runDir, resuming, optim: o, sampler, model, opt, state, label: 'train', quiet: opts.quiet,
      stopAtStep: opts.stopAtStep, metric: 'valLoss',
      evaluate: () => arValLoss(model, valBatches, T),
      evalFields: (v) => ({ valLoss: v, valPpl: Math.exp(v) }),
      step: (tokens) => ({ loss: arLossAndGrad(model, tokens, o.batchSize, T, opt.grads).loss }),
      show: (v, lr) => ({ val: v, extra: `lr ${lr.toExponential(2)}` }),
      result: (end): TrainArResult => ({
        kind: 'ar', runDir: opts.runDir, model: end.modelPath, tokenizer: end.tokenizerPath,
        params: model.layout.total, config: model.config, steps: state.step, completed: end.completed,
        tokens: sampler.tokensSeen(), wallSeconds: state.elapsed,
        valLossStart: end.start, valLossEnd: end.last,
        valPplEnd: end.last === null ? null : Math.exp(end.last), backend: getBackend().name,
      }),
    });
  } finally {
    trainReader.close();
    valReader.close();
  }
}
