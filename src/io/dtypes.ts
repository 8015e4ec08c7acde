// Element formats found in safetensors files and PyTorch storages, and their conversion to float32 (the one format
// the model code holds). Raw bytes are little-endian in both file formats.
import { endianness } from 'node:os';

/** Element types we can decode. Names follow safetensors (PyTorch storages are mapped onto them). */
export type ElementType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const ELEMENT_BYTES: Record<ElementType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

// Typed-array views over file bytes assume the host order matches the files'; every platform Node ships on is
// little-endian, so a big-endian host is refused instead of silently reading garbage.
if (endianness() !== 'LE') throw new Error('kforce io: big-endian hosts are not supported');

let halfTable: Float32Array | null = null;

/** float32 value of every float16 bit pattern (built once: 256 KiB, much faster than bit arithmetic per element). */
function halfLookup(): Float32Array {
  if (halfTable) return halfTable;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const f = h & 0x3ff;
    if (e === 0) t[h] = sign * f * 2 ** -24;
    else if (e === 31) t[h] = f ? NaN : sign * Infinity;
    else t[h] = sign * (1 + f / 1024) * 2 ** (e - 15);
  }
  return (halfTable = t);
}

export function halfToFloat(bits: number): number {
  return halfLookup()[bits & 0xffff];
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** float16 bit pattern of the float32 with bit pattern b, round-to-nearest-even; overflow gives +-Infinity. */
function halfBits(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half: value = m * 2^-24. Below half the smallest subnormal everything rounds to zero.
    if (e < -10) return sign;
    const full = mant | 0x800000;
    const shift = 14 - e;
    let m = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && m & 1)) m++;
    return sign | m; // m may reach 0x400: that is exactly the smallest normal's encoding
  }
  let h = sign | (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa bumps the exponent, which is the correct rounding (up to Infinity).
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return h;
}

/** float16 bit pattern of x, round-to-nearest-even; overflow gives +-Infinity, NaN stays NaN. */
export function floatToHalf(x: number): number {
  f32Scratch[0] = x;
  return halfBits(u32Scratch[0]);
}

/** Rounds every element through float16 (what saving as F16 and reading back gives). */
export function roundToHalf(data: Float32Array): Float32Array {
  const t = halfLookup();
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = t[halfBits(bits[i])];
  return out;
}

export function encodeHalf(data: Float32Array): Uint16Array {
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  const out = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = halfBits(bits[i]);
  return out;
}

/** Copies `count` elements of `type` starting at byte `start` of `bytes` into a new float32 array. */
export function decodeToFloat32(bytes: Uint8Array, start: number, count: number, type: ElementType): Float32Array {
  const out = new Float32Array(count);
  decodeInto(out, bytes, start, type);
  return out;
}

/** Converts `out.length` elements of `type` starting at byte `start` of `bytes` into `out`. Works for any byte
 * alignment (the bytes are first copied into an aligned buffer where a typed view needs it). */
export function decodeInto(out: Float32Array, bytes: Uint8Array, start: number, type: ElementType): void {
  const count = out.length;
  const size = ELEMENT_BYTES[type];
  const nbytes = count * size;
  if (start < 0 || start + nbytes > bytes.length) {
    throw new Error(`decode ${type}: range [${start}, ${start + nbytes}) is outside the ${bytes.length} available bytes`);
  }
  const abs = bytes.byteOffset + start;
  // A typed view needs an offset that is a multiple of the element size; copy otherwise.
  const src = abs % size === 0 ? bytes : bytes.slice(start, start + nbytes);
  const off = src === bytes ? abs : src.byteOffset;
  const buf = src.buffer;
  switch (type) {
    case 'F32':
      out.set(new Float32Array(buf, off, count));
      return;
    case 'F64':
      out.set(new Float64Array(buf, off, count));
      return;
    case 'F16': {
      const h = new Uint16Array(buf, off, count);
      const t = halfLookup();
      for (let i = 0; i < count; i++) out[i] = t[h[i]];
      return;
    }
    case 'BF16': {
      const h = new Uint16Array(buf, off, count);
      const bits = new Uint32Array(out.buffer, out.byteOffset, count);
      for (let i = 0; i < count; i++) bits[i] = h[i] << 16;
      return;
    }
    case 'I64': {
      const v = new BigInt64Array(buf, off, count);
      for (let i = 0; i < count; i++) out[i] = Number(v[i]);
      return;
    }
    case 'I32':
      out.set(new Int32Array(buf, off, count));
      return;
    case 'I16':
      out.set(new Int16Array(buf, off, count));
      return;
    case 'I8':
      out.set(new Int8Array(buf, off, count));
      return;
    case 'U8':
    case 'BOOL':
      out.set(new Uint8Array(buf, off, count));
      return;
  }
}
