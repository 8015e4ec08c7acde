// Fixed-length training sequences packed from the token stream, and the seeded order in which batches visit them.
// Sequence i of length N is tokens [i*N, (i+1)*N) of the split. Each epoch is a permutation of all sequences drawn
// from the seed and the epoch number alone, so the data position {epoch, index} is all a checkpoint needs to resume.
import { Rng } from '../tensor/rng.ts';
import { TokenReader } from './shards.ts';

export interface DataPosition {
  epoch: number;
  index: number; // next sequence to take within the epoch's permutation
}

export class BatchSampler {
  readonly nSeq: number;
  private perm: Uint32Array | null = null;
  private permEpoch = -1;
  pos: DataPosition = { epoch: 0, index: 0 };

  constructor(private readonly reader: TokenReader, readonly seqLen: number, private readonly seed: number) {
    if (!Number.isInteger(seqLen) || seqLen < 2) throw new Error(`sequence length must be an integer >= 2, got ${seqLen}`);
    this.nSeq = Math.floor(reader.total / seqLen);
    if (this.nSeq < 1) {
      throw new Error(`the ${reader.split} split has ${reader.total} tokens, fewer than one sequence of ${seqLen}`);
    }
  }

  private permutation(epoch: number): Uint32Array {
    if (this.permEpoch !== epoch) {
      const p = new Uint32Array(this.nSeq);
      for (let i = 0; i < p.length; i++) p[i] = i;
      new Rng(this.seed).fork(`data-epoch-${epoch}`).shuffle(p);
      this.perm = p;
      this.permEpoch = epoch;
    }
    return this.perm!;
  }

  /** The next B sequences, [B, seqLen] row-major; rolls over into the next epoch when one runs out. */
  next(B: number, out = new Int32Array(B * this.seqLen)): Int32Array {
    for (let b = 0; b < B; b++) {
      if (this.pos.index >= this.nSeq) this.pos = { epoch: this.pos.epoch + 1, index: 0 };
      const seq = this.permutation(this.pos.epoch)[this.pos.index++];
      this.reader.read(seq * this.seqLen, out.subarray(b * this.seqLen, (b + 1) * this.seqLen));
    }
    return out;
  }

  /** Tokens consumed so far, counted from the start of training. */
  tokensSeen(): number {
    return (this.pos.epoch * this.nSeq + this.pos.index) * this.seqLen;
  }
}

/**
 * A fixed, evenly spaced set of validation sequences (the same ones at every evaluation), returned in batches.
 */
export function validationBatches(reader: TokenReader, seqLen: number, maxSeqs: number, B: number): Int32Array[] {
  const n = Math.floor(reader.total / seqLen);
  if (n < 1) throw new Error(`the validation split has ${reader.total} tokens, fewer than one sequence of ${seqLen}`);
  const count = Math.min(n, Math.max(1, maxSeqs));
  const stride = n / count;
  const out: Int32Array[] = [];
  for (let s = 0; s < count; s += B) {
    const rows = Math.min(B, count - s);
    const buf = new Int32Array(rows * seqLen);
    for (let r = 0; r < rows; r++) {
      reader.read(Math.floor((s + r) * stride) * seqLen, buf.subarray(r * seqLen, (r + 1) * seqLen));
    }
    out.push(buf);
  }
  return out;
}
