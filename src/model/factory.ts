// Creating models: random initialisation, building from named tensors (checkpoints), exporting the named tensors,
// and initialising a student from a teacher.
import type { FloatArray } from '../tensor/backend.ts';
import { Rng } from '../tensor/rng.ts';
import { ArModel } from './ar.ts';
import type { BaseModel } from './core.ts';
import { PflmModel } from './pflm.ts';
import { INV_FREQ_NAME, paramLayout, referenceNames } from './params.ts';
import type { DType, ModelKind } from './params.ts';
import type { ModelConfig, Tensor } from './types.ts';

export type Model = ArModel | PflmModel;
export type AnyModel<T extends FloatArray = Float32Array> = ArModel<T> | PflmModel<T>;

/** k the official PFLMs were trained up to; used when a PFLM's config does not say (maxK 0 or absent). */
export const DEFAULT_PFLM_MAX_K = 4;

export interface InitOptions {
  dtype?: DType;
  /** Standard deviation of the weight init (default 0.02, GPT-2). */
  std?: number;
}

function withDefaults(config: ModelConfig, kind: ModelKind): ModelConfig {
  const c = { ...config };
  if (c.maskIndex === undefined) c.maskIndex = c.vocabSize - 1;
  if (c.maxSeqLen === undefined) c.maxSeqLen = 0;
  if (kind === 'pflm' && !(c.maxK >= 1)) c.maxK = DEFAULT_PFLM_MAX_K;
  if (kind === 'ar' && c.maxK === undefined) c.maxK = 0;
  return c;
}

function construct<T extends FloatArray>(config: ModelConfig, kind: ModelKind, dtype: DType, params?: T, invFreq?: T): AnyModel<T> {
  return kind === 'ar'
    ? new ArModel<T>(config, { dtype, params, invFreq })
    : new PflmModel<T>(config, { dtype, params, invFreq });
}

/**
 * GPT-2-style random init, deterministic from the seed: weights of linear layers and the embedding ~ N(0, std),
 * the residual output projections (attn_out, mlp.2 of the blocks) ~ N(0, std / sqrt(2 * nBlocks)), norm weights 1,
 * biases 0. Tensors are drawn in reference order, so a PFLM and an AR model of the same config and seed share
 * their backbone.
 */
export function initModel(config: ModelConfig, kind: ModelKind, seed: number, opts: InitOptions & { dtype: 'float64' }): AnyModel<Float64Array>;
export function initModel(config: ModelConfig, kind: 'ar', seed: number, opts?: InitOptions & { dtype?: 'float32' }): ArModel;
export function initModel(config: ModelConfig, kind: 'pflm', seed: number, opts?: InitOptions & { dtype?: 'float32' }): PflmModel;
export function initModel(config: ModelConfig, kind: ModelKind, seed: number, opts?: InitOptions & { dtype?: 'float32' }): Model;
export function initModel(config: ModelConfig, kind: ModelKind, seed: number, opts: InitOptions = {}): AnyModel<FloatArray> {
  const c = withDefaults(config, kind);
  const std = opts.std ?? 0.02;
  if (!(std >= 0) || !Number.isFinite(std)) throw new Error(`initModel: std must be a finite number >= 0, got ${std}`);
  const m = construct<FloatArray>(c, kind, opts.dtype ?? 'float32');
  const rng = new Rng(seed);
  const residStd = std / Math.sqrt(2 * c.nBlocks);
  for (const e of m.layout.entries) {
    const view = m.params.subarray(e.offset, e.offset + e.size);
    const name = e.name;
    if (name.endsWith('.bias')) view.fill(0);
    else if (/norm\d?\.weight$|norm_final\.weight$/.test(name)) view.fill(1);
    else {
      const s = /^blocks\.\d+\.(attn_out|mlp\.2)\.weight$/.test(name) ? residStd : std;
      fillNormal(view, s, rng);
    }
  }
  return m;
}

/** N(0, std) into a, both outputs of each Box-Muller draw used (half the RNG and log/sqrt work of rng.normal(),
 * which matters for the 124M-parameter official architecture). */
function fillNormal(a: FloatArray, std: number, rng: Rng): void {
  for (let i = 0; i < a.length; i += 2) {
    const r = std * Math.sqrt(-2 * Math.log(rng.uniformOpen()));
    const th = 2 * Math.PI * rng.uniform();
    a[i] = r * Math.cos(th);
    if (i + 1 < a.length) a[i + 1] = r * Math.sin(th);
  }
}

function shapeStr(s: number[]): string {
  return `[${s.join(', ')}]`;
}

/**
 * A model from named tensors (reference names, e.g. a checkpoint's state dict without prefixes). A PFLM when
 * noise_encoder tensors are present. Every expected tensor must be there with its exact shape, nothing else may be.
 * A PFLM whose config has no maxK (0) gets DEFAULT_PFLM_MAX_K.
 */
export function buildModel(config: ModelConfig, tensors: Map<string, Tensor>, opts: { dtype: 'float64' }): AnyModel<Float64Array>;
export function buildModel(config: ModelConfig, tensors: Map<string, Tensor>, opts?: { dtype?: 'float32' }): Model;
export function buildModel(config: ModelConfig, tensors: Map<string, Tensor>, opts: { dtype?: DType } = {}): AnyModel<FloatArray> {
  if (!(tensors instanceof Map)) throw new Error('buildModel: tensors must be a Map<string, Tensor>');
  const kind: ModelKind = [...tensors.keys()].some((n) => n.startsWith('noise_encoder.')) ? 'pflm' : 'ar';
  const c = withDefaults(config, kind);
  const layout = paramLayout(c, kind);
  const expected = new Set(referenceNames(c, kind));
  const missing = [...expected].filter((n) => !tensors.has(n));
  const unexpected = [...tensors.keys()].filter((n) => !expected.has(n));
  const problems: string[] = [];
  if (missing.length) problems.push(`missing tensors: ${missing.join(', ')}`);
  if (unexpected.length) problems.push(`unexpected tensors: ${unexpected.join(', ')}`);
  const want = (name: string): number[] => {
    if (name === INV_FREQ_NAME) return [c.hiddenSize / c.nHeads / 2];
    return layout.byName.get(name)!.shape;
  };
  for (const [name, t] of tensors) {
    if (!expected.has(name)) continue;
    const data: unknown = t?.data;
    if (!t || !Array.isArray(t.shape) || !(data instanceof Float32Array || data instanceof Float64Array)) {
      problems.push(`${name}: not a tensor { shape, data: Float32Array }`);
      continue;
    }
    const w = want(name);
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.shape.length !== w.length || t.shape.some((d, i) => d !== w[i])) {
      problems.push(`${name}: shape ${shapeStr(t.shape)}, expected ${shapeStr(w)}`);
    } else if (t.data.length !== n) {
      problems.push(`${name}: data has ${t.data.length} elements, shape ${shapeStr(t.shape)} needs ${n}`);
    }
  }
  if (problems.length) {
    throw new Error(`buildModel (${kind}, V=${c.vocabSize}, D=${c.hiddenSize}, H=${c.nHeads}, blocks=${c.nBlocks}): ` +
      problems.join('; '));
  }
  const dtype = opts.dtype ?? 'float32';
  const m = construct<FloatArray>(c, kind, dtype);
  for (const e of layout.entries) m.params.set(tensors.get(e.name)!.data, e.offset);
  m.invFreq.set(tensors.get(INV_FREQ_NAME)!.data);
  return m;
}

/** All reference tensors in reference order, inv_freq included. Float32 models give views into the live
 * parameters (copy before mutating); float64 models give float32 copies. */
export function modelTensors(model: BaseModel<FloatArray>): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  const f32 = (a: FloatArray): Float32Array => (a instanceof Float32Array ? a : Float32Array.from(a));
  for (const name of referenceNames(model.config, model.kind)) {
    if (name === INV_FREQ_NAME) {
      out.set(name, { shape: [model.invFreq.length], data: f32(model.invFreq) });
      continue;
    }
    const e = model.layout.byName.get(name)!;
    out.set(name, { shape: e.shape.slice(), data: f32(model.params.subarray(e.offset, e.offset + e.size)) });
  }
  return out;
}

/** Copies every teacher tensor whose name and shape match a student tensor (inv_freq included); the rest of the
 * student (e.g. a new noise encoder) keeps its initialisation. Returns the names copied and the student's names
 * left as they were. */
export function initStudentFromTeacher(student: BaseModel<FloatArray>, teacher: BaseModel<FloatArray>):
  { copied: string[]; kept: string[] } {
  const copied: string[] = [];
  const kept: string[] = [];
  for (const e of student.layout.entries) {
    const t = teacher.layout.byName.get(e.name);
    if (t && t.shape.length === e.shape.length && t.shape.every((d, i) => d === e.shape[i])) {
      student.params.set(teacher.params.subarray(t.offset, t.offset + t.size), e.offset);
      copied.push(e.name);
    } else {
      kept.push(e.name);
    }
  }
  if (student.invFreq.length === teacher.invFreq.length) {
    student.invFreq.set(teacher.invFreq);
    copied.push(INV_FREQ_NAME);
  } else {
    kept.push(INV_FREQ_NAME);
  }
  return { copied, kept };
}
