// PyTorch checkpoint import (.ckpt/.pt written by torch.save: a zip holding <folder>/data.pkl and the raw storages
// <folder>/data/<key>). Lightning checkpoints keep the model under `state_dict` with a `backbone.` prefix; bare state
// dicts (with or without a DDP `module.` prefix) and one-level wrappers ({ model: state_dict }) load too. Every
// tensor comes back as a contiguous float32 copy (half, bfloat16, double and integer tensors are converted).
import { open } from 'node:fs/promises';
import type { Tensor } from '../model/types.ts';
import { decodeToFloat32, ELEMENT_BYTES } from './dtypes.ts';
import { ZipReader } from './zip.ts';
import { describePickled, isTensorRef, unpickleTorch, UnsupportedTensor, type TorchTensorRef } from './torch-pickle.ts';

export interface TorchArchive {
  path: string;
  /** The unpickled object: Maps for dicts, arrays for lists/tuples, TorchTensorRef for tensors. */
  root: unknown;
  /** Float32 contiguous copy of a referenced tensor; `name` only labels errors. */
  tensor(ref: TorchTensorRef, name: string): Promise<Tensor>;
  /** Drops the cached bytes of a tensor's storage (storages stay cached so views of one storage read it once). */
  release(ref: TorchTensorRef): void;
  close(): Promise<void>;
}

export interface CheckpointContents {
  tensors: Map<string, Tensor>;
  /** Where the state dict was found: 'state_dict' (Lightning), 'root' (bare state dict) or the wrapper key. */
  source: string;
  /** The prefix removed from every kept name ('backbone.', 'module.' or ''). */
  strippedPrefix: string;
  /** Entries of the state dict left out because they lack the prefix (e.g. a Lightning module's other buffers). */
  dropped: string[];
}

export interface ReadCheckpointOptions {
  /** Keep only state-dict entries with this prefix and strip it. Default: 'backbone.' when any entry has it, else
   * 'module.' when every entry has it, else ''. */
  prefix?: string;
}

/** Checks the first bytes so a wrong file type gets a message that says what the file is. */
async function sniff(path: string): Promise<void> {
  let head: Uint8Array;
  try {
    const fh = await open(path, 'r');
    try {
      head = new Uint8Array(8);
      const { bytesRead } = await fh.read(head, 0, 8, 0);
      head = head.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch (e) {
    throw new Error(`checkpoint ${path}: cannot open: ${(e as Error).message}`);
  }
  if (head.length >= 2 && head[0] === 0x50 && head[1] === 0x4b) return;
  if (head[0] === 0x80) {
    throw new Error(`checkpoint ${path}: not a zip archive: it is a bare pickle (legacy torch.save format before ` +
      'PyTorch 1.6); re-save it with a current torch.save');
  }
  if (head.length === 8 && head[7] === 0 && head[6] === 0) {
    throw new Error(`checkpoint ${path}: not a zip archive (a safetensors file? load it with readSafetensors)`);
  }
  throw new Error(`checkpoint ${path}: not a zip archive, so not a torch.save checkpoint`);
}

function isContiguous(shape: number[], stride: number[]): boolean {
  let expect = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expect) return false;
    expect *= shape[d];
  }
  return true;
}

/** Gathers a strided view of a storage into a contiguous float32 array. */
function gather(path: string, name: string, ref: TorchTensorRef, bytes: Uint8Array): Tensor {
  const type = ref.dtype.type;
  if (type === null) {
    throw new Error(`checkpoint ${path}: tensor '${name}' has type ${ref.dtype.qualname}, which cannot be imported`);
  }
  const { shape, stride, offset } = ref;
  const numel = shape.reduce((a, b) => a * b, 1);
  if (numel === 0) return { shape: [...shape], data: new Float32Array(0) };
  const available = Math.floor(bytes.length / ELEMENT_BYTES[type]);
  let last = offset;
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] < 0 || stride[d] < 0) {
      throw new Error(`checkpoint ${path}: tensor '${name}' has negative size or stride (${shape} / ${stride})`);
    }
    last += (shape[d] - 1) * stride[d];
  }
  if (last >= available) {
    throw new Error(`checkpoint ${path}: tensor '${name}' (shape [${shape}], stride [${stride}], offset ${offset}) ` +
      `reaches element ${last} of storage '${ref.storage.key}', which holds ${available}`);
  }
  const elem = ELEMENT_BYTES[type];
  if (isContiguous(shape, stride)) {
    return { shape: [...shape], data: decodeToFloat32(bytes, offset * elem, numel, type) };
  }
  const span = decodeToFloat32(bytes, offset * elem, last - offset + 1, type);
  const out = new Float32Array(numel);
  const nd = shape.length;
  const idx = new Array<number>(nd).fill(0);
  let src = 0;
  for (let i = 0; i < numel; i++) {
    out[i] = span[src];
    for (let d = nd - 1; d >= 0; d--) {
      idx[d]++;
      src += stride[d];
      if (idx[d] < shape[d]) break;
      src -= stride[d] * shape[d];
      idx[d] = 0;
    }
  }
  return { shape: [...shape], data: out };
}

/** Opens a torch.save archive and unpickles its data.pkl (storages are read only when a tensor is requested). */
export async function openTorchArchive(path: string): Promise<TorchArchive> {
  await sniff(path);
  let zip: ZipReader;
  try {
    zip = await ZipReader.open(path);
  } catch (e) {
    throw new Error(`checkpoint ${(e as Error).message}`);
  }
  try {
    // torch.save names the top folder after the file (or 'archive'); accept any single folder.
    const pkls = [...zip.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pkls.length === 0) {
      const some = [...zip.entries.keys()].slice(0, 5).join(', ');
      throw new Error(`checkpoint ${path}: missing data.pkl: a zip archive but not a torch.save checkpoint ` +
        `(entries: ${some || 'none'})`);
    }
    if (pkls.length > 1) throw new Error(`checkpoint ${path}: several data.pkl entries (${pkls.join(', ')})`);
    const folder = pkls[0].slice(0, -'data.pkl'.length);
    const order = zip.entries.get(`${folder}byteorder`);
    if (order) {
      const text = new TextDecoder().decode(await zip.read(order.name)).trim();
      if (text !== 'little') throw new Error(`checkpoint ${path}: byteorder '${text}' is not supported (little only)`);
    }
    let pkl: Uint8Array;
    try {
      pkl = await zip.read(pkls[0]);
    } catch (e) {
      throw new Error(`checkpoint ${(e as Error).message}`);
    }
    const root = unpickleTorch(pkl, `checkpoint ${path}: ${pkls[0]}`);
    const cache = new Map<string, Uint8Array>();
    return {
      path,
      root,
      async tensor(ref, name) {
        const key = ref.storage.key;
        let bytes = cache.get(key);
        if (!bytes) {
          const entry = `${folder}data/${key}`;
          try {
            bytes = await zip.read(entry);
          } catch (e) {
            throw new Error(`checkpoint ${path}: storage of tensor '${name}': ${(e as Error).message}`);
          }
          const st = ref.storage.storageType.type;
          const declared = st === null ? 0 : ref.storage.numel * ELEMENT_BYTES[st];
          if (bytes.length < declared) {
            throw new Error(`checkpoint ${path}: storage ${entry} has ${bytes.length} bytes, the pickle declares ` +
              `${declared} (truncated?)`);
          }
          cache.set(key, bytes);
        }
        return gather(path, name, ref, bytes);
      },
      release(ref) {
        cache.delete(ref.storage.key);
      },
      async close() {
        cache.clear();
        await zip.close();
      },
    };
  } catch (e) {
    await zip.close();
    throw e;
  }
}

function tensorCount(m: Map<unknown, unknown>): number {
  let n = 0;
  for (const v of m.values()) if (isTensorRef(v)) n++;
  return n;
}

/** Finds the state dict inside a checkpoint's root object. */
function findStateDict(path: string, root: unknown): { sd: Map<unknown, unknown>; source: string } {
  if (!(root instanceof Map)) {
    throw new Error(`checkpoint ${path}: no tensors found: the top-level object is ${describePickled(root)}, not a dict`);
  }
  const sd = root.get('state_dict');
  if (sd instanceof Map && tensorCount(sd) > 0) return { sd, source: 'state_dict' };
  if (tensorCount(root) > 0) return { sd: root, source: 'root' };
  const candidates = [...root.entries()].filter(([, v]) => v instanceof Map && tensorCount(v) > 0);
  const preferred = ['model', 'model_state_dict', 'module', 'net', 'state_dict'];
  const pick = candidates.length === 1 ? candidates[0]
    : candidates.find(([k]) => preferred.includes(String(k)));
  if (pick) return { sd: pick[1] as Map<unknown, unknown>, source: String(pick[0]) };
  const keys = [...root.keys()].map(String);
  throw new Error(`checkpoint ${path}: no tensors found: expected a Lightning checkpoint ('state_dict') or a state ` +
    `dict; top-level keys are [${keys.slice(0, 20).join(', ')}${keys.length > 20 ? ', ...' : ''}]` +
    (candidates.length > 1 ? `; several dicts hold tensors: ${candidates.map(([k]) => String(k)).join(', ')}` : ''));
}

/**
 * Reads the model tensors of a checkpoint: the Lightning `state_dict` (keys `backbone.*`, prefix stripped), a bare
 * state dict, or a one-level wrapper. Throws naming the entry when a kept value is not a tensor.
 */
export async function readCheckpoint(path: string, opts: ReadCheckpointOptions = {}): Promise<CheckpointContents> {
  const archive = await openTorchArchive(path);
  try {
    const { sd, source } = findStateDict(path, archive.root);
    const names = [...sd.keys()].map(String);
    let prefix = opts.prefix;
    if (prefix === undefined) {
      if (names.some((n) => n.startsWith('backbone.'))) prefix = 'backbone.';
      else if (names.length > 0 && names.every((n) => n.startsWith('module.'))) prefix = 'module.';
      else prefix = '';
    }
    const kept = [...sd.entries()].filter(([k]) => String(k).startsWith(prefix!));
    const dropped = names.filter((n) => !n.startsWith(prefix!));
    if (kept.length === 0) {
      throw new Error(`checkpoint ${path}: no tensors found with prefix '${prefix}' in ${source} ` +
        `(keys: ${names.slice(0, 10).join(', ')})`);
    }
    const uses = new Map<string, number>();
    for (const [k, v] of kept) {
      if (v instanceof UnsupportedTensor) {
        throw new Error(`checkpoint ${path}: ${source} entry '${String(k)}' is a tensor saved with ${v.rebuild}; ` +
          'sparse, quantized, nested and other special tensors cannot be imported');
      }
      if (!isTensorRef(v)) {
        throw new Error(`checkpoint ${path}: ${source} entry '${String(k)}' is ${describePickled(v)}, not a tensor`);
      }
      uses.set(v.storage.key, (uses.get(v.storage.key) ?? 0) + 1);
    }
    const tensors = new Map<string, Tensor>();
    for (const [k, v] of kept as Array<[unknown, TorchTensorRef]>) {
      tensors.set(String(k).slice(prefix.length), await archive.tensor(v, String(k)));
      // Raw bytes of a storage are freed after its last view, so peak memory stays near one copy of the model.
      const left = uses.get(v.storage.key)! - 1;
      uses.set(v.storage.key, left);
      if (left === 0) archive.release(v);
    }
    return { tensors, source, strippedPrefix: prefix, dropped };
  } finally {
    await archive.close();
  }
}

/** The model tensors of a .ckpt/.pt file, float32, names without the Lightning `backbone.` prefix. */
export async function readCkpt(path: string): Promise<Map<string, Tensor>> {
  return (await readCheckpoint(path)).tensors;
}
