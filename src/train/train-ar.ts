// `kforce train`: the AR teacher. AdamW with linear warm-up then cosine decay, gradient-norm clipping, periodic
// validation loss, JSONL log, atomic checkpoints every few hundred steps and on Ctrl-C, exact resume. Data order
// comes from the seed and the data position alone, so a resumed run replays the uninterrupted one step for step.
import fs from 'node:fs';
import path from 'node:path';
import { initModel } from '../model/factory.ts';
import type { ArModel } from '../model/ar.ts';
import { arLossAndGrad } from '../model/loss.ts';
import type { ModelConfig } from '../model/types.ts';
import { AdamW } from '../tensor/optim.ts';
import { getBackend } from '../tensor/select.ts';
import { BatchSampler, validationBatches } from './batches.ts';
import { loadCheckpoint, saveCheckpoint } from './checkpoint.ts';
import type { TrainState } from './checkpoint.ts';
import { getPreset } from './presets.ts';
import type { ModelShape, OptimSettings } from './presets.ts';
import { JsonlLog, Progress, StopSignal } from './progress.ts';
import {
  checkOptim, LOG_FILE, lrAt, MODEL_FILE, openRun, TOKENIZER_FILE, tick, writeResult, LoopClock,
} from './run.ts';
import { readMeta, TokenReader } from './shards.ts';
import { saveModelFile } from './model-io.ts';

export interface TrainArConfig {
  kind: 'ar';
  data: string; // absolute path of the data folder
  dataTokens: number; // training tokens of that folder: a rebuilt folder would shift the data position
  preset: string | null;
  model: ModelShape;
  optim: OptimSettings;
  seed: number;
}

export interface TrainArOptions {
  runDir: string;
  data: string;
  preset?: string;
  model?: Partial<ModelShape>;
  optim?: Partial<OptimSettings>;
  seed?: number;
  fresh?: boolean;
  quiet?: boolean;
  /** Stop (saving a checkpoint, as on Ctrl-C) once this many steps are done; the run resumes from there. */
  stopAtStep?: number;
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
  let model: ArModel;
  let opt: AdamW;
  let state: TrainState;
  const ckpt = resuming ? await loadCheckpoint(opts.runDir) : null;
  if (ckpt) {
    if (ckpt.model.kind !== 'ar') throw new Error(`${opts.runDir}: checkpoint holds a ${ckpt.model.kind} model, expected ar`);
    model = ckpt.model as ArModel;
    opt = new AdamW(model.params, model.newGrads(), adamOpts(o, model));
    opt.load({ m: ckpt.m, v: ckpt.v, step: ckpt.state.adamStep });
    state = ckpt.state;
    sampler.pos = { ...state.data };
  } else {
    model = initModel(modelConfig, 'ar', config.seed) as ArModel;
    opt = new AdamW(model.params, model.newGrads(), adamOpts(o, model));
    state = { step: 0, adamStep: 0, rng: null, data: { epoch: 0, index: 0 }, tokensSeen: 0, elapsed: 0, metrics: {} };
  }
  const grads = opt.grads;
  const logFile = path.join(opts.runDir, LOG_FILE);
  JsonlLog.truncateAfter(logFile, state.step);
  const log = new JsonlLog(logFile);
  const stop = new StopSignal();
  const progress = new Progress('train', o.steps, state.step, o.logEvery, Boolean(opts.quiet));
  const B = o.batchSize, T = o.seqLen;
  let lastVal = (state.metrics.valLoss as number | undefined) ?? null;
  const save = async (): Promise<void> => {
    state.adamStep = opt.t;
    state.data = { ...sampler.pos };
    state.tokensSeen = sampler.tokensSeen();
    await saveCheckpoint(opts.runDir, model, opt, state);
  };
  try {
    if (!resuming || state.metrics.valLossStart === undefined) {
      const v = arValLoss(model, valBatches, T);
      state.metrics.valLossStart = v;
      state.metrics.valLoss = v;
      lastVal = v;
      log.write({ event: 'eval', step: 0, valLoss: v, valPpl: Math.exp(v) });
    } else {
      progress.message(`resuming ${opts.runDir} at step ${state.step}/${o.steps}`);
    }
    let stopped = false;
    const clock = new LoopClock();
    while (state.step < o.steps) {
      const step = state.step + 1;
      const tokens = sampler.next(B);
      grads.fill(0);
      const { loss } = arLossAndGrad(model, tokens, B, T, grads);
      const norm = opt.clipGradNorm(o.clip);
      const lr = lrAt(step, o);
      if (Number.isFinite(norm) && Number.isFinite(loss)) opt.step(lr);
      else log.write({ event: 'skip', step, loss, gradNorm: norm });
      state.step = step;
      clock.addTokens(B * T);
      if (step % o.logEvery === 0 || step === o.steps) {
        const tps = clock.closeWindow();
        log.write({
          event: 'train', step, loss, lr, gradNorm: norm, tokens: sampler.tokensSeen(), tokPerSec: tps,
          elapsed: state.elapsed + clock.unbanked(),
        });
      }
      if (step % o.evalEvery === 0 || step === o.steps) {
        lastVal = arValLoss(model, valBatches, T);
        state.metrics.valLoss = lastVal;
        log.write({ event: 'eval', step, valLoss: lastVal, valPpl: Math.exp(lastVal) });
      }
      progress.update(step, { loss, val: lastVal, tokPerSec: clock.tokPerSec, extra: `lr ${lr.toExponential(2)}` });
      await tick();
      const halt = stop.requested || (step === opts.stopAtStep && step < o.steps);
      if (step % o.ckptEvery === 0 || step === o.steps || halt) {
        state.elapsed += clock.bank();
        await save();
      }
      if (halt) { stopped = true; break; }
    }
    progress.stop();
    const modelPath = path.join(opts.runDir, MODEL_FILE);
    if (!stopped) await saveModelFile(modelPath, model, { tokenizer: path.join(opts.runDir, TOKENIZER_FILE) });
    const result: TrainArResult = {
      kind: 'ar', runDir: opts.runDir, model: modelPath, tokenizer: path.join(opts.runDir, TOKENIZER_FILE),
      params: model.layout.total, config: model.config, steps: state.step, completed: !stopped,
      tokens: sampler.tokensSeen(), wallSeconds: state.elapsed,
      valLossStart: (state.metrics.valLossStart as number | undefined) ?? null, valLossEnd: lastVal,
      valPplEnd: lastVal === null ? null : Math.exp(lastVal), backend: getBackend().name,
    };
    if (!stopped) writeResult(opts.runDir, result);
    return result;
  } finally {
    progress.stop();
    stop.dispose();
    log.close();
    trainReader.close();
    valReader.close();
  }
}

export function adamOpts(o: OptimSettings, model: { layout: { decayMask: Uint8Array } }): {
  beta1: number; beta2: number; eps: number; weightDecay: number; decayMask: Uint8Array;
} {
  return { beta1: o.beta1, beta2: o.beta2, eps: 1e-8, weightDecay: o.weightDecay, decayMask: model.layout.decayMask };
}
