// The uniform noise that drives every sampled token. Counter-based: the uniform of generated position t in stream s
// under seed is a pure function of (seed, s, t), so AR sampling and PFLM blocks read the same u for the same position
// (KFORCING.md section 6), a prompt gets the same noise whatever batch it runs in, and a stream can be resumed at
// any position without replaying it.

/** An integer avalanche hash on 32 bits (multiply-xorshift; every input bit flips about half the output bits). */
function mix32(x: number): number {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

const TWO32 = 4294967296;
const TWO53 = 9007199254740992;

function checkSeed(seed: number, what: string): void {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`${what} must be a non-negative integer, got ${seed}`);
}

/** Key of (seed, stream): both halves of a 53-bit seed take part. */
export function streamKey(seed: number, stream: number): number {
  checkSeed(seed, 'noise seed');
  checkSeed(stream, 'noise stream id');
  const lo = seed % TWO32;
  const hi = Math.floor(seed / TWO32);
  const s = stream % TWO32;
  return mix32(mix32(mix32(lo ^ 0x243f6a88) ^ hi) ^ mix32(s + 0x9e3779b9));
}

/** Uniform in the open interval (0, 1) with 53 random bits: never 0, so inverse-CDF never picks a zero-mass token. */
export function uniformAt(key: number, t: number): number {
  const a = mix32(key ^ mix32(2 * t));
  const b = mix32((key + 0x85ebca6b) ^ mix32(2 * t + 1));
  return ((a >>> 5) * 67108864 + (b >>> 6) + 0.5) / TWO53;
}

/** One sequence's noise: position t of its generated tokens uses uniform t. */
export class NoiseStream {
  private readonly key: number;
  /** Index of the next uniform `next()` returns (= number of generated tokens it has covered). */
  position: number;

  /** Position up to which uniforms were handed out ahead of their step (noiseAhead). */
  aheadUntil: number;

  constructor(seed: number, stream = 0, position = 0) {
    this.key = streamKey(seed, stream);
    this.position = position;
    this.aheadUntil = position;
  }

  next(): number {
    return uniformAt(this.key, this.position++);
  }

  /** The next n uniforms without consuming them. */
  peek(n: number): number[] {
    const out = new Array<number>(n);
    for (let i = 0; i < n; i++) out[i] = uniformAt(this.key, this.position + i);
    return out;
  }

  take(n: number): number[] {
    const out = this.peek(n);
    this.position += n;
    return out;
  }
}

// Noise rows a PFLM step should encode at least when encoding ahead: below ~32 rows the noise encoder's pass costs
// about the same whatever the row count (its weights are read from memory once per pass).
export const NOISE_ROWS_PER_PASS = 32;

/**
 * The `noiseAhead` argument of a PFLM step (BatchDecoder.step) for streams that just took this step's uniforms (k per
 * sequence): every few steps, enough for NOISE_ROWS_PER_PASS rows over the batch, each stream hands over the
 * uniforms of its next steps, up to `ends[i]` (its last position + 1). Undefined when the batch alone fills a pass.
 */
export function noiseAhead(streams: NoiseStream[], ends: number[], k: number): number[][] | undefined {
  const steps = Math.floor(NOISE_ROWS_PER_PASS / (streams.length * k));
  if (steps <= 1) return undefined;
  return streams.map((s, i) => {
    if (s.position <= s.aheadUntil) return [];
    const n = Math.max(0, Math.min((steps - 1) * k, ends[i] - s.position));
    s.aheadUntil = s.position + n;
    return s.peek(n);
  });
}
