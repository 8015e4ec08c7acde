// safetensors: [u64 little-endian header length N][N bytes of JSON header][data]. The header maps tensor names to
// { dtype, shape, data_offsets: [begin, end) relative to the data section } plus an optional "__metadata__" map of
// strings. Reading goes through a file handle, one tensor at a time, so files beyond Node's 2 GiB readFile limit load
// and no second copy of the whole file is ever held. Writing is atomic (temp file in the same folder, fsync, rename).
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Tensor } from '../model/types.ts';
import { decodeInto, ELEMENT_BYTES, encodeHalf, type ElementType } from './dtypes.ts';

/** Every dtype name the safetensors format defines; only some of them are decoded. */
const KNOWN_DTYPES = new Set(['BOOL', 'U8', 'I8', 'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'F64', 'I64', 'U64',
  'F8_E4M3', 'F8_E5M2', 'F8_E8M0', 'F4', 'F6_E2M3', 'F6_E3M2', 'C64']);
const READABLE: ReadonlySet<string> = new Set<ElementType>(['F32', 'F16', 'BF16', 'F64']);
/** The reference implementation refuses headers above 100 MB; a bigger length means a corrupt or foreign file. */
const MAX_HEADER_BYTES = 100_000_000;

export interface SafetensorsEntry {
  name: string;
  dtype: ElementType;
  shape: number[];
  /** Byte range inside the data section. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  entries: SafetensorsEntry[];
  metadata: Record<string, string>;
  /** File offset of the data section (8 + header length). */
  dataStart: number;
  fileSize: number;
}

export interface SafetensorsContents {
  tensors: Map<string, Tensor>;
  metadata: Record<string, string>;
  /** Stored element type of each tensor (the returned data is always float32). */
  dtypes: Map<string, ElementType>;
}

export type WritableTensors = Map<string, Tensor> | Record<string, Tensor>;

export interface WriteOptions {
  /** Storage type of every tensor: F32 (default) or F16 (halves the size of small bundled models). */
  dtype?: 'F32' | 'F16';
}

function fail(path: string, msg: string): never {
  throw new Error(`safetensors ${path}: ${msg}`);
}

async function readExactly(fh: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) throw new Error(`unexpected end of file at byte ${position + done}`);
    done += bytesRead;
  }
}

function describeForeign(head: Uint8Array): string | null {
  if (head[0] === 0x50 && head[1] === 0x4b) return 'it is a zip archive (a PyTorch .ckpt/.pt checkpoint?), not a safetensors file';
  if (head[0] === 0x80 && head[1] >= 2 && head[1] <= 5) {
    return 'it is a Python pickle (a legacy torch.save file?), not a safetensors file';
  }
  return null;
}

function parseEntry(path: string, name: string, v: unknown, dataLen: number): SafetensorsEntry {
  if (!v || typeof v !== 'object' || Array.isArray(v)) fail(path, `header entry '${name}' is not an object`);
  const o = v as Record<string, unknown>;
  const dtype = o.dtype;
  if (typeof dtype !== 'string') fail(path, `tensor '${name}' has no dtype string`);
  if (!KNOWN_DTYPES.has(dtype)) fail(path, `tensor '${name}' has unknown dtype '${dtype}'`);
  if (!READABLE.has(dtype)) {
    fail(path, `tensor '${name}' has dtype ${dtype}, which is not supported (readable: ${[...READABLE].join(', ')})`);
  }
  const shape = o.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    fail(path, `tensor '${name}' has an invalid shape ${JSON.stringify(shape)} (expected non-negative integers)`);
  }
  const offs = o.data_offsets;
  if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    fail(path, `tensor '${name}' has invalid data_offsets ${JSON.stringify(offs)} (expected [begin, end])`);
  }
  const [begin, end] = offs as [number, number];
  if (end < begin) fail(path, `tensor '${name}' has data_offsets [${begin}, ${end}] with end before begin`);
  if (end > dataLen) {
    fail(path, `tensor '${name}' has data_offsets [${begin}, ${end}] beyond the ${dataLen}-byte data section ` +
      '(truncated file?)');
  }
  const numel = (shape as number[]).reduce((a, b) => a * b, 1);
  const need = numel * ELEMENT_BYTES[dtype as ElementType];
  if (need !== end - begin) {
    fail(path, `tensor '${name}' of shape [${shape.join(', ')}] and dtype ${dtype} needs ${need} bytes but its ` +
      `data_offsets span ${end - begin}`);
  }
  return { name, dtype: dtype as ElementType, shape: [...(shape as number[])], begin, end };
}

async function readHeaderFrom(fh: FileHandle, path: string): Promise<SafetensorsHeader> {
  const fileSize = (await fh.stat()).size;
  const head = new Uint8Array(Math.min(8, fileSize));
  await readExactly(fh, head, 0);
  if (fileSize < 8) fail(path, `truncated: the file has ${fileSize} bytes, fewer than the 8-byte header length`);
  const n = new DataView(head.buffer).getBigUint64(0, true);
  if (n > BigInt(fileSize - 8)) {
    // Only now is the first word known not to be a length; say what the file looks like instead.
    const foreign = describeForeign(head);
    if (foreign) fail(path, foreign);
    fail(path, `header length ${n} exceeds the ${fileSize - 8} bytes after the length field ` +
      '(truncated file, or not a safetensors file)');
  }
  const headerLen = Number(n);
  if (headerLen > MAX_HEADER_BYTES) fail(path, `header length ${headerLen} is implausibly large (limit ${MAX_HEADER_BYTES})`);
  if (headerLen < 2) fail(path, `header length ${headerLen} is too small to hold a JSON object`);
  const hb = new Uint8Array(headerLen);
  await readExactly(fh, hb, 8);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(hb);
  } catch {
    fail(path, 'header is not valid UTF-8 (not a safetensors file?)');
  }
  if (text.trimStart()[0] !== '{') fail(path, "header does not start with '{' (not a safetensors file?)");
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(path, `bad JSON header: ${(e as Error).message}`);
  }
  if (!json || typeof json !== 'object' || Array.isArray(json)) fail(path, 'JSON header is not an object');
  const dataStart = 8 + headerLen;
  const dataLen = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const entries: SafetensorsEntry[] = [];
  for (const [name, v] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (!v || typeof v !== 'object' || Array.isArray(v)) fail(path, '__metadata__ is not an object');
      for (const [k, s] of Object.entries(v as Record<string, unknown>)) {
        if (typeof s !== 'string') fail(path, `__metadata__ value '${k}' is not a string`);
        metadata[k] = s;
      }
      continue;
    }
    entries.push(parseEntry(path, name, v, dataLen));
  }
  const sorted = entries.filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].begin < sorted[i - 1].end) {
      fail(path, `tensors '${sorted[i - 1].name}' [${sorted[i - 1].begin}, ${sorted[i - 1].end}) and ` +
        `'${sorted[i].name}' [${sorted[i].begin}, ${sorted[i].end}) overlap`);
    }
  }
  return { entries, metadata, dataStart, fileSize };
}

/** Header only (names, dtypes, shapes, metadata): cheap even for multi-GB files. */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  const fh = await openForRead(path);
  try {
    return await readHeaderFrom(fh, path);
  } finally {
    await fh.close();
  }
}

async function openForRead(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r');
  } catch (e) {
    throw new Error(`safetensors ${path}: cannot open: ${(e as Error).message}`);
  }
}

/**
 * Reads every tensor into a float32 array chosen by `place` (called once with the parsed header, then per entry), so
 * a caller can land tensors directly in their final buffers (e.g. a model's flat parameter array) without an
 * intermediate copy. F32 entries are read straight into the target; other types are converted.
 */
export async function readSafetensorsInto(path: string,
  place: (header: SafetensorsHeader) => (entry: SafetensorsEntry) => Float32Array): Promise<SafetensorsHeader> {
  const fh = await openForRead(path);
  try {
    const h = await readHeaderFrom(fh, path);
    const target = place(h);
    for (const e of h.entries) {
      const count = (e.end - e.begin) / ELEMENT_BYTES[e.dtype];
      const out = target(e);
      if (out.length !== count) fail(path, `tensor '${e.name}': destination holds ${out.length} values, the file ${count}`);
      const bytes = e.dtype === 'F32'
        ? new Uint8Array(out.buffer, out.byteOffset, out.byteLength)
        : new Uint8Array(e.end - e.begin);
      try {
        await readExactly(fh, bytes, h.dataStart + e.begin);
      } catch (err) {
        fail(path, `reading tensor '${e.name}': ${(err as Error).message}`);
      }
      if (e.dtype !== 'F32') decodeInto(out, bytes, 0, e.dtype);
    }
    return h;
  } finally {
    await fh.close();
  }
}

/** All tensors (converted to float32), the metadata and the stored dtypes. */
export async function readSafetensorsFile(path: string): Promise<SafetensorsContents> {
  const tensors = new Map<string, Tensor>();
  const dtypes = new Map<string, ElementType>();
  const h = await readSafetensorsInto(path, () => (e) => {
    const data = new Float32Array((e.end - e.begin) / ELEMENT_BYTES[e.dtype]);
    tensors.set(e.name, { shape: e.shape, data });
    dtypes.set(e.name, e.dtype);
    return data;
  });
  return { tensors, metadata: h.metadata, dtypes };
}

/** All tensors of a safetensors file as float32 (F32, F16, BF16 and F64 are read). */
export async function readSafetensors(path: string): Promise<Map<string, Tensor>> {
  return (await readSafetensorsFile(path)).tensors;
}

function checkTensors(path: string, tensors: WritableTensors): Array<[string, Tensor]> {
  const list = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  for (const [name, t] of list) {
    if (name === '' || name === '__metadata__') fail(path, `invalid tensor name '${name}'`);
    if (!t || !Array.isArray(t.shape) || !(t.data instanceof Float32Array)) {
      fail(path, `tensor '${name}' must be { shape: number[], data: Float32Array }`);
    }
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(path, `tensor '${name}' has an invalid shape [${t.shape.join(', ')}]`);
    }
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (numel !== t.data.length) {
      fail(path, `tensor '${name}' has shape [${t.shape.join(', ')}] (${numel} elements) but ${t.data.length} values`);
    }
  }
  return list;
}

/**
 * Writes tensors (float32 data) as F32, or F16 with `{ dtype: 'F16' }`. `metadata` becomes the __metadata__ string map.
 * The file appears atomically: readers see the old file or the complete new one, never a partial write.
 */
export async function writeSafetensors(path: string, tensors: WritableTensors, metadata?: Record<string, string>,
  opts: WriteOptions = {}): Promise<void> {
  const dtype = opts.dtype ?? 'F32';
  if (dtype !== 'F32' && dtype !== 'F16') fail(path, `cannot write dtype '${String(dtype)}' (F32 or F16)`);
  const list = checkTensors(path, tensors);
  const header: Record<string, unknown> = {};
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') fail(path, `metadata value '${k}' must be a string, got ${typeof v}`);
    }
    header.__metadata__ = metadata;
  }
  const size = ELEMENT_BYTES[dtype];
  let offset = 0;
  for (const [name, t] of list) {
    const n = t.data.length * size;
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf-8');
  // Pad with spaces so the data section starts 8-byte aligned (lets readers map tensors in place).
  const pad = (8 - ((8 + json.length) % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const lenField = Buffer.alloc(8);
  lenField.writeBigUInt64LE(BigInt(json.length));

  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let fh: FileHandle | null = null;
  try {
    fh = await open(tmp, 'wx');
    await fh.write(lenField);
    await fh.write(json);
    for (const [, t] of list) {
      const bytes = dtype === 'F32'
        ? new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)
        : (() => { const h = encodeHalf(t.data); return new Uint8Array(h.buffer, h.byteOffset, h.byteLength); })();
      let done = 0;
      while (done < bytes.length) {
        const { bytesWritten } = await fh.write(bytes, done, bytes.length - done);
        done += bytesWritten;
      }
    }
    await fh.sync();
    await fh.close();
    fh = null;
    await rename(tmp, path);
  } catch (e) {
    if (fh) await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw new Error(`safetensors ${path}: write failed: ${(e as Error).message}`);
  }
  await syncDir(dirname(path));
}

/** Makes the rename itself durable; some filesystems refuse to open folders, which is harmless. */
async function syncDir(dir: string): Promise<void> {
  let fh: FileHandle | null = null;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    // best effort
  } finally {
    await fh?.close().catch(() => undefined);
  }
}
