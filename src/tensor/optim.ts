// AdamW over one flat Float32Array holding every parameter (llm.c layout): moments m and v are flat buffers of the
// same length, so one backend call updates the whole model. Gradient clipping does not rewrite the gradients; it
// passes a scale to the update (backend.adamw's gradScale).
import type { Backend } from './backend.ts';
import { getBackend } from './select.ts';

export interface AdamWOptions {
  beta1?: number; // default 0.9
  beta2?: number; // default 0.999
  eps?: number; // default 1e-8
  weightDecay?: number; // default 0
  /** 1 = apply weight decay to that parameter, 0 = not; null decays everything. Length = params.length. */
  decayMask?: Uint8Array | null;
  backend?: Backend;
}

export interface AdamWState {
  m: Float32Array;
  v: Float32Array;
  step: number;
}

/** L2 norm of a flat gradient buffer (float64 accumulation via the backend). */
export function gradNorm(grads: Float32Array, backend: Backend = getBackend()): number {
  return Math.sqrt(backend.sumSquares(grads));
}

/** The factor that brings a gradient of norm `norm` down to `maxNorm` (1 when already within it). */
export function clipScale(norm: number, maxNorm: number): number {
  if (!(maxNorm > 0)) throw new Error(`clipScale: maxNorm must be > 0, got ${maxNorm}`);
  return norm > maxNorm ? maxNorm / norm : 1;
}

export class AdamW {
  readonly params: Float32Array;
  readonly grads: Float32Array;
  readonly m: Float32Array;
  readonly v: Float32Array;
  /** Number of updates applied so far (the next update uses t + 1 for bias correction). */
  t = 0;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  weightDecay: number;
  readonly decayMask: Uint8Array | null;
  private readonly backend: Backend;
  private pendingScale = 1;

  constructor(params: Float32Array, grads: Float32Array, opts: AdamWOptions = {}) {
    if (!(params instanceof Float32Array) || !(grads instanceof Float32Array)) {
      throw new Error('AdamW: params and grads must be Float32Arrays');
    }
    if (grads.length !== params.length) {
      throw new Error(`AdamW: grads has ${grads.length} elements, params has ${params.length}`);
    }
    const mask = opts.decayMask ?? null;
    if (mask !== null && mask.length !== params.length) {
      throw new Error(`AdamW: decayMask has ${mask.length} elements, params has ${params.length}`);
    }
    this.params = params;
    this.grads = grads;
    this.m = new Float32Array(params.length);
    this.v = new Float32Array(params.length);
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0;
    this.decayMask = mask;
    this.backend = opts.backend ?? getBackend();
  }

  /** Computes the gradient norm and arranges for the next step() to scale gradients so their norm is at most
   * maxNorm. Returns the norm before clipping. A non-finite norm is returned as is (and no scale is set): the caller
   * should then skip step() (and zero the gradients) rather than poison the moments. */
  clipGradNorm(maxNorm: number): number {
    const norm = gradNorm(this.grads, this.backend);
    this.pendingScale = Number.isFinite(norm) ? clipScale(norm, maxNorm) : 1;
    return norm;
  }

  /** One AdamW update at learning rate lr; consumes the scale set by clipGradNorm (if any). */
  step(lr: number): void {
    if (!Number.isFinite(lr) || lr < 0) throw new Error(`AdamW.step: lr must be a finite number >= 0, got ${lr}`);
    this.t += 1;
    this.backend.adamw(this.params, this.grads, this.m, this.v, {
      lr, beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay, step: this.t,
      gradScale: this.pendingScale, decayMask: this.decayMask,
    });
    this.pendingScale = 1;
  }

  /** Copies of the moments and the step count, for checkpoints. */
  state(): AdamWState {
    return { m: this.m.slice(), v: this.v.slice(), step: this.t };
  }

  load(state: AdamWState): void {
    if (!(state.m instanceof Float32Array) || !(state.v instanceof Float32Array)) {
      throw new Error('AdamW.load: m and v must be Float32Arrays');
    }
    if (state.m.length !== this.m.length || state.v.length !== this.v.length) {
      throw new Error(`AdamW.load: state has m ${state.m.length} / v ${state.v.length} elements, ` +
        `optimizer has ${this.m.length} parameters`);
    }
    if (!Number.isSafeInteger(state.step) || state.step < 0) {
      throw new Error(`AdamW.load: step must be an integer >= 0, got ${String(state.step)}`);
    }
    this.m.set(state.m);
    this.v.set(state.v);
    this.t = state.step;
    this.pendingScale = 1;
  }
}

/** Decay mask for a flat buffer: 1 everywhere except the given [start, end) ranges (norm weights, biases,
 * embeddings, ... whichever the caller excludes). */
export function decayMaskExcept(n: number, noDecay: ReadonlyArray<readonly [number, number]>): Uint8Array {
  const mask = new Uint8Array(n).fill(1);
  for (const [a, b] of noDecay) {
    if (!Number.isInteger(a) || !Number.isInteger(b) || a < 0 || b > n || a > b) {
      throw new Error(`decayMaskExcept: range [${a}, ${b}) is not within [0, ${n})`);
    }
    mask.fill(0, a, b);
  }
  return mask;
}

export interface LrSchedule {
  peak: number; // learning rate at the end of warm-up
  warmup: number; // steps of linear warm-up
  total: number; // step at which the cosine reaches the floor
  floor: number; // final learning rate (absolute), kept after `total`
}

/** Linear warm-up from peak/warmup (step 1) to peak (step warmup), then cosine decay to floor at step total.
 * Steps count from 1 like AdamW's. */
export function learningRate(step: number, s: LrSchedule): number {
  if (!Number.isInteger(step) || step < 1) throw new Error(`learningRate: step must be an integer >= 1, got ${step}`);
  if (!(s.warmup >= 0) || !(s.total >= s.warmup) || !(s.peak >= 0) || !(s.floor >= 0) || s.floor > s.peak) {
    throw new Error(`learningRate: invalid schedule ${JSON.stringify(s)} (need 0 <= warmup <= total, 0 <= floor <= peak)`);
  }
  if (step <= s.warmup) return (s.peak * step) / s.warmup;
  if (step >= s.total) return s.floor;
  const progress = (step - s.warmup) / (s.total - s.warmup);
  return s.floor + 0.5 * (s.peak - s.floor) * (1 + Math.cos(Math.PI * progress));
}
