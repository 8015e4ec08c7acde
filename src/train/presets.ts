// Named training recipes. A preset fixes the model shape and the optimisation of the AR teacher and of each
// distillation stage; every field can be overridden from the command line. Sizes quoted are for the preset's
// tokenizer vocabulary (the model's vocabulary always comes from the tokenizer actually used).

export interface OptimSettings {
  steps: number;
  batchSize: number; // sequences per step
  seqLen: number; // tokens per sequence (AR: seqLen - 1 predictions; distill: seqLen context windows)
  lr: number; // peak learning rate
  minLr: number; // floor of the cosine
  warmup: number; // linear warm-up steps
  weightDecay: number;
  beta1: number;
  beta2: number;
  clip: number; // gradient-norm clip
  evalEvery: number; // steps between validation passes
  evalSeqs: number; // validation sequences per pass
  ckptEvery: number; // steps between checkpoints
  logEvery: number; // steps between log records
}

export interface ModelShape {
  hiddenSize: number;
  nHeads: number;
  nBlocks: number;
}

export interface Preset {
  description: string;
  vocabSize: number; // BPE size the recipe trains its tokenizer at
  model: ModelShape;
  teacher: OptimSettings;
  /** Distillation stage settings by k (a k not listed uses the largest listed k's settings). */
  distill: Record<number, OptimSettings>;
}

const base: Omit<OptimSettings, 'steps' | 'batchSize' | 'seqLen' | 'lr' | 'minLr' | 'warmup'> = {
  weightDecay: 0.1, beta1: 0.9, beta2: 0.95, clip: 1.0, evalEvery: 250, evalSeqs: 64, ckptEvery: 250, logEvery: 10,
};

export const PRESETS: Record<string, Preset> = {
  tiny: {
    description: 'smoke-test sized: D=64, 2 blocks, 4 heads (0.17 M parameters at 512 ids); about a minute per stage',
    vocabSize: 512,
    model: { hiddenSize: 64, nHeads: 4, nBlocks: 2 },
    teacher: { ...base, steps: 300, batchSize: 16, seqLen: 64, lr: 3e-3, minLr: 3e-4, warmup: 30, evalEvery: 100,
      evalSeqs: 32, ckptEvery: 100, logEvery: 10 },
    distill: {
      1: { ...base, steps: 120, batchSize: 8, seqLen: 32, lr: 2e-3, minLr: 2e-4, warmup: 10, evalEvery: 40, evalSeqs: 32,
        ckptEvery: 40, logEvery: 10 },
      4: { ...base, steps: 100, batchSize: 8, seqLen: 32, lr: 2e-3, minLr: 2e-4, warmup: 10, evalEvery: 50, evalSeqs: 32,
        ckptEvery: 50, logEvery: 10 },
    },
  },
  small: {
    description: 'about 5 M parameters at 4k vocabulary: D=256, 4 blocks, 4 heads, context 128',
    vocabSize: 4096,
    model: { hiddenSize: 256, nHeads: 4, nBlocks: 4 },
    // Sized so the whole chain (teacher, then k = 1 -> 2 -> 4) takes about an hour on this 2-core machine:
    // teacher ~0.45 s/step, k=1 ~0.6 s/step, k=2 ~1.6 s/step (teacher double pass + student), k=4 ~2 s/step.
    teacher: { ...base, steps: 3000, batchSize: 16, seqLen: 128, lr: 2e-3, minLr: 2e-4, warmup: 150 },
    distill: {
      1: { ...base, steps: 600, batchSize: 16, seqLen: 64, lr: 5e-4, minLr: 5e-5, warmup: 50, evalEvery: 200, ckptEvery: 200 },
      2: { ...base, steps: 600, batchSize: 16, seqLen: 64, lr: 5e-4, minLr: 5e-5, warmup: 50, evalEvery: 200, ckptEvery: 200 },
      4: { ...base, steps: 400, batchSize: 8, seqLen: 64, lr: 4e-4, minLr: 4e-5, warmup: 40, evalEvery: 200, ckptEvery: 200 },
    },
  },
  judge: {
    description: 'scorer for generative perplexity, wider and deeper than small, same corpus: D=320, 6 blocks, 5 heads',
    vocabSize: 4096,
    model: { hiddenSize: 320, nHeads: 5, nBlocks: 6 },
    // ~0.8 s per step here: about 20 minutes.
    teacher: { ...base, steps: 1500, batchSize: 16, seqLen: 128, lr: 1.5e-3, minLr: 1.5e-4, warmup: 100 },
    distill: {
      1: { ...base, steps: 1500, batchSize: 16, seqLen: 64, lr: 4e-4, minLr: 4e-5, warmup: 100 },
    },
  },
};

export function getPreset(name: string): Preset {
  const p = PRESETS[name];
  if (!p) throw new Error(`unknown preset '${name}' (known: ${Object.keys(PRESETS).join(', ')})`);
  return p;
}

export function distillSettings(p: Preset, k: number): OptimSettings {
  const ks = Object.keys(p.distill).map(Number).sort((a, b) => a - b);
  const exact = p.distill[k];
  if (exact) return { ...exact };
  const below = ks.filter((x) => x <= k);
  return { ...p.distill[below.length ? below[below.length - 1] : ks[0]] };
}

/** Parameter count of an AR model of this shape (PFLM adds the noise encoder: 2D^2 + D + 2D + 8D^2 + 5D). */
export function countParams(shape: ModelShape, vocabSize: number, kind: 'ar' | 'pflm' = 'ar'): number {
  const D = shape.hiddenSize;
  const perBlock = 2 * D + 3 * D * D + D * D + 4 * D * D + 4 * D + 4 * D * D + D;
  let n = vocabSize * D + shape.nBlocks * perBlock + D + vocabSize * D + vocabSize;
  if (kind === 'pflm') n += 2 * D * D + D + 2 * D + 4 * D * D + 4 * D + 4 * D * D + D;
  return n;
}
