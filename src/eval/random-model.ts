// Random-weight models for speed benchmarks of any size (the official 12-block D=768 V=50258 architecture has
// 168 M parameters with the PFLM's noise encoder: a per-element Box-Muller init takes tens of seconds here, this fill
// takes about one). Weights are uniform with the GPT-2 init's standard deviation (0.02, residual projections scaled
// by 1/sqrt(2 * blocks)), norms 1, biases 0; the values only need to be realistic in scale, since throughput does not
// depend on them. The AR model is the PFLM's backbone itself: its parameters are the leading part of the PFLM's flat
// buffer (same reference order, noise encoder last), so both share one copy of the weights.
import { ArModel } from '../model/ar.ts';
import { PflmModel } from '../model/pflm.ts';
import { paramLayout } from '../model/params.ts';
import type { ModelConfig } from '../model/types.ts';

function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
  return (x ^ (x >>> 16)) >>> 0;
}

/** Fills `out` with uniform values of standard deviation `std` from a xorshift32 stream keyed by (seed, stream). */
export function fastUniformFill(out: Float32Array, std: number, seed: number, stream: number): void {
  let x = mix32(mix32(seed ^ 0x2545f491) ^ mix32(stream + 0x9e3779b9)) || 1;
  const a = std * Math.sqrt(3); // uniform(-a, a) has variance a^2 / 3
  const scale = (2 * a) / 4294967296;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (x >>> 0) * scale - a;
  }
}

export interface RandomModels {
  ar: ArModel;
  pflm: PflmModel;
}

/**
 * Fills a model's parameters in place: uniform weights with the GPT-2 init's standard deviation (residual projections
 * scaled by 1/sqrt(2 * blocks)), norm weights 1, biases 0. Deterministic from the seed.
 */
export function fillRandom(model: ArModel | PflmModel, seed: number, std = 0.02): void {
  const residStd = std / Math.sqrt(2 * model.config.nBlocks);
  model.layout.entries.forEach((e, i) => {
    const view = model.params.subarray(e.offset, e.offset + e.size);
    if (e.name.endsWith('.bias')) view.fill(0);
    else if (/norm\d?\.weight$|norm_final\.weight$/.test(e.name)) view.fill(1);
    else fastUniformFill(view, /^blocks\.\d+\.(attn_out|mlp\.2)\.weight$/.test(e.name) ? residStd : std, seed, i);
  });
}

/** An AR model with fast random weights. */
export function randomArModel(config: ModelConfig, seed: number, std = 0.02): ArModel {
  const ar = new ArModel({ ...config, maxK: 0 });
  fillRandom(ar, seed, std);
  return ar;
}

/** A PFLM (maxK from the config, at least 1) and the AR model sharing its backbone, with fast random weights. */
export function randomModels(config: ModelConfig, seed: number, std = 0.02): RandomModels {
  const cfg: ModelConfig = { ...config, maxK: Math.max(1, config.maxK) };
  const pflm = new PflmModel(cfg);
  fillRandom(pflm, seed, std);
  const arCfg: ModelConfig = { ...cfg, maxK: 0 };
  const arTotal = paramLayout(arCfg, 'ar').total;
  const ar = new ArModel(arCfg, { params: pflm.params.subarray(0, arTotal), invFreq: pflm.invFreq });
  return { ar, pflm };
}
