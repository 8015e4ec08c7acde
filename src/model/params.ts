// Parameter layout: every trainable tensor lives in ONE flat buffer (llm.c style), in the reference (PyTorch
// state_dict) order, with named views pointed into it. The gradient buffer has the same layout, so the optimiser,
// gradient clipping and accumulation each touch one array. rotary_emb.inv_freq is a buffer, not a parameter: it has
// no gradient and no optimiser state, so it is kept outside the flat buffer but exported with the tensors.
import type { FloatArray } from '../tensor/backend.ts';
import type { ModelConfig } from './types.ts';

export type ModelKind = 'ar' | 'pflm';
export type DType = 'float32' | 'float64';

export const INV_FREQ_NAME = 'rotary_emb.inv_freq';

export interface ParamEntry {
  name: string;
  shape: number[];
  offset: number; // into the flat buffer
  size: number;
  /** Weight decay applies (weights of linear layers); norms, biases and embeddings are not decayed. */
  decay: boolean;
}

export interface ParamLayout {
  kind: ModelKind;
  entries: ParamEntry[];
  byName: Map<string, ParamEntry>;
  total: number;
  /** 1 where weight decay applies, per element of the flat buffer (the AdamW decayMask). Built on first use: a byte
   * per parameter (168 MB and ~0.4 s for the official PFLM) that only training needs. */
  readonly decayMask: Uint8Array;
}

/** Checks the config fields every model needs and returns the derived sizes. */
export function checkConfig(config: ModelConfig, kind: ModelKind): { D: number; H: number; Dh: number; V: number } {
  const c = config as Partial<ModelConfig> | null | undefined;
  if (!c || typeof c !== 'object') throw new Error(`model config must be an object, got ${String(c)}`);
  const int = (name: keyof ModelConfig, min: number): number => {
    const v = c[name];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
      throw new Error(`model config: ${name} must be an integer >= ${min}, got ${String(v)}`);
    }
    return v;
  };
  const V = int('vocabSize', 2);
  const D = int('hiddenSize', 2);
  const H = int('nHeads', 1);
  int('nBlocks', 1);
  int('maxSeqLen', 0);
  const maxK = int('maxK', 0);
  const mask = int('maskIndex', 0);
  if (mask >= V) throw new Error(`model config: maskIndex ${mask} is outside [0, vocabSize = ${V})`);
  if (D % H !== 0) throw new Error(`model config: hiddenSize ${D} is not divisible by nHeads ${H}`);
  const Dh = D / H;
  if (Dh % 2 !== 0) throw new Error(`model config: head dim hiddenSize/nHeads = ${Dh} must be even (RoPE halves)`);
  if (kind === 'pflm') {
    if (D % 2 !== 0) throw new Error(`model config: hiddenSize ${D} must be even for the noise encoder`);
    if (maxK < 1) throw new Error(`model config: a PFLM needs maxK >= 1, got ${maxK}`);
  } else if (kind !== 'ar') {
    throw new Error(`model kind must be 'ar' or 'pflm', got ${String(kind)}`);
  }
  return { D, H, Dh, V };
}

/** The reference tensor list (name, shape, decay) of a model, without inv_freq. */
function paramList(config: ModelConfig, kind: ModelKind): Array<[string, number[], boolean]> {
  const { D, V } = checkConfig(config, kind);
  const list: Array<[string, number[], boolean]> = [['vocab_embed.embedding', [V, D], false]];
  for (let i = 0; i < config.nBlocks; i++) {
    const p = `blocks.${i}.`;
    list.push(
      [p + 'norm1.weight', [D], false],
      [p + 'attn_qkv.weight', [3 * D, D], true],
      [p + 'attn_out.weight', [D, D], true],
      [p + 'norm2.weight', [D], false],
      [p + 'mlp.0.weight', [4 * D, D], true],
      [p + 'mlp.0.bias', [4 * D], false],
      [p + 'mlp.2.weight', [D, 4 * D], true],
      [p + 'mlp.2.bias', [D], false],
    );
  }
  list.push(
    ['output_layer.norm_final.weight', [D], false],
    ['output_layer.linear.weight', [V, D], true],
    ['output_layer.linear.bias', [V], false],
  );
  if (kind === 'pflm') {
    list.push(
      ['noise_encoder.combined_proj.weight', [D, 2 * D], true],
      ['noise_encoder.combined_proj.bias', [D], false],
      ['noise_encoder.norm.weight', [D], false],
      ['noise_encoder.norm.bias', [D], false],
      ['noise_encoder.mlp.0.weight', [4 * D, D], true],
      ['noise_encoder.mlp.0.bias', [4 * D], false],
      ['noise_encoder.mlp.2.weight', [D, 4 * D], true],
      ['noise_encoder.mlp.2.bias', [D], false],
    );
  }
  return list;
}

export function paramLayout(config: ModelConfig, kind: ModelKind): ParamLayout {
  const entries: ParamEntry[] = [];
  let offset = 0;
  for (const [name, shape, decay] of paramList(config, kind)) {
    const size = shape.reduce((a, b) => a * b, 1);
    entries.push({ name, shape, offset, size, decay });
    offset += size;
  }
  let mask: Uint8Array | null = null;
  return {
    kind, entries, byName: new Map(entries.map((e) => [e.name, e])), total: offset,
    get decayMask(): Uint8Array {
      if (!mask) {
        mask = new Uint8Array(offset);
        for (const e of entries) if (e.decay) mask.fill(1, e.offset, e.offset + e.size);
      }
      return mask;
    },
  };
}

/** Reference tensor names in order, inv_freq included (after the embedding, where the reference module puts it). */
export function referenceNames(config: ModelConfig, kind: ModelKind): string[] {
  const names = paramList(config, kind).map(([n]) => n);
  names.splice(1, 0, INV_FREQ_NAME);
  return names;
}

export interface BlockViews<T extends FloatArray> {
  norm1: T; // [D]
  qkv: T; // [3D, D]
  attnOut: T; // [D, D]
  norm2: T; // [D]
  fc1W: T; // [4D, D]
  fc1B: T; // [4D]
  fc2W: T; // [D, 4D]
  fc2B: T; // [D]
}

export interface NoiseEncoderViews<T extends FloatArray> {
  projW: T; // [D, 2D]
  projB: T; // [D]
  normW: T; // [D]
  normB: T; // [D]
  fc1W: T; // [4D, D]
  fc1B: T; // [4D]
  fc2W: T; // [D, 4D]
  fc2B: T; // [D]
}

export interface ParamViews<T extends FloatArray> {
  embed: T; // [V, D]
  blocks: BlockViews<T>[];
  normFinal: T; // [D]
  outW: T; // [V, D]
  outB: T; // [V]
  noise: NoiseEncoderViews<T> | null;
}

/** Structured views into a flat buffer of the layout (the parameters, or the gradients). */
export function paramViews<T extends FloatArray>(layout: ParamLayout, buf: T): ParamViews<T> {
  if (buf.length !== layout.total) {
    throw new Error(`paramViews: buffer has ${buf.length} elements, the layout needs ${layout.total}`);
  }
  const v = (name: string): T => {
    const e = layout.byName.get(name);
    if (!e) throw new Error(`paramViews: no tensor '${name}' in the layout`);
    return buf.subarray(e.offset, e.offset + e.size) as T;
  };
  const blocks: BlockViews<T>[] = [];
  for (let i = 0; layout.byName.has(`blocks.${i}.norm1.weight`); i++) {
    const p = `blocks.${i}.`;
    blocks.push({
      norm1: v(p + 'norm1.weight'), qkv: v(p + 'attn_qkv.weight'), attnOut: v(p + 'attn_out.weight'),
      norm2: v(p + 'norm2.weight'), fc1W: v(p + 'mlp.0.weight'), fc1B: v(p + 'mlp.0.bias'),
      fc2W: v(p + 'mlp.2.weight'), fc2B: v(p + 'mlp.2.bias'),
    });
  }
  const noise = layout.kind === 'pflm' ? {
    projW: v('noise_encoder.combined_proj.weight'), projB: v('noise_encoder.combined_proj.bias'),
    normW: v('noise_encoder.norm.weight'), normB: v('noise_encoder.norm.bias'),
    fc1W: v('noise_encoder.mlp.0.weight'), fc1B: v('noise_encoder.mlp.0.bias'),
    fc2W: v('noise_encoder.mlp.2.weight'), fc2B: v('noise_encoder.mlp.2.bias'),
  } : null;
  return {
    embed: v('vocab_embed.embedding'), blocks, normFinal: v('output_layer.norm_final.weight'),
    outW: v('output_layer.linear.weight'), outB: v('output_layer.linear.bias'), noise,
  };
}

/** RoPE inverse frequencies 1 / 10000^(2i/Dh), rounded step by step in float32 as the reference computes them
 * (arange(0, Dh, 2).float() / Dh, then the power, then the reciprocal). Checkpoints carry their own values. */
export function ropeInvFreq(headDim: number): Float32Array {
  const out = new Float32Array(headDim / 2);
  for (let i = 0; i < out.length; i++) {
    const e = Math.fround((2 * i) / headDim);
    out[i] = Math.fround(1 / Math.fround(Math.pow(10000, e)));
  }
  return out;
}
