// `kforce distill`: one K-Forcing stage (KFORCING.md section 5). The student PFLM (k slots) starts from its teacher
// (every tensor with matching name and shape copied) and learns the teacher's targets for fresh uniform noise:
//   AR teacher   -> k = 1, inverse-CDF targets of the teacher's softmax(logits / tau);
//   PFLM teacher -> k = 2 * teacher k, self-forcing targets (teacher pass 1 + double-forward pass 2, argmax);
//   --targets noise-inversion (ablation): noise inverted from the data's own continuations under the AR teacher.
// Logs per-slot loss and per-slot accuracy (student argmax == target) on training batches and on fixed held-out
// contexts, whose noise and targets are drawn once so every evaluation scores the same problems.
import fs from 'node:fs';
import path from 'node:path';
import { initModel, initStudentFromTeacher } from '../model/factory.ts';
import type { Model } from '../model/factory.ts';
import type { ArModel } from '../model/ar.ts';
import type { PflmModel } from '../model/pflm.ts';
import { stairForward } from '../model/pflm.ts';
import { stairLossAndGrad } from '../model/loss.ts';
import { inverseCdfTargetsFlat, noiseInversionIntervalsFlat, selfForcingTargetsFlat } from '../model/targets.ts';
import type { ModelConfig } from '../model/types.ts';
import { Rng } from '../tensor/rng.ts';
import { getBackend } from '../tensor/select.ts';
import { BatchSampler, validationBatches } from './batches.ts';
import { runLoop, startOrResume } from './loop.ts';
import type { RunOptions } from './loop.ts';
import { loadModelSpec } from './model-io.ts';
import { distillSettings, getPreset } from './presets.ts';
import type { OptimSettings } from './presets.ts';
import { checkOptim, openRun, TOKENIZER_FILE } from './run.ts';
import { readMeta, TokenReader } from './shards.ts';
import { DEFAULT_SEED, definedOnly } from './train-ar.ts';

export type TargetKind = 'inverse-cdf' | 'self-forcing' | 'noise-inversion';

export interface DistillConfig {
  kind: 'distill';
  data: string;
  dataTokens: number; // training tokens of the data folder (a rebuilt folder is refused on resume)
  teacher: string; // model file of the teacher
  arTeacher: string | null; // AR model for noise-inversion intervals
  k: number;
  targets: TargetKind;
  tau: [number, number] | null; // tau conditioning range (uniform per sequence); null = tau 1
  preset: string;
  optim: OptimSettings;
  seed: number;
}

export interface DistillOptions extends RunOptions {
  /** Run folder; '{k}' in it is replaced by the student's k. */
  runDir: string;
  teacher: string; // model file or finished run folder
  k?: number; // default: 1 for an AR teacher, 2 * teacher k for a PFLM teacher
  targets?: 'auto' | TargetKind;
  arTeacher?: string; // noise inversion beyond k = 1: the AR model whose CDF inverts the data
  tau?: [number, number] | null;
}

export interface SlotStats {
  loss: number[]; // per-slot mean cross-entropy against the targets
  acc: number[]; // per-slot share of argmax == target
}

export interface DistillResult {
  kind: 'distill';
  runDir: string;
  model: string;
  tokenizer: string;
  k: number;
  targets: TargetKind;
  params: number;
  config: ModelConfig;
  steps: number;
  completed: boolean;
  tokens: number;
  wallSeconds: number;
  heldOutStart: SlotStats | null;
  heldOut: SlotStats | null;
  backend: string;
}

/** One batch of distillation inputs: context [B*N], noise [B*N*k], tau [B], targets [B*N*k]. */
interface Problem {
  B: number;
  N: number;
  context: Int32Array;
  noise: Float64Array;
  tau: Float64Array;
  targets: Int32Array;
}

function drawTau(rng: Rng, range: [number, number] | null): number {
  if (!range) return 1;
  const [lo, hi] = range;
  return lo === hi ? lo : lo + (hi - lo) * rng.uniform();
}

/**
 * Builds one distillation problem from data sequences [B*S]: noise from `rng`, targets from the teacher. For teacher
 * targets the context is all S tokens (windows beyond the data are fine: targets come from the teacher); for noise
 * inversion the context is the first S - k tokens and the targets are the data's next k tokens of each window.
 */
export function makeProblem(seqs: Int32Array, B: number, S: number, k: number, kind: TargetKind, teacher: Model,
  arTeacher: ArModel | null, rng: Rng, tauRange: [number, number] | null): Problem {
  const tau = new Float64Array(B);
  for (let b = 0; b < B; b++) tau[b] = drawTau(rng, tauRange);
  if (kind === 'noise-inversion') {
    const N = S - k;
    if (N < 1) throw new Error(`noise inversion needs sequences longer than k = ${k}, got ${S}`);
    const ar = arTeacher!;
    const { lower, upper } = noiseInversionIntervalsFlat(ar, seqs, B, S);
    const context = new Int32Array(B * N);
    const noise = new Float64Array(B * N * k);
    const targets = new Int32Array(B * N * k);
    for (let b = 0; b < B; b++) {
      context.set(seqs.subarray(b * S, b * S + N), b * N);
      for (let t = 0; t < N; t++) {
        for (let a = 0; a < k; a++) {
          const iv = b * (S - 1) + t + a; // interval of token t + a + 1
          const i = (b * N + t) * k + a;
          // Uniform inside [lower, upper); a zero-width interval (probability underflow) keeps its left end.
          const w = upper[iv] - lower[iv];
          noise[i] = Math.min(Math.max(lower[iv] + w * rng.uniform(), Number.MIN_VALUE), 1 - Number.EPSILON / 2);
          targets[i] = seqs[b * S + t + a + 1];
        }
      }
    }
    return { B, N, context, noise, tau, targets };
  }
  const N = S;
  const noise = new Float64Array(B * N * k);
  for (let i = 0; i < noise.length; i++) noise[i] = rng.uniformOpen();
  const context = seqs;
  let targets: Int32Array;
  if (kind === 'inverse-cdf') {
    if (k !== 1) throw new Error(`inverse-CDF targets are for k = 1, got k = ${k}`);
    targets = inverseCdfTargetsFlat(teacher as ArModel, context, B, N, noise, tau);
  } else {
    targets = selfForcingTargetsFlat(teacher as PflmModel, context, B, N, noise, tau, k / 2);
  }
  return { B, N, context, noise, tau, targets };
}

/** Per-slot cross-entropy and accuracy of the student on a problem (forward only); sums and counts so batches add. */
export function scoreProblem(student: PflmModel, p: Problem, k: number, acc: { loss: number[]; hit: number[]; n: number[] }): void {
  const V = student.V;
  const mask = student.config.maskIndex;
  const logits = stairForward(student, p.context, p.B, p.N, p.noise, p.tau, k, false).trace.logits;
  const R = p.B * p.N * k;
  for (let i = 0; i < R; i++) {
    const target = p.targets[i];
    if (target === mask) continue;
    const a = i % k;
    const off = i * V;
    let mx = -Infinity;
    let arg = 0;
    for (let v = 0; v < V; v++) {
      const x = logits[off + v];
      if (x > mx) { mx = x; arg = v; }
    }
    let sum = 0;
    for (let v = 0; v < V; v++) sum += Math.exp(logits[off + v] - mx);
    acc.loss[a] += Math.log(sum) + mx - logits[off + target];
    acc.hit[a] += arg === target ? 1 : 0;
    acc.n[a]++;
  }
}

export function scoreProblems(student: PflmModel, problems: Problem[], k: number): SlotStats {
  const acc = { loss: new Array<number>(k).fill(0), hit: new Array<number>(k).fill(0), n: new Array<number>(k).fill(0) };
  for (const p of problems) scoreProblem(student, p, k, acc);
  return {
    loss: acc.loss.map((s, a) => (acc.n[a] ? s / acc.n[a] : NaN)),
    acc: acc.hit.map((h, a) => (acc.n[a] ? h / acc.n[a] : NaN)),
  };
}

const fmtSlots = (xs: number[]): string => xs.map((x) => x.toFixed(3)).join('/');

/** Checks teacher, data and k against each other; returns the target kind and k to use. */
export function planStage(teacher: Model, vocab: { vocabSize: number; maskId: number }, wantK: number | undefined,
  targets: 'auto' | TargetKind, teacherName: string): { k: number; kind: TargetKind } {
  if (teacher.V !== vocab.vocabSize || teacher.config.maskIndex !== vocab.maskId) {
    throw new Error(`vocabulary mismatch: teacher ${teacherName} has V = ${teacher.V} ([MASK] ${teacher.config.maskIndex}), ` +
      `the data/tokenizer has V = ${vocab.vocabSize} ([MASK] ${vocab.maskId})`);
  }
  if (teacher.kind === 'ar') {
    const k = wantK ?? 1;
    if (targets === 'self-forcing') throw new Error('self-forcing targets need a PFLM teacher; an AR teacher gives k = 1 inverse-CDF targets');
    if (targets === 'noise-inversion') return { k, kind: 'noise-inversion' };
    if (k !== 1) throw new Error(`an AR teacher distils into k = 1 (inverse-CDF targets), got --k ${k}; continue with --k 2 from the k = 1 PFLM`);
    return { k: 1, kind: 'inverse-cdf' };
  }
  const tk = teacher.config.maxK;
  const k = wantK ?? 2 * tk;
  if (targets === 'inverse-cdf') throw new Error('inverse-CDF targets need an AR teacher');
  if (targets === 'noise-inversion') {
    if (k < tk) throw new Error(`student k = ${k} is smaller than its teacher's k = ${tk}`);
    return { k, kind: 'noise-inversion' };
  }
  if (k !== 2 * tk) throw new Error(`student k must be double its teacher's: teacher ${teacherName} has k = ${tk}, so k = ${2 * tk}, got ${k}`);
  return { k, kind: 'self-forcing' };
}

export async function distill(opts: DistillOptions): Promise<DistillResult> {
  // ---- inputs, all checked before the run folder is touched --------------------------------------------------
  const teacherLoaded = await loadModelSpec(opts.teacher, 'teacher');
  const teacher = teacherLoaded.model;
  const meta = readMeta(path.resolve(opts.data));
  const tokSrc = path.join(path.resolve(opts.data), meta.tokenizer);
  if (teacherLoaded.tokenizer) {
    const a = fs.readFileSync(teacherLoaded.tokenizer, 'utf8');
    const b = fs.readFileSync(tokSrc, 'utf8');
    if (a !== b) throw new Error(`the teacher's tokenizer (${teacherLoaded.tokenizer}) differs from the data's (${tokSrc})`);
  }
  const { k, kind } = planStage(teacher, meta, opts.k, opts.targets ?? 'auto', opts.teacher);
  const runDir = opts.runDir.replaceAll('{k}', String(k));
  let arTeacher: ArModel | null = null;
  let arTeacherFile: string | null = null;
  if (kind === 'noise-inversion') {
    if (teacher.kind === 'ar') { arTeacher = teacher as ArModel; arTeacherFile = teacherLoaded.file; }
    else {
      if (!opts.arTeacher) throw new Error('noise inversion from a PFLM teacher needs --ar-teacher (the AR model whose CDF inverts the data)');
      const l = await loadModelSpec(opts.arTeacher, 'AR teacher');
      if (l.model.kind !== 'ar') throw new Error(`--ar-teacher ${opts.arTeacher} is a ${l.model.kind} model, not AR`);
      planStage(l.model, meta, 1, 'auto', opts.arTeacher);
      arTeacher = l.model as ArModel;
      arTeacherFile = l.file;
    }
    if (opts.tau && (opts.tau[0] !== 1 || opts.tau[1] !== 1)) {
      throw new Error('noise inversion inverts the teacher at tau = 1; tau conditioning is not available with it');
    }
  }
  if (opts.tau) {
    const [lo, hi] = opts.tau;
    if (!(lo > 0 && hi >= lo && Number.isFinite(hi))) throw new Error(`--tau must be a range 0 < lo <= hi, got ${lo}:${hi}`);
  }
  const preset = getPreset(opts.preset ?? 'small');
  const optim = { ...distillSettings(preset, k), ...definedOnly(opts.optim ?? {}) };
  checkOptim(optim);
  if (kind === 'noise-inversion' && optim.seqLen <= k) throw new Error(`--seq-len must exceed k = ${k} for noise inversion`);
  const wanted: DistillConfig = {
    kind: 'distill', data: path.resolve(opts.data), dataTokens: meta.splits.train.tokens, teacher: path.resolve(teacherLoaded.file), arTeacher: arTeacherFile && path.resolve(arTeacherFile),
    k, targets: kind, tau: opts.tau ?? null, preset: opts.preset ?? 'small', optim, seed: opts.seed ?? DEFAULT_SEED,
  };
  const explicit: Record<string, unknown> = { ...definedOnly(opts.optim ?? {}) };
  if (opts.seed !== undefined) explicit.seed = opts.seed;
  if (opts.preset !== undefined) explicit.preset = opts.preset;
  explicit.teacher = wanted.teacher;
  explicit.k = k;
  explicit.targets = kind;
  explicit.data = wanted.data;
  explicit.dataTokens = wanted.dataTokens;
  explicit.tau = wanted.tau;
  const trainReader = new TokenReader(wanted.data, meta, 'train');
  const valReader = new TokenReader(wanted.data, meta, 'val');
  const { config, resuming } = openRun(runDir, wanted, explicit, Boolean(opts.fresh));
  const o = config.optim;
  const S = o.seqLen, B = o.batchSize;
  const sampler = new BatchSampler(trainReader, S, config.seed);
  fs.copyFileSync(tokSrc, path.join(runDir, TOKENIZER_FILE));

  // ---- held-out problems: fixed contexts, noise and targets --------------------------------------------------
  const heldRng = new Rng(config.seed).fork('held-out');
  const heldTau: [number, number] | null = config.tau
    ? (config.tau[0] <= 1 && 1 <= config.tau[1] ? [1, 1] : [Math.sqrt(config.tau[0] * config.tau[1]), Math.sqrt(config.tau[0] * config.tau[1])])
    : null;
  const heldOut = validationBatches(valReader, S, o.evalSeqs, B)
    .map((seqs) => makeProblem(seqs, seqs.length / S, S, k, config.targets, teacher, arTeacher, heldRng, heldTau));

  // ---- student, optimizer, state, loop -------------------------------------------------------------------------
  const { model: student, opt, state } = await startOrResume(runDir, resuming, o, sampler,
    (stored) => {
      if (stored.kind !== 'pflm' || stored.config.maxK !== k || stored.V !== teacher.V) {
        throw new Error(`${runDir}: checkpoint holds a ${stored.kind} model (k = ${stored.config.maxK}, ` +
          `V = ${stored.V}), expected a PFLM with k = ${k}, V = ${teacher.V}`);
      }
      return stored;
    },
    () => {
      const cfg: ModelConfig = { ...teacher.config, maxK: k, maxSeqLen: S };
      const fresh = initModel(cfg, 'pflm', config.seed) as PflmModel;
      initStudentFromTeacher(fresh, teacher);
      return fresh;
    },
    new Rng(config.seed).fork('noise').state());
  const rng = Rng.fromState(state.rng!);
  try {
    return await runLoop({
      runDir, resuming, optim: o, sampler, model: student, opt, state, label: `distill k=${k}`, quiet: opts.quiet,
      stopAtStep: opts.stopAtStep, metric: 'heldOut',
      evaluate: () => scoreProblems(student, heldOut, k),
      evalFields: (h) => ({ slotLoss: h.loss, slotAcc: h.acc }),
      step: (seqs, logging) => {
        const p = makeProblem(seqs, B, S, k, config.targets, teacher, arTeacher, rng, config.tau);
        const { loss, perSlot } = stairLossAndGrad(student, p.context, B, p.N, p.noise, p.tau, p.targets, opt.grads);
        // Training-batch accuracy costs one more forward, so only on logged steps (parameters not yet updated).
        const batchAcc = logging ? scoreProblems(student, [p], k).acc : null;
        return { loss, logFields: { slotLoss: perSlot, slotAcc: batchAcc } };
      },
      show: (h) => ({ val: h ? mean(h.loss) : null, extra: h ? `held-out acc ${fmtSlots(h.acc)}` : '' }),
      beforeSave: () => { state.rng = rng.state(); },
      result: (end): DistillResult => ({
        kind: 'distill', runDir, model: end.modelPath, tokenizer: end.tokenizerPath, k,
        targets: config.targets, params: student.layout.total, config: student.config, steps: state.step,
        completed: end.completed, tokens: sampler.tokensSeen(), wallSeconds: state.elapsed,
        heldOutStart: end.start, heldOut: end.last, backend: getBackend().name,
      }),
    });
  } finally {
    trainReader.close();
    valReader.close();
  }
}

function mean(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x));
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN;
}

export interface ChainOptions extends Omit<DistillOptions, 'runDir' | 'teacher' | 'k' | 'arTeacher'> {
  /** Run folder prefix: stage k runs in `${prefix}-k${k}`. */
  runPrefix: string;
  /** The AR teacher (model file or run folder) that stage 1 distils. */
  teacher: string;
  schedule: number[];
  /** Per-stage settings by k (override the preset's stage settings; `optim` applies to every stage). */
  perStage?: Record<number, Partial<OptimSettings>>;
}

/** Checks a schedule like 1,2,4: starts at 1 and doubles. */
export function checkSchedule(schedule: number[]): void {
  if (schedule.length === 0) throw new Error('--schedule is empty');
  if (schedule[0] !== 1) throw new Error(`--schedule must start at k = 1 (from the AR teacher), got ${schedule.join(',')}`);
  for (let i = 1; i < schedule.length; i++) {
    if (schedule[i] !== 2 * schedule[i - 1]) {
      throw new Error(`--schedule: each student k must be double its teacher's, got ${schedule[i - 1]} -> ${schedule[i]}`);
    }
  }
}

/** AR -> PFLM(k1) -> PFLM(k2) -> ...: each stage initialised from and taught by the previous one. A stage whose run
 * already finished is reused; an interrupted one resumes. */
export async function distillChain(opts: ChainOptions): Promise<DistillResult[]> {
  checkSchedule(opts.schedule);
  const first = await loadModelSpec(opts.teacher, 'teacher');
  if (first.model.kind !== 'ar') throw new Error(`--schedule starts from an AR teacher; ${opts.teacher} is a ${first.model.kind} model`);
  const results: DistillResult[] = [];
  let teacher = opts.teacher;
  for (const k of opts.schedule) {
    const runDir = `${opts.runPrefix}-k${k}`;
    const done = fs.existsSync(path.join(runDir, 'result.json'))
      ? (JSON.parse(fs.readFileSync(path.join(runDir, 'result.json'), 'utf8')) as DistillResult) : null;
    const optim = { ...(opts.optim ?? {}), ...(opts.perStage?.[k] ?? {}) };
    const wantSteps = optim.steps ?? distillSettings(getPreset(opts.preset ?? 'small'), k).steps;
    let r: DistillResult;
    if (done && done.completed && done.k === k && done.steps >= wantSteps && !opts.fresh) {
      r = done;
    } else {
      r = await distill({
        ...opts, runDir, teacher, k, optim,
        arTeacher: opts.targets === 'noise-inversion' ? opts.teacher : undefined,
      });
    }
    results.push(r);
    if (!r.completed) break;
    teacher = r.model;
  }
  return results;
}
