// Minimal reader for R's lazy-load databases (data/Rdata.rdb + .rdx of an installed R package), enough to pull
// character vectors out of a data package such as janeaustenr. Format: the .rdx is a gzip'd serialized list whose
// `variables` element maps each object name to (offset, length) in the .rdb; each .rdb record is a 4-byte big-endian
// uncompressed length, then a zlib stream holding one object in R's XDR serialization (version 2 or 3).
import fs from 'node:fs';
import zlib from 'node:zlib';

export type RValue = null | string | RValue[] | { sym: string } | number[] | (string | null)[] |
  { type: 'list'; items: RValue[]; names: string[] | null };

class XdrReader {
  private pos = 0;
  private readonly refs: RValue[] = [];
  constructor(private readonly buf: Buffer) {}

  int(): number { const v = this.buf.readInt32BE(this.pos); this.pos += 4; return v; }
  double(): number { const v = this.buf.readDoubleBE(this.pos); this.pos += 8; return v; }

  header(): void {
    const magic = this.buf.toString('latin1', 0, 2);
    if (magic !== 'X\n') throw new Error(`R serialization: expected XDR format 'X\\n', got ${JSON.stringify(magic)}`);
    this.pos = 2;
    const version = this.int();
    this.int(); // writer version
    this.int(); // minimal reader version
    if (version === 3) { const n = this.int(); this.pos += n; } // native encoding name
    else if (version !== 2) throw new Error(`R serialization: unsupported version ${version}`);
  }

  private length(): number {
    const n = this.int();
    if (n !== -1) return n;
    const hi = this.int();
    const lo = this.int();
    return hi * 4294967296 + (lo >>> 0);
  }

  /** Reads one item; attributes are folded into the result only as `names` of lists. */
  item(): RValue {
    const flags = this.int();
    const type = flags & 0xff;
    const hasAttr = (flags & (1 << 9)) !== 0;
    const hasTag = (flags & (1 << 10)) !== 0;
    switch (type) {
      case 254: case 242: case 241: case 253: case 252: case 251: case 247: return null; // nil, env and marker values
      case 255: { // reference to an earlier symbol or environment
        let idx = flags >> 8;
        if (idx === 0) idx = this.int();
        return this.refs[idx - 1] ?? null;
      }
      case 1: { // symbol
        const name = this.item();
        const s = { sym: typeof name === 'string' ? name : '' };
        this.refs.push(s);
        return s;
      }
      case 9: { // CHARSXP
        const n = this.int();
        if (n === -1) return null;
        const latin1 = (flags & (1 << 14)) !== 0; // LATIN1_MASK << 12
        const s = this.buf.toString(latin1 ? 'latin1' : 'utf8', this.pos, this.pos + n);
        this.pos += n;
        return s;
      }
      case 2: case 6: case 17: case 5: { // pairlists (LISTSXP, LANGSXP, DOTSXP, PROMSXP)
        const items: RValue[] = [];
        const names: string[] = [];
        let f = flags;
        for (;;) {
          if ((f & (1 << 9)) !== 0) this.item();
          const tag = (f & (1 << 10)) !== 0 ? this.item() : null;
          names.push(tag && typeof tag === 'object' && 'sym' in tag ? tag.sym : '');
          items.push(this.item());
          f = this.int(); // CDR: another cell of the pairlist, or its end
          const t = f & 0xff;
          if (t === 254) break;
          if (t !== 2) { this.pos -= 4; items.push(this.item()); names.push(''); break; }
        }
        return { type: 'list', items, names };
      }
      case 16: { // STRSXP
        const n = this.length();
        const out: (string | null)[] = [];
        for (let i = 0; i < n; i++) out.push(this.item() as string | null);
        if (hasAttr) this.item();
        return out;
      }
      case 13: case 10: { // INTSXP, LGLSXP
        const n = this.length();
        const out: number[] = [];
        for (let i = 0; i < n; i++) out.push(this.int());
        if (hasAttr) this.item();
        return out;
      }
      case 14: { // REALSXP
        const n = this.length();
        const out: number[] = [];
        for (let i = 0; i < n; i++) out.push(this.double());
        if (hasAttr) this.item();
        return out;
      }
      case 19: case 20: { // VECSXP, EXPRSXP
        const n = this.length();
        const items: RValue[] = [];
        for (let i = 0; i < n; i++) items.push(this.item());
        let names: string[] | null = null;
        if (hasAttr) {
          const attr = this.item();
          if (attr && typeof attr === 'object' && 'type' in attr) {
            const k = attr.names?.indexOf('names') ?? -1;
            if (k >= 0 && Array.isArray(attr.items[k])) names = (attr.items[k] as string[]).map((s) => s ?? '');
          }
        }
        return { type: 'list', items, names };
      }
      default:
        throw new Error(`R serialization: unsupported SEXP type ${type}${hasTag ? ' (tagged)' : ''}`);
    }
  }
}

export function unserialize(buf: Buffer): RValue {
  const r = new XdrReader(buf);
  r.header();
  return r.item();
}

/** Every object of a lazy-load database, by name (R `lazyLoad` layout). */
export function readRdb(rdbPath: string): Map<string, RValue> {
  const rdxPath = rdbPath.replace(/\.rdb$/, '.rdx');
  if (!fs.existsSync(rdbPath) || !fs.existsSync(rdxPath)) throw new Error(`R database not found: ${rdbPath} / ${rdxPath}`);
  const index = unserialize(zlib.unzipSync(fs.readFileSync(rdxPath)));
  if (!index || typeof index !== 'object' || !('type' in index) || !index.names) {
    throw new Error(`${rdxPath}: not an R lazy-load index`);
  }
  const vars = index.items[index.names.indexOf('variables')];
  if (!vars || typeof vars !== 'object' || !('type' in vars) || !vars.names) throw new Error(`${rdxPath}: no variables`);
  const rdb = fs.readFileSync(rdbPath);
  const out = new Map<string, RValue>();
  vars.items.forEach((loc, i) => {
    const [off, len] = loc as number[];
    const rec = rdb.subarray(off, off + len);
    out.set(vars.names![i], unserialize(zlib.inflateSync(rec.subarray(4))));
  });
  return out;
}
