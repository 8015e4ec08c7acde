// Shared model-level types. The public API (issue 3) is built on these; decoding, training and serving use them.

/** A tensor result: row-major data with its shape. */
export interface Tensor {
  shape: number[];
  data: Float32Array;
}

export interface ModelConfig {
  vocabSize: number; // V, includes the [MASK] slot
  hiddenSize: number; // D
  nHeads: number; // H
  nBlocks: number;
  maskIndex: number; // default vocabSize - 1
  /** Largest k the PFLM was trained for (0 for AR models). Any k <= maxK works at inference. */
  maxK: number;
  /** Context length the model was trained at (informational; RoPE has no hard limit). */
  maxSeqLen: number;
}

/** Handle of one sequence inside a BatchDecoder. */
export type SeqId = number;

/** Per-step inputs of BatchDecoder.step (PFLM only; see there). */
export interface StepOptions {
  noise?: number[][];
  tau?: number[];
  noiseAhead?: number[][];
}

/** KV pool bookkeeping of a decoder (KvDecoder.stats). */
export interface DecoderStats {
  pageRows: number;
  pages: number;
  usedPages: number;
  compactions: number;
  grows: number;
  noiseRowsReused: number;
}

/**
 * Continuous-batching decoder over a shared KV cache: sequences join and leave between steps, and every step is ONE
 * forward pass over all the sequences named in it. Each sequence has a list of pending context tokens (its prompt
 * right after `open`, then whatever was appended since its last step). `step` feeds every named sequence's pending
 * tokens (their K/V are committed to its cache) and, for a PFLM, k noise tokens after them (transient K/V, not kept),
 * all packed into one activation matrix so the linear layers stream each weight once per step.
 */
export interface BatchDecoder {
  readonly kind: 'ar' | 'pflm';
  readonly config: ModelConfig;
  /** Opens a sequence whose prompt becomes its pending tokens. Throws on an empty prompt or token out of range. */
  open(prompt: number[]): SeqId;
  /** Frees the sequence's cache at once. Unknown ids are ignored. */
  close(id: SeqId): void;
  /** Queues context tokens to be fed on the sequence's next step. */
  append(id: SeqId, tokens: number[]): void;
  /** Number of tokens in the sequence's committed cache plus its pending tokens. */
  length(id: SeqId): number;
  /**
   * One forward pass. Every named sequence must have at least one pending token.
   * AR: returns per sequence the raw logits (mask logit -1000) for its next position, Float32Array [V].
   * PFLM: `noise[i]` (length k <= maxK) and `tau[i]` (default 1) per sequence; returns Float32Array [k * V], the
   * logits of the k noise slots. `noiseAhead[i]` (optional): uniforms sequence i will feed on later steps (with
   * the same tau); a PFLM decoder may encode them now, together with this step's noise rows, and reuse the
   * embeddings then. Results do not change; the noise encoder reads its weights once for several steps.
   */
  step(ids: SeqId[], opts?: StepOptions): Float32Array[];
  /**
   * Optional: `step` without the copy of the logits. The arrays are views of the model's scratch memory, valid only
   * until the model's next forward pass (any step of any of its decoders); at [S, V] floats per step the copy costs
   * a few percent of a decode step. For callers that consume the logits right away (generate, the server).
   */
  stepShared?(ids: SeqId[], opts?: StepOptions): Float32Array[];
  /** Optional: pre-sizes the KV cache for `sequences` sequences of up to `rows` positions each. */
  preallocate?(sequences: number, rows: number): void;
  /** Optional: KV pool bookkeeping (pages of `pageRows` rows allocated and in use, pool growths and compactions). */
  stats?(): DecoderStats;
  /**
   * Optional, float32 weights: `step` without the output layer. Returns the output layer's input rows ([sum of
   * slots, D], valid until the model's next forward pass) and each sequence's slot count (1 for an AR model); the
   * step's logits are rows w^T + bias of `outputLayer()`, with the [MASK] logit set to -1000. For callers that only
   * need an argmax of the logits (the PFLM rule, greedy AR), which can be found without computing every logit
   * exactly (src/decode/screen.ts).
   */
  stepHidden?(ids: SeqId[], opts?: StepOptions): { rows: Float32Array; slots: number[] };
  outputLayer?(): { w: Float32Array | Float64Array; bias: Float32Array | Float64Array; maskIndex: number };
}
