// Crash-safe file writes: data goes to a temporary name in the same folder, is flushed to disk, then renamed over the
// target (rename is atomic within a file system), so a reader sees either the old file or the complete new one.
import fs from 'node:fs';
import path from 'node:path';

let counter = 0;

export function tempName(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${counter++}.tmp`);
}

/** Flushes a file's data (and, for a folder, its entries) to disk. */
export function fsyncPath(p: string): void {
  let fd: number | null = null;
  try {
    fd = fs.openSync(p, 'r');
    fs.fsyncSync(fd);
  } catch {
    // Some file systems refuse fsync on folders; the rename is still atomic there.
  } finally {
    if (fd !== null) fs.closeSync(fd);
  }
}

export function writeFileAtomic(file: string, data: string | Uint8Array | ReadonlyArray<Uint8Array>): void {
  const tmp = tempName(file);
  const fd = fs.openSync(tmp, 'w');
  try {
    const parts = typeof data === 'string' || data instanceof Uint8Array ? [data] : data;
    for (const p of parts) {
      if (typeof p === 'string') fs.writeSync(fd, p);
      else {
        let off = 0;
        while (off < p.length) off += fs.writeSync(fd, p, off, p.length - off);
      }
    }
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
  fsyncPath(path.dirname(file));
}
