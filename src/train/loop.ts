// The training loop shared by `train` and `distill`: start or resume from the run's checkpoint, then steps of
// sample -> loss and gradients -> clip -> AdamW with the warm-up/cosine rate, with JSONL records every logEvery steps,
// an evaluation every evalEvery steps, a checkpoint every ckptEvery steps and on Ctrl-C or --stop-at, and the model file
// and result.json once the last step is done. What a step computes and what an evaluation scores is the caller's.
// Everything that decides a step's numbers (parameters, AdamW moments, data position, noise RNG) is in the checkpoint,
// so a resumed run replays the uninterrupted one bit for bit.
import path from 'node:path';
import type { AnyModel } from '../model/factory.ts';
import { AdamW } from '../tensor/optim.ts';
import type { BatchSampler } from './batches.ts';
import { loadCheckpoint, saveCheckpoint } from './checkpoint.ts';
import type { TrainState } from './checkpoint.ts';
import { saveModelFile } from './model-io.ts';
import type { OptimSettings } from './presets.ts';
import { JsonlLog, Progress, StopSignal } from './progress.ts';
import { LOG_FILE, LoopClock, lrAt, MODEL_FILE, tick, TOKENIZER_FILE, writeResult } from './run.ts';

export function adamOpts(o: OptimSettings, model: { layout: { decayMask: Uint8Array } }): {
  beta1: number; beta2: number; eps: number; weightDecay: number; decayMask: Uint8Array;
} {
  return { beta1: o.beta1, beta2: o.beta2, eps: 1e-8, weightDecay: o.weightDecay, decayMask: model.layout.decayMask };
}

/** What every training run is given (`train` and `distill` add their own). */
export interface RunOptions {
  runDir: string;
  data: string; // token data folder (`kforce data build`)
  preset?: string;
  optim?: Partial<OptimSettings>;
  seed?: number;
  fresh?: boolean; // discard an existing run instead of resuming it
  quiet?: boolean;
  /** Stop (saving a checkpoint, as on Ctrl-C) once this many steps are done; the run resumes from there. */
  stopAtStep?: number;
}

export interface Trainee<M extends AnyModel> {
  model: M;
  opt: AdamW;
  state: TrainState;
}

/**
 * The model, optimizer and state a run continues from: its checkpoint when resuming (`accept` checks the stored model
 * is the kind this run trains, and throws otherwise), else `init()` with a fresh state whose noise RNG is `rng`.
 * The sampler is moved to the stored data position.
 */
export async function startOrResume<M extends AnyModel>(runDir: string, resuming: boolean, o: OptimSettings,
  sampler: BatchSampler, accept: (stored: AnyModel) => M, init: () => M, rng: number[] | null): Promise<Trainee<M>> {
  const ckpt = resuming ? await loadCheckpoint(runDir) : null;
  if (ckpt) {
    const model = accept(ckpt.model);
    const opt = new AdamW(model.params, model.newGrads(), adamOpts(o, model));
    opt.load({ m: ckpt.m, v: ckpt.v, step: ckpt.state.adamStep });
    sampler.pos = { ...ckpt.state.data };
    return { model, opt, state: ckpt.state };
  }
  const model = init();
  const opt = new AdamW(model.params, model.newGrads(), adamOpts(o, model));
  const state: TrainState = { step: 0, adamStep: 0, rng, data: { epoch: 0, index: 0 }, tokensSeen: 0, elapsed: 0, metrics: {} };
  return { model, opt, state };
}

export interface StepOutcome {
  loss: number;
  /** Extra fields of the step's 'train' log record (only read on logged steps). */
  logFields?: Record<string, unknown>;
}

export interface LoopEnd<E> {
  completed: boolean; // false when stopped early (signal or stopAtStep)
  modelPath: string;
  tokenizerPath: string;
  start: E | null; // the evaluation before the first step
  last: E | null; // the latest evaluation
}

export interface LoopSpec<M extends AnyModel, E, R extends object> extends Trainee<M> {
  runDir: string;
  resuming: boolean;
  optim: OptimSettings;
  sampler: BatchSampler;
  /** Progress bar label. */
  label: string;
  quiet?: boolean;
  /** Stop (saving a checkpoint, as on Ctrl-C) once this many steps are done; the run resumes from there. */
  stopAtStep?: number;
  /** Name under which the latest evaluation is kept in state.metrics; the first one is `${metric}Start`. */
  metric: string;
  evaluate(): E;
  /** The fields of an 'eval' log record. */
  evalFields(e: E): Record<string, unknown>;
  /** Loss and gradients (into opt.grads, already zeroed) for one batch of sequences; `logging` on logged steps. */
  step(batch: Int32Array, logging: boolean): StepOutcome;
  /** The progress bar's validation figure and extra text. */
  show(last: E | null, lr: number): { val: number | null; extra: string };
  /** Stores any state of the caller's own in `state` before a checkpoint (e.g. its noise RNG). */
  beforeSave?(): void;
  result(end: LoopEnd<E>): R;
}

/** Runs the remaining steps of a run; returns the caller's result, also written to result.json when completed. */
export async function runLoop<M extends AnyModel, E, R extends object>(spec: LoopSpec<M, E, R>): Promise<R> {
  const { runDir, model, opt, state, sampler, metric } = spec;
  const o = spec.optim;
  const B = o.batchSize;
  const logFile = path.join(runDir, LOG_FILE);
  JsonlLog.truncateAfter(logFile, state.step);
  const log = new JsonlLog(logFile);
  const stop = new StopSignal();
  const progress = new Progress(spec.label, o.steps, state.step, o.logEvery, Boolean(spec.quiet));
  const startKey = `${metric}Start`;
  let last: E | null = (state.metrics[metric] as E | undefined) ?? null;
  try {
    if (!spec.resuming || state.metrics[startKey] === undefined) {
      const e = spec.evaluate();
      state.metrics[startKey] = e;
      state.metrics[metric] = e;
      last = e;
      log.write({ event: 'eval', step: 0, ...spec.evalFields(e) });
    } else {
      progress.message(`resuming ${runDir} at step ${state.step}/${o.steps}`);
    }
    let stopped = false;
    const clock = new LoopClock();
    while (state.step < o.steps) {
      const step = state.step + 1;
      const batch = sampler.next(B);
      opt.grads.fill(0);
      const logging = step % o.logEvery === 0 || step === o.steps;
      const { loss, logFields } = spec.step(batch, logging);
      const norm = opt.clipGradNorm(o.clip);
      const lr = lrAt(step, o);
      if (Number.isFinite(norm) && Number.isFinite(loss)) opt.step(lr);
      else log.write({ event: 'skip', step, loss, gradNorm: norm });
      state.step = step;
      clock.addTokens(B * o.seqLen);
      if (logging) {
        const tps = clock.closeWindow();
        log.write({
          event: 'train', step, loss, ...logFields, lr, gradNorm: norm, tokens: sampler.tokensSeen(), tokPerSec: tps,
          elapsed: state.elapsed + clock.unbanked(),
        });
      }
      if (step % o.evalEvery === 0 || step === o.steps) {
        const e = spec.evaluate();
        state.metrics[metric] = e;
        last = e;
        log.write({ event: 'eval', step, ...spec.evalFields(e) });
      }
      progress.update(step, { loss, tokPerSec: clock.tokPerSec, ...spec.show(last, lr) });
      await tick();
      const halt = stop.requested || (step === spec.stopAtStep && step < o.steps);
      if (step % o.ckptEvery === 0 || step === o.steps || halt) {
        state.elapsed += clock.bank();
        state.adamStep = opt.t;
        spec.beforeSave?.();
        state.data = { ...sampler.pos };
        state.tokensSeen = sampler.tokensSeen();
        await saveCheckpoint(runDir, model, opt, state);
      }
      if (halt) { stopped = true; break; }
    }
    progress.stop();
    const modelPath = path.join(runDir, MODEL_FILE);
    const tokenizerPath = path.join(runDir, TOKENIZER_FILE);
    if (!stopped) await saveModelFile(modelPath, model, { tokenizer: tokenizerPath });
    const result = spec.result({
      completed: !stopped, modelPath, tokenizerPath, start: (state.metrics[startKey] as E | undefined) ?? null, last,
    });
    if (!stopped) writeResult(runDir, result);
    return result;
  } finally {
    progress.stop();
    stop.dispose();
    log.close();
  }
}
