// Sample-quality metrics of KFORCING.md section 7 and small statistics helpers. All are plain functions over token
// ids and numbers, so the quality benchmark, the reports and the tests share one definition of each.

/** exp(mean negative log-likelihood); NaN for no tokens. */
export function perplexity(nlls: readonly number[]): number {
  if (nlls.length === 0) return NaN;
  let s = 0;
  for (const x of nlls) s += x;
  return Math.exp(s / nlls.length);
}

/**
 * Entropy (nats) of the empirical unigram distribution of one sample: -sum_v f_v log f_v with f_v = count_v / n.
 * The MDLM guard against repetition: a degenerate sample scores near 0, varied text of n tokens near log n.
 */
export function unigramEntropy(tokens: readonly number[]): number {
  if (tokens.length === 0) return 0;
  const counts = new Map<number, number>();
  for (const t of tokens) counts.set(t, (counts.get(t) ?? 0) + 1);
  let h = 0;
  for (const c of counts.values()) {
    const f = c / tokens.length;
    h -= f * Math.log(f);
  }
  return h;
}

/**
 * Fraction of the sample's n-grams (n consecutive tokens, overlapping) that already occurred earlier in the same
 * sample: (total - distinct) / total. 0 for no repeats; 0 when the sample is shorter than n.
 */
export function repeatedNgramRate(tokens: readonly number[], n = 4): number {
  if (!Number.isInteger(n) || n < 1) throw new Error(`repeatedNgramRate: n must be a positive integer, got ${n}`);
  const total = tokens.length - n + 1;
  if (total <= 0) return 0;
  const seen = new Set<string>();
  let repeats = 0;
  for (let i = 0; i < total; i++) {
    const key = tokens.slice(i, i + n).join(',');
    if (seen.has(key)) repeats++;
    else seen.add(key);
  }
  return repeats / total;
}

/** Per-slot agreement counters: slot j (0-based) of each PFLM block against the teacher's token for that slot. */
export class SlotAgreement {
  readonly matches: number[];
  readonly totals: number[];

  constructor(readonly k: number) {
    this.matches = new Array<number>(k).fill(0);
    this.totals = new Array<number>(k).fill(0);
  }

  /** Adds one block: the student's tokens and the teacher's, slot by slot (the shorter length counts). */
  add(student: readonly number[], teacher: readonly number[]): void {
    const n = Math.min(student.length, teacher.length, this.k);
    for (let j = 0; j < n; j++) {
      this.totals[j]++;
      if (student[j] === teacher[j]) this.matches[j]++;
    }
  }

  /** Agreement rate per slot (NaN for a slot never seen). */
  rates(): number[] {
    return this.matches.map((m, j) => (this.totals[j] > 0 ? m / this.totals[j] : NaN));
  }

  /** Agreement over all slots together. */
  overall(): number {
    const t = this.totals.reduce((a, b) => a + b, 0);
    return t > 0 ? this.matches.reduce((a, b) => a + b, 0) / t : NaN;
  }
}

export function mean(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Median (mean of the two middle values for an even count); NaN for none. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** log-softmax of one logits row at one index, in float64 (the NLL of a token is its negation). */
export function logProbAt(logits: ArrayLike<number>, index: number, temperature = 1): number {
  let m = -Infinity;
  for (let v = 0; v < logits.length; v++) if (logits[v] / temperature > m) m = logits[v] / temperature;
  let z = 0;
  for (let v = 0; v < logits.length; v++) z += Math.exp(logits[v] / temperature - m);
  return logits[index] / temperature - m - Math.log(z);
}
