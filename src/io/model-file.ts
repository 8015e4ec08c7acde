// Loading and saving whole models. A file is safetensors (ours, with the config in __metadata__, or foreign without
// it) or a torch.save checkpoint (official Lightning .ckpt, bare state dict). Without stored config the model is
// inferred from tensor shapes the way the official loader does it.
import { open } from 'node:fs/promises';
import { extname } from 'node:path';
import type { ModelConfig, Tensor } from '../model/types.ts';
import { buildModel, DEFAULT_PFLM_MAX_K, modelTensors, type Model } from '../model/factory.ts';
import { ArModel } from '../model/ar.ts';
import { PflmModel } from '../model/pflm.ts';
import { INV_FREQ_NAME, paramLayout, type ModelKind } from '../model/params.ts';
import { readCheckpoint } from './ckpt.ts';
import { readSafetensorsFile, readSafetensorsInto, writeSafetensors } from './safetensors.ts';
import { alignedFloat32 } from '../tensor/native.ts';

/** __metadata__ key holding the JSON ModelConfig; kept stable so files written by any version load. */
export const CONFIG_METADATA_KEY = 'kforce_config';
export const KIND_METADATA_KEY = 'kforce_kind';

export interface LoadModelOptions {
  /** [MASK] token id; default: stored config, else vocabSize - 1 (OpenWebText; LM1B's bert vocabulary uses 103). */
  maskIndex?: number;
  /** Largest k of a PFLM; default: stored config, else DEFAULT_PFLM_MAX_K (4). Ignored for AR models. */
  maxK?: number;
  /** Context length trained at (informational); default: stored config, else 0 (unknown). */
  maxSeqLen?: number;
}

export interface ModelFileContents {
  format: 'safetensors' | 'torch';
  tensors: Map<string, Tensor>;
  metadata: Record<string, string>;
}

export interface SaveModelOptions {
  /** F32 (default) or F16 (half the size; weights are rounded to float16). */
  dtype?: 'F32' | 'F16';
  /** Extra __metadata__ entries (strings). The config keys are always written by saveModel. */
  metadata?: Record<string, string>;
}

async function looksLikeZip(path: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw new Error(`loadModel ${path}: cannot open: ${(e as Error).message}`);
  }
  try {
    const b = new Uint8Array(4);
    const { bytesRead } = await fh.read(b, 0, 4, 0);
    return bytesRead === 4 && b[0] === 0x50 && b[1] === 0x4b && b[2] === 0x03 && b[3] === 0x04;
  } finally {
    await fh.close();
  }
}

/** Tensors (float32, names without Lightning prefixes) and metadata of a model file of either format. */
/** The extension decides when it is one we know; otherwise the magic bytes (torch zips start with PK\x03\x04). */
async function isTorchFile(path: string): Promise<boolean> {
  const ext = extname(path).toLowerCase();
  if (ext === '.safetensors') return false;
  if (['.ckpt', '.pt', '.pth', '.bin'].includes(ext)) return true;
  return looksLikeZip(path);
}

export async function readModelFile(path: string): Promise<ModelFileContents> {
  if (await isTorchFile(path)) {
    const c = await readCheckpoint(path);
    return { format: 'torch', tensors: c.tensors, metadata: {} };
  }
  const s = await readSafetensorsFile(path);
  return { format: 'safetensors', tensors: s.tensors, metadata: s.metadata };
}

function storedConfig(path: string, metadata: Record<string, string>): Partial<ModelConfig> {
  const text = metadata[CONFIG_METADATA_KEY];
  if (text === undefined) return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`loadModel ${path}: metadata ${CONFIG_METADATA_KEY} is not valid JSON: ${(e as Error).message}`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) {
    throw new Error(`loadModel ${path}: metadata ${CONFIG_METADATA_KEY} is not a JSON object`);
  }
  const out: Partial<ModelConfig> = {};
  const o = v as Record<string, unknown>;
  for (const k of ['vocabSize', 'hiddenSize', 'nHeads', 'nBlocks', 'maskIndex', 'maxK', 'maxSeqLen'] as const) {
    if (o[k] === undefined) continue;
    if (!Number.isSafeInteger(o[k]) || (o[k] as number) < 0) {
      throw new Error(`loadModel ${path}: metadata ${CONFIG_METADATA_KEY}.${k} must be a non-negative integer, got ` +
        `${JSON.stringify(o[k])}`);
    }
    out[k] = o[k] as number;
  }
  return out;
}

/**
 * The config implied by tensor shapes, as the official loader infers it: V, D from vocab_embed.embedding [V, D];
 * nBlocks = largest block index + 1; Dh = 2 * len(rotary_emb.inv_freq); H = D / Dh. maskIndex defaults to V - 1,
 * maxK to DEFAULT_PFLM_MAX_K for a PFLM (noise_encoder tensors present) and 0 for an AR model.
 */
export function inferConfig(tensors: Map<string, { shape: number[] }>, opts: LoadModelOptions = {},
  where = 'inferConfig'): ModelConfig {
  const emb = tensors.get('vocab_embed.embedding');
  if (!emb || emb.shape.length !== 2) {
    const names = [...tensors.keys()].slice(0, 8).join(', ');
    throw new Error(`${where}: cannot infer the model: no 2-D vocab_embed.embedding tensor ` +
      `(${emb ? `shape [${emb.shape.join(', ')}]` : `tensors: ${names}${tensors.size > 8 ? ', ...' : ''}`})`);
  }
  const [V, D] = emb.shape;
  let maxBlock = -1;
  for (const n of tensors.keys()) {
    const m = /^blocks\.(\d+)\./.exec(n);
    if (m) maxBlock = Math.max(maxBlock, Number(m[1]));
  }
  if (maxBlock < 0) throw new Error(`${where}: cannot infer the model: no blocks.{i}.* tensors`);
  const inv = tensors.get('rotary_emb.inv_freq');
  if (!inv || inv.shape.length !== 1 || inv.shape[0] < 1) {
    throw new Error(`${where}: cannot infer the head count: rotary_emb.inv_freq is ` +
      `${inv ? `of shape [${inv.shape.join(', ')}]` : 'missing'} (expected [Dh/2])`);
  }
  const Dh = 2 * inv.shape[0];
  if (D % Dh !== 0) {
    throw new Error(`${where}: hidden size ${D} is not a multiple of the head dim ${Dh} (2 * len(rotary_emb.inv_freq))`);
  }
  const pflm = [...tensors.keys()].some((n) => n.startsWith('noise_encoder.'));
  return {
    vocabSize: V,
    hiddenSize: D,
    nHeads: D / Dh,
    nBlocks: maxBlock + 1,
    maskIndex: opts.maskIndex ?? V - 1,
    maxK: pflm ? (opts.maxK ?? DEFAULT_PFLM_MAX_K) : 0,
    maxSeqLen: opts.maxSeqLen ?? 0,
  };
}

/** Stored config + options + shapes -> the model's config; refuses a stored config that contradicts the tensors. */
function resolveConfig(path: string, shapes: Map<string, { shape: number[] }>, metadata: Record<string, string>,
  opts: LoadModelOptions): ModelConfig {
  const stored = storedConfig(path, metadata);
  const config = inferConfig(shapes, {
    maskIndex: opts.maskIndex ?? stored.maskIndex,
    maxK: opts.maxK ?? stored.maxK,
    maxSeqLen: opts.maxSeqLen ?? stored.maxSeqLen,
  }, `loadModel ${path}`);
  // A stored config that disagrees with the tensors means a damaged or hand-edited file.
  for (const k of ['vocabSize', 'hiddenSize', 'nHeads', 'nBlocks'] as const) {
    if (stored[k] !== undefined && stored[k] !== config[k]) {
      throw new Error(`loadModel ${path}: metadata ${CONFIG_METADATA_KEY}.${k} = ${stored[k]} but the tensors give ${config[k]}`);
    }
  }
  if (!Number.isSafeInteger(config.maskIndex) || config.maskIndex < 0 || config.maskIndex >= config.vocabSize) {
    throw new Error(`loadModel ${path}: maskIndex ${config.maskIndex} is outside [0, ${config.vocabSize})`);
  }
  return config;
}

function kindOf(names: Iterable<string>): ModelKind {
  for (const n of names) if (n.startsWith('noise_encoder.')) return 'pflm';
  return 'ar';
}

/** Loads a safetensors model by reading every tensor straight into the model's flat parameter buffer: one copy of
 * the weights in memory and no second pass over them (fresh memory is slow to touch on these machines). */
async function loadSafetensorsModel(path: string, opts: LoadModelOptions): Promise<Model> {
  // Filled by the header callback (TypeScript cannot see assignments inside it, hence one mutable record).
  const built: { config?: ModelConfig; kind?: ModelKind; params?: Float32Array; invFreq?: Float32Array } = {};
  await readSafetensorsInto(path, (header) => {
    const shapes = new Map(header.entries.map((e) => [e.name, { shape: e.shape }]));
    const config = resolveConfig(path, shapes, header.metadata, opts);
    const kind = kindOf(shapes.keys());
    let layout;
    try {
      layout = paramLayout(config, kind);
    } catch (e) {
      throw new Error(`loadModel ${path}: ${(e as Error).message}`);
    }
    const want = new Map(layout.entries.map((e) => [e.name, e.shape]));
    want.set(INV_FREQ_NAME, [config.hiddenSize / config.nHeads / 2]);
    const problems: string[] = [];
    const missing = [...want.keys()].filter((n) => !shapes.has(n));
    const unexpected = [...shapes.keys()].filter((n) => !want.has(n));
    if (missing.length) problems.push(`missing tensors: ${missing.join(', ')}`);
    if (unexpected.length) problems.push(`unexpected tensors: ${unexpected.join(', ')}`);
    for (const [name, { shape }] of shapes) {
      const w = want.get(name);
      if (w && (w.length !== shape.length || w.some((d, i) => d !== shape[i]))) {
        problems.push(`${name}: shape [${shape.join(', ')}], expected [${w.join(', ')}]`);
      }
    }
    if (problems.length) {
      throw new Error(`loadModel ${path} (${kind}, V=${config.vocabSize}, D=${config.hiddenSize}, H=${config.nHeads}, ` +
        `blocks=${config.nBlocks}): ${problems.join('; ')}`);
    }
    const params = alignedFloat32(layout.total); // cache-line aligned for the native kernels (see model/core.ts)
    const invFreq = new Float32Array(config.hiddenSize / config.nHeads / 2);
    Object.assign(built, { config, kind, params, invFreq });
    const at = layout.byName;
    return (e) => {
      if (e.name === INV_FREQ_NAME) return invFreq;
      const p = at.get(e.name)!;
      return params.subarray(p.offset, p.offset + p.size);
    };
  });
  const { config, kind, params, invFreq } = built as Required<typeof built>;
  return kind === 'pflm' ? new PflmModel(config, { params, invFreq }) : new ArModel(config, { params, invFreq });
}

/**
 * Loads a model from .safetensors (config from metadata when present) or a PyTorch .ckpt/.pt (config inferred from
 * shapes). An AR model unless noise_encoder tensors are present (then a PFLM). Options override stored values.
 * Errors name the file and every missing, unexpected or mis-shaped tensor.
 */
export async function loadModel(path: string, opts: LoadModelOptions = {}): Promise<Model> {
  if (!(await isTorchFile(path))) return loadSafetensorsModel(path, opts);
  const file = await readCheckpoint(path);
  const config = resolveConfig(path, file.tensors, {}, opts);
  try {
    return buildModel(config, file.tensors) as Model;
  } catch (e) {
    throw new Error(`loadModel ${path}: ${(e as Error).message}`);
  }
}

/** Writes a model as safetensors with its config (and kind) in __metadata__, atomically. */
export async function saveModel(path: string, model: Model, opts: SaveModelOptions = {}): Promise<void> {
  const metadata: Record<string, string> = {
    format: 'pt',
    ...(opts.metadata ?? {}),
    [CONFIG_METADATA_KEY]: JSON.stringify(model.config),
    [KIND_METADATA_KEY]: model.kind,
  };
  await writeSafetensors(path, modelTensors(model), metadata, { dtype: opts.dtype ?? 'F32' });
}
