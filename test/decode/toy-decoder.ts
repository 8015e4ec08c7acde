// A model-free BatchDecoder for testing the generation loop: its logits are a hash of the sequence's whole context
// (and, for the PFLM kind, of the noises of slots 1..j), so they depend on exactly what a real causal model's logits
// depend on, and any mix-up of sequences, positions or noise shows up as different tokens.
import type { BatchDecoder, ModelConfig, SeqId } from '../../src/model/types.ts';

function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x45d9f3b) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x45d9f3b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

export function hashTokens(tokens: readonly number[], salt = 0): number {
  let h = mix32(salt + 12345);
  for (const t of tokens) h = mix32(h ^ (t + 0x9e3779b9));
  return h;
}

/** Logits of a context hash: spread over [-3, 3] (so sampling is genuinely random), mask at -1000. */
export function toyLogits(h: number, cfg: ModelConfig, scale = 3): Float32Array {
  const out = new Float32Array(cfg.vocabSize);
  for (let v = 0; v < cfg.vocabSize; v++) out[v] = ((mix32(h ^ mix32(v + 1)) / 4294967296) * 2 - 1) * scale;
  out[cfg.maskIndex] = -1000;
  return out;
}

export interface StepRecord {
  ids: SeqId[];
  pending: number[];
  noise: number[];
}

export class ToyDecoder implements BatchDecoder {
  readonly config: ModelConfig;
  private nextId = 1;
  private readonly seqs = new Map<SeqId, { committed: number[]; pending: number[] }>();
  readonly log: StepRecord[] = [];

  constructor(readonly kind: 'ar' | 'pflm', vocabSize = 11, maxK = kind === 'pflm' ? 4 : 0, private readonly scale = 3) {
    this.config = { vocabSize, hiddenSize: 8, nHeads: 2, nBlocks: 1, maskIndex: vocabSize - 1, maxK, maxSeqLen: 64 };
  }

  get openCount(): number {
    return this.seqs.size;
  }

  open(prompt: number[]): SeqId {
    if (prompt.length === 0) throw new Error('toy: empty prompt');
    for (const t of prompt) if (t < 0 || t >= this.config.vocabSize) throw new Error(`toy: token ${t} out of range`);
    const id = this.nextId++;
    this.seqs.set(id, { committed: [], pending: [...prompt] });
    return id;
  }

  close(id: SeqId): void {
    this.seqs.delete(id);
  }

  append(id: SeqId, tokens: number[]): void {
    const s = this.seqs.get(id);
    if (!s) throw new Error(`toy: unknown sequence ${id}`);
    s.pending.push(...tokens);
  }

  length(id: SeqId): number {
    const s = this.seqs.get(id);
    return s ? s.committed.length + s.pending.length : 0;
  }

  /** The logits a sequence with this full context would get (slot j of a PFLM step: noise u_1..u_j). */
  logitsFor(context: readonly number[], noise: readonly number[] = []): Float32Array {
    const q = noise.map((u) => Math.floor(u * 1e9));
    return toyLogits(hashTokens([...context, ...q], noise.length), this.config, this.scale);
  }

  step(ids: SeqId[], opts?: { noise?: number[][]; tau?: number[] }): Float32Array[] {
    const rec: StepRecord = { ids: [...ids], pending: [], noise: [] };
    const out = ids.map((id, i) => {
      const s = this.seqs.get(id);
      if (!s) throw new Error(`toy: unknown sequence ${id}`);
      if (s.pending.length === 0) throw new Error(`toy: sequence ${id} has no pending tokens`);
      rec.pending.push(s.pending.length);
      s.committed.push(...s.pending);
      s.pending = [];
      if (this.kind === 'ar') return this.logitsFor(s.committed);
      const noise = opts?.noise?.[i];
      if (!noise || noise.length < 1 || noise.length > this.config.maxK) throw new Error(`toy: bad noise for ${id}`);
      rec.noise.push(noise.length);
      const V = this.config.vocabSize;
      const all = new Float32Array(noise.length * V);
      for (let j = 0; j < noise.length; j++) all.set(this.logitsFor(s.committed, noise.slice(0, j + 1)), j * V);
      return all;
    });
    this.log.push(rec);
    return out;
  }
}
