// The state every model kind shares: config, flat parameters with named views, the RoPE buffer, a scratch workspace
// and the backend choice. The model math is generic over Float32Array (production) and Float64Array (gradient checks
// by finite differences, always on the TypeScript backend since kernels of the native addon are float32).
import type { Backend, FloatArray } from '../tensor/backend.ts';
import { getBackend } from '../tensor/select.ts';
import { tsBackend } from '../tensor/ts-backend.ts';
import { withChecks } from '../tensor/checked.ts';
import { alignedFloat32 } from '../tensor/native.ts';
import type { ModelConfig } from './types.ts';
import { checkConfig, paramLayout, paramViews, ropeInvFreq } from './params.ts';
import type { DType, ModelKind, ParamLayout, ParamViews } from './params.ts';

export type Alloc<T extends FloatArray> = (n: number) => T;

const checkedTs = withChecks(tsBackend);

/** Grow-only named scratch buffers. A buffer handed out is valid until the next request of the same name, so
 * training steps and decode steps reuse memory instead of allocating hundreds of MB per call. Contents are NOT
 * cleared: callers that accumulate must zero what they get. */
export class Workspace<T extends FloatArray> {
  private readonly bufs = new Map<string, T>();
  constructor(private readonly alloc: Alloc<T>) {}

  get(name: string, n: number): T {
    let b = this.bufs.get(name);
    if (!b || b.length < n) {
      // Headroom so slowly growing decode batches do not reallocate every step.
      const cap = b ? Math.max(n, Math.ceil(b.length * 1.5)) : n;
      b = this.alloc(cap);
      this.bufs.set(name, b);
    }
    return b.subarray(0, n) as T;
  }

  zeros(name: string, n: number): T {
    const b = this.get(name, n);
    b.fill(0);
    return b;
  }

  /** Drops every buffer (frees memory after a large batch). */
  clear(): void {
    this.bufs.clear();
  }
}

export abstract class BaseModel<T extends FloatArray = Float32Array> {
  abstract readonly kind: ModelKind;
  readonly config: ModelConfig;
  readonly dtype: DType;
  readonly layout: ParamLayout;
  /** All trainable parameters, reference order (see params.ts). */
  readonly params: T;
  readonly w: ParamViews<T>;
  /** rotary_emb.inv_freq [Dh/2]. */
  readonly invFreq: T;
  readonly ws: Workspace<T>;
  readonly alloc: Alloc<T>;
  readonly D: number;
  readonly H: number;
  readonly Dh: number;
  readonly V: number;

  protected constructor(kind: ModelKind, config: ModelConfig, dtype: DType, params: T | null, invFreq: T | null) {
    const { D, H, Dh, V } = checkConfig(config, kind);
    this.config = { ...config };
    this.dtype = dtype;
    // float32 buffers (parameters, workspaces, KV cache) start on a cache line: V8 hands out large arrays 16 bytes
    // past one, and then every 64-byte row load of the native kernels splits two lines (measured: a k=4 decode step
    // of the official architecture at batch 4 spent 38 ms in linear on the model's weights, 30 ms on aligned copies).
    this.alloc = (dtype === 'float64'
      ? (n: number) => new Float64Array(n)
      : (n: number) => alignedFloat32(n)) as unknown as Alloc<T>;
    this.layout = paramLayout(config, kind);
    this.params = params ?? this.alloc(this.layout.total);
    if (this.params.length !== this.layout.total) {
      throw new Error(`model: parameter buffer has ${this.params.length} elements, the layout needs ${this.layout.total}`);
    }
    this.w = paramViews(this.layout, this.params);
    this.invFreq = invFreq ?? (this.alloc(Dh / 2));
    if (!invFreq) this.invFreq.set(ropeInvFreq(Dh));
    if (this.invFreq.length !== Dh / 2) {
      throw new Error(`model: ${'rotary_emb.inv_freq'} has ${this.invFreq.length} elements, expected Dh/2 = ${Dh / 2}`);
    }
    this.ws = new Workspace(this.alloc);
    this.D = D; this.H = H; this.Dh = Dh; this.V = V;
  }

  /** The backend for this model's dtype: the process backend for float32, checked TypeScript for float64. */
  backend(): Backend {
    return this.dtype === 'float64' ? checkedTs : getBackend();
  }

  /** A zeroed gradient buffer with the parameter layout. */
  newGrads(): T {
    return this.alloc(this.layout.total);
  }
}
