// Incremental detokenisation with stop sequences. Tokens arrive a step at a time (1 for AR, k for a PFLM); the text
// released to a client must never contain a stop sequence nor a prefix of one that the next tokens might complete,
// and must not end in half a UTF-8 character (byte-level BPE splits characters across tokens).

export interface Detokenizer {
  decode(ids: number[]): string;
}

const REPLACEMENT = '\uFFFD';

export class TextStream {
  private readonly ids: number[] = [];
  private text = '';
  private released = 0;
  private stoppedAt: number | null = null;

  constructor(private readonly tok: Detokenizer, private readonly stops: string[]) {}

  get stopped(): boolean {
    return this.stoppedAt !== null;
  }

  /** Adds tokens; returns the newly releasable text. After a stop sequence matches, nothing more is released. */
  push(tokens: number[]): string {
    if (this.stoppedAt !== null) return '';
    for (const t of tokens) this.ids.push(t);
    // Decoding the whole list (not each token alone) lets multi-byte characters and merges come out right.
    this.text = this.tok.decode(this.ids);
    let stopAt = -1;
    for (const s of this.stops) {
      const i = this.text.indexOf(s, Math.max(0, this.released - s.length + 1));
      if (i >= 0 && (stopAt < 0 || i < stopAt)) stopAt = i;
    }
    if (stopAt >= 0) {
      this.stoppedAt = Math.max(stopAt, this.released);
      return this.take(this.stoppedAt);
    }
    return this.take(this.text.length - this.holdBack());
  }

  /** Releases whatever was held back (the sequence ended without a stop match). */
  flush(): string {
    if (this.stoppedAt !== null) return '';
    return this.take(this.text.length);
  }

  /** The final completion text (up to the stop sequence, if one matched). */
  finalText(): string {
    return this.stoppedAt !== null ? this.text.slice(0, this.stoppedAt) : this.text;
  }

  private take(end: number): string {
    if (end <= this.released) return '';
    const out = this.text.slice(this.released, end);
    this.released = end;
    return out;
  }

  /** Characters at the end that must wait: a trailing partial character, or a prefix of a stop sequence. */
  private holdBack(): number {
    const t = this.text;
    let hold = 0;
    while (hold < t.length && t[t.length - 1 - hold] === REPLACEMENT) hold++;
    for (const s of this.stops) {
      for (let l = Math.min(s.length - 1, t.length); l > hold; l--) {
        if (t.endsWith(s.slice(0, l))) {
          hold = l;
          break;
        }
      }
    }
    return hold;
  }
}
