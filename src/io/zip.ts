// Random-access zip reader over a file handle. torch.save writes a zip (stored entries, zip64 records for big files);
// Lightning checkpoints with optimizer state often exceed Node's 2 GiB readFile limit, and only a fraction of the
// entries (data.pkl and the model's storages) is needed, so the central directory is parsed here and each entry is
// read on demand. Deflated entries are inflated with fflate.
import { open, type FileHandle } from 'node:fs/promises';
import { inflateSync } from 'fflate';

export interface ZipEntry {
  name: string;
  method: number; // 0 stored, 8 deflate
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
  encrypted: boolean;
}

const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;

function u64(dv: DataView, at: number): number {
  const v = dv.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`64-bit field ${v} at byte ${at} is too large`);
  return Number(v);
}

export class ZipReader {
  private constructor(readonly path: string, private fh: FileHandle, readonly fileSize: number,
    readonly entries: Map<string, ZipEntry>) {}

  /** Opens a zip archive; throws with `not a zip archive` / `truncated` / `damaged` in the message. */
  static async open(path: string): Promise<ZipReader> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw new Error(`${path}: cannot open: ${(e as Error).message}`);
    }
    try {
      const fileSize = (await fh.stat()).size;
      const entries = await readCentralDirectory(fh, path, fileSize);
      return new ZipReader(path, fh, fileSize, entries);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  async close(): Promise<void> {
    await this.fh.close();
  }

  /** The uncompressed bytes of one entry. */
  async read(name: string): Promise<Uint8Array> {
    const e = this.entries.get(name);
    if (!e) throw new Error(`${this.path}: zip entry '${name}' is missing`);
    if (e.encrypted) throw new Error(`${this.path}: zip entry '${name}' is encrypted`);
    const lh = await this.readAt(e.localHeaderOffset, 30, `local header of '${name}'`);
    const dv = new DataView(lh.buffer, lh.byteOffset, lh.byteLength);
    if (dv.getUint32(0, true) !== SIG_LOCAL) throw new Error(`${this.path}: damaged zip: bad local header for '${name}'`);
    const dataStart = e.localHeaderOffset + 30 + dv.getUint16(26, true) + dv.getUint16(28, true);
    const raw = await this.readAt(dataStart, e.compressedSize, `data of '${name}'`);
    if (e.method === 0) {
      if (e.size !== e.compressedSize) throw new Error(`${this.path}: damaged zip: stored entry '${name}' sizes differ`);
      return raw;
    }
    if (e.method === 8) {
      try {
        const out = inflateSync(raw, { out: new Uint8Array(e.size) });
        if (out.length !== e.size) throw new Error(`inflated to ${out.length} bytes, expected ${e.size}`);
        return out;
      } catch (err) {
        throw new Error(`${this.path}: damaged zip: cannot inflate '${name}': ${(err as Error).message}`);
      }
    }
    throw new Error(`${this.path}: zip entry '${name}' uses compression method ${e.method} (only stored and deflate)`);
  }

  private async readAt(position: number, length: number, what: string): Promise<Uint8Array> {
    if (position + length > this.fileSize) {
      throw new Error(`${this.path}: truncated file: ${what} needs bytes up to ${position + length}, the file has ` +
        `${this.fileSize}`);
    }
    const buf = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, done, length - done, position + done);
      if (bytesRead === 0) throw new Error(`${this.path}: truncated file while reading ${what}`);
      done += bytesRead;
    }
    return buf;
  }
}

async function readCentralDirectory(fh: FileHandle, path: string, fileSize: number): Promise<Map<string, ZipEntry>> {
  const readAt = async (pos: number, len: number): Promise<DataView> => {
    const b = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const { bytesRead } = await fh.read(b, done, len - done, pos + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    if (done < len) throw new Error(`${path}: truncated file at byte ${pos + done}`);
    return new DataView(b.buffer);
  };
  const head = fileSize >= 4 ? await readAt(0, 4) : null;
  const startsLikeZip = head !== null && head.getUint32(0, true) === SIG_LOCAL;
  // The end-of-central-directory record is the last 22 bytes plus a comment of up to 65535 bytes.
  const tailLen = Math.min(fileSize, 22 + 65535);
  const tail = tailLen >= 22 ? await readAt(fileSize - tailLen, tailLen) : null;
  let eocd = -1;
  if (tail) {
    for (let i = tailLen - 22; i >= 0; i--) {
      if (tail.getUint32(i, true) === SIG_EOCD) { eocd = i; break; }
    }
  }
  if (eocd < 0) {
    if (startsLikeZip) throw new Error(`${path}: truncated or damaged zip archive (no end-of-central-directory record)`);
    throw new Error(`${path}: not a zip archive`);
  }
  const eocdPos = fileSize - tailLen + eocd;
  let count = tail!.getUint16(eocd + 10, true);
  let cdSize = tail!.getUint32(eocd + 12, true);
  let cdOffset = tail!.getUint32(eocd + 16, true);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    if (eocdPos < 20) throw new Error(`${path}: damaged zip archive (zip64 locator missing)`);
    const loc = await readAt(eocdPos - 20, 20);
    if (loc.getUint32(0, true) !== SIG_ZIP64_LOCATOR) throw new Error(`${path}: damaged zip archive (zip64 locator missing)`);
    const recPos = u64(loc, 8);
    if (recPos + 56 > fileSize) throw new Error(`${path}: truncated zip archive (zip64 record beyond end of file)`);
    const rec = await readAt(recPos, 56);
    if (rec.getUint32(0, true) !== SIG_ZIP64_EOCD) throw new Error(`${path}: damaged zip archive (bad zip64 record)`);
    count = u64(rec, 32);
    cdSize = u64(rec, 40);
    cdOffset = u64(rec, 48);
  }
  if (cdOffset + cdSize > fileSize) throw new Error(`${path}: truncated zip archive (central directory beyond end of file)`);
  const cd = await readAt(cdOffset, cdSize);
  const entries = new Map<string, ZipEntry>();
  const dec = new TextDecoder('utf-8');
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdSize || cd.getUint32(p, true) !== SIG_CENTRAL) {
      throw new Error(`${path}: damaged zip archive (central directory entry ${i} is invalid)`);
    }
    const flags = cd.getUint16(p + 8, true);
    const method = cd.getUint16(p + 10, true);
    let compressedSize = cd.getUint32(p + 20, true);
    let size = cd.getUint32(p + 24, true);
    const nameLen = cd.getUint16(p + 28, true);
    const extraLen = cd.getUint16(p + 30, true);
    const commentLen = cd.getUint16(p + 32, true);
    let localHeaderOffset = cd.getUint32(p + 42, true);
    if (p + 46 + nameLen + extraLen + commentLen > cdSize) {
      throw new Error(`${path}: damaged zip archive (central directory entry ${i} overruns)`);
    }
    const name = dec.decode(new Uint8Array(cd.buffer, p + 46, nameLen));
    // zip64 extended information: the 64-bit values appear in this order, only for fields saturated above.
    let x = p + 46 + nameLen;
    const xEnd = x + extraLen;
    while (x + 4 <= xEnd) {
      const id = cd.getUint16(x, true);
      const len = cd.getUint16(x + 2, true);
      if (id === 0x0001) {
        let q = x + 4;
        if (size === 0xffffffff) { size = u64(cd, q); q += 8; }
        if (compressedSize === 0xffffffff) { compressedSize = u64(cd, q); q += 8; }
        if (localHeaderOffset === 0xffffffff) { localHeaderOffset = u64(cd, q); q += 8; }
      }
      x += 4 + len;
    }
    entries.set(name, { name, method, compressedSize, size, localHeaderOffset, encrypted: (flags & 1) !== 0 });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}
