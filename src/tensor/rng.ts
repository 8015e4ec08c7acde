// Seeded pseudo-random numbers for everything that must replay exactly: weight init, data order, training noise,
// decoding uniforms. The generator is xoshiro128** in 32-bit integer arithmetic (Math.imul and shifts), so a seed gives
// the same sequence on every machine and JS engine; the state is four uint32 words, which a checkpoint stores to
// resume mid-stream. Floats are derived from the integers with exact arithmetic (no platform-dependent rounding);
// normal() additionally uses Math.log/cos/sqrt.

const TWO_POW_32 = 4294967296;
const TWO_POW_21 = 2097152;
const TWO_POW_M53 = 1 / 9007199254740992;
const TWO_POW_M52 = 1 / 4503599627370496;

/** Avalanche mix of one 32-bit word (the MurmurHash3 finaliser constants): every input bit affects every output bit,
 * so nearby seeds give unrelated states. */
function mix32(x: number): number {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x85ebca6b) >>> 0;
  x = (x ^ (x >>> 13)) >>> 0;
  x = Math.imul(x, 0xc2b2ae35) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

const GOLDEN = 0x9e3779b9;

function checkState(s: readonly number[], what: string): void {
  if (!Array.isArray(s) || s.length !== 4) throw new Error(`${what}: expected 4 uint32 words, got ${JSON.stringify(s)}`);
  for (const w of s) {
    if (!Number.isInteger(w) || w < 0 || w >= TWO_POW_32) {
      throw new Error(`${what}: state word ${String(w)} is not a uint32`);
    }
  }
  if (s.every((w) => w === 0)) throw new Error(`${what}: the all-zero state is invalid for xoshiro128**`);
}

export class Rng {
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;

  /** seed: any safe integer (negative allowed). */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new Error(`Rng: seed must be a safe integer, got ${String(seed)}`);
    const lo = seed >>> 0;
    const hi = Math.floor(seed / TWO_POW_32) >>> 0;
    const h = mix32(hi ^ 0x5bd1e995);
    // Distinct odd offsets per word, so even seed 0 yields four different non-zero-ish words.
    this.s0 = mix32((lo + GOLDEN) ^ h);
    this.s1 = mix32((lo + 2 * GOLDEN) ^ mix32(h + 1));
    this.s2 = mix32((lo + 3 * GOLDEN) ^ mix32(h + 2));
    this.s3 = mix32((lo + 4 * GOLDEN) ^ mix32(h + 3));
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Restores a generator saved with state(). */
  static fromState(state: readonly number[]): Rng {
    checkState(state, 'Rng.fromState');
    const r = new Rng(0);
    [r.s0, r.s1, r.s2, r.s3] = state;
    return r;
  }

  /** The four state words; Rng.fromState(state()) continues the exact same sequence. */
  state(): number[] {
    return [this.s0, this.s1, this.s2, this.s3];
  }

  clone(): Rng {
    return Rng.fromState(this.state());
  }

  /** Next raw 32-bit output as an unsigned integer in [0, 2^32). */
  uint32(): number {
    const s1 = this.s1;
    const r = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    this.s0 >>>= 0; this.s1 >>>= 0; this.s2 >>>= 0; this.s3 >>>= 0;
    return r;
  }

  /** 53 random bits as an integer in [0, 2^53). */
  private bits53(): number {
    const a = this.uint32() >>> 11; // 21 bits
    const b = this.uint32(); // 32 bits
    return a * TWO_POW_32 + b;
  }

  /** Uniform float64 in [0, 1) with 53 random bits (every representable multiple of 2^-53 equally likely). */
  uniform(): number {
    return this.bits53() * TWO_POW_M53;
  }

  /** Uniform float64 in the open interval (0, 1): 52 random bits plus one half step, so neither end is reachable
   * (safe for log(u) and for inverse-CDF sampling where u = 0 would pick a zero-probability token). */
  uniformOpen(): number {
    const a = this.uint32() >>> 12; // 20 bits
    const b = this.uint32();
    return (a * TWO_POW_32 + b + 0.5) * TWO_POW_M52;
  }

  /** Standard normal (Box-Muller, one value per call so the state stays four integers), scaled to mean/std. */
  normal(mean = 0, std = 1): number {
    const u1 = this.uniformOpen();
    const u2 = this.uniform();
    return mean + std * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /** Unbiased integer in [0, n), n an integer in [1, 2^53]; rejection sampling, so no modulo bias. */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > 2 ** 53) throw new Error(`Rng.int: n must be an integer in [1, 2^53], got ${n}`);
    if (n <= TWO_POW_32) {
      const limit = TWO_POW_32 - (TWO_POW_32 % n);
      for (;;) {
        const x = this.uint32();
        if (x < limit) return x % n;
      }
    }
    const span = TWO_POW_32 * TWO_POW_21; // 2^53
    const limit = span - (span % n);
    for (;;) {
      const x = this.bits53();
      if (x < limit) return x % n;
    }
  }

  /** Fisher-Yates shuffle in place; returns its argument. */
  shuffle<A extends { length: number; [i: number]: unknown }>(arr: A): A {
    for (let i = arr.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = arr[i];
      arr[i] = arr[j];
      arr[j] = t;
    }
    return arr;
  }

  /** An independent stream derived from this generator's current state and a label. Does not advance this stream,
   * so fork('data') is the same stream however many other forks were taken; different labels give unrelated
   * streams. */
  fork(label: string | number): Rng {
    const text = String(label);
    let h = 0x811c9dc5;
    for (let i = 0; i < text.length; i++) h = mix32(h ^ text.charCodeAt(i)) + i;
    h = mix32(h ^ text.length);
    const st = [
      mix32(this.s0 ^ mix32(h + GOLDEN)),
      mix32(this.s1 ^ mix32(h + 2 * GOLDEN)),
      mix32(this.s2 ^ mix32(h + 3 * GOLDEN)),
      mix32(this.s3 ^ mix32(h + 4 * GOLDEN)),
    ];
    if ((st[0] | st[1] | st[2] | st[3]) === 0) st[0] = 1;
    return Rng.fromState(st);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
