// The PFLM noise encoder (KFORCING.md section 3): each uniform u_j (with the temperature tau) becomes one input
// embedding. phi(s) = [cos(2 pi s w_i), sin(2 pi s w_i)], w_i = 10000^(-i/(D/2)), cos half first, in float64; then
// h0 = combined_proj([phi(u); phi(tau)]), h = h0 + mlp.2(GELU_exact(mlp.0(LayerNorm(h0)))).
import type { FloatArray } from '../tensor/backend.ts';
import { addInPlace } from '../tensor/ops.ts';
import type { BaseModel } from './core.ts';
import { biasGrad, LN_EPS } from './backbone.ts';
import type { NoiseEncoderViews } from './params.ts';

const freqCache = new Map<number, Float64Array>();

function frequencies(D: number): Float64Array {
  let w = freqCache.get(D);
  if (!w) {
    const half = D / 2;
    w = new Float64Array(half);
    for (let i = 0; i < half; i++) w[i] = Math.pow(10000, -i / half);
    freqCache.set(D, w);
  }
  return w;
}

/** phi(s) into out[0, D): cos half then sin half, evaluated in float64 and stored in out's precision. */
export function sinusoidalFeatures(out: FloatArray, s: number, D: number): void {
  const w = frequencies(D);
  const half = D / 2;
  const base = 2 * Math.PI * s;
  for (let i = 0; i < half; i++) {
    const ang = base * w[i];
    out[i] = Math.cos(ang);
    out[half + i] = Math.sin(ang);
  }
}

export interface NoiseTrace<T extends FloatArray> {
  Rn: number;
  phi: T; // [Rn, 2D]
  h0: T; // [Rn, D]
  ln: T; mean: T; rstd: T;
  f1: T; g: T; // [Rn, 4D]
}

/** Encodes Rn noise rows (u[r], tau[r]) into dest [Rn, D]. Saves activations for the backward when train is set
 * (valid until the model's next noise-encoder forward). */
export function noiseEncoderForward<T extends FloatArray>(m: BaseModel<T>, u: ArrayLike<number>, tau: ArrayLike<number>,
  dest: T, train: boolean): NoiseTrace<T> {
  const ne = m.w.noise;
  if (!ne) throw new Error('noise encoder: this model has no noise_encoder tensors (not a PFLM)');
  const be = m.backend();
  const D = m.D;
  const Rn = u.length;
  if (tau.length !== Rn) throw new Error(`noise encoder: ${Rn} noise values but ${tau.length} tau values`);
  if (dest.length !== Rn * D) throw new Error(`noise encoder: dest has ${dest.length} elements, expected Rn*D = ${Rn}*${D}`);
  const ws = m.ws;
  const phi = ws.get('ne.phi', Rn * 2 * D);
  let lastTau = NaN;
  for (let r = 0; r < Rn; r++) {
    const row = phi.subarray(r * 2 * D, (r + 1) * 2 * D);
    sinusoidalFeatures(row, u[r], D);
    // tau is usually one value for many rows: copy its features instead of recomputing 2D trig calls per row.
    if (r > 0 && tau[r] === lastTau) row.set(phi.subarray((r - 1) * 2 * D + D, r * 2 * D), D);
    else sinusoidalFeatures(row.subarray(D), tau[r], D);
    lastTau = tau[r];
  }
  const h0 = ws.get('ne.h0', Rn * D);
  be.linear(h0, phi, ne.projW, ne.projB, Rn, 2 * D, D);
  const ln = ws.get('ne.ln', Rn * D), mean = ws.get('ne.mean', Rn), rstd = ws.get('ne.rstd', Rn);
  be.layerNorm(ln, mean, rstd, h0, ne.normW, ne.normB, Rn, D, LN_EPS);
  const f1 = ws.get('ne.f1', Rn * 4 * D);
  be.linear(f1, ln, ne.fc1W, ne.fc1B, Rn, D, 4 * D);
  const g = train ? ws.get('ne.g', Rn * 4 * D) : f1;
  be.gelu(g, f1, Rn * 4 * D, 'exact');
  be.linear(dest, g, ne.fc2W, ne.fc2B, Rn, 4 * D, D);
  addInPlace(dest, h0);
  return { Rn, phi, h0, ln, mean, rstd, f1, g };
}

/** Backward: dh [Rn, D] is the gradient of the encoder output; parameter gradients are accumulated into gv. */
export function noiseEncoderBackward<T extends FloatArray>(m: BaseModel<T>, tr: NoiseTrace<T>, dh: T,
  gv: NoiseEncoderViews<T>): void {
  const ne = m.w.noise!;
  const be = m.backend();
  const D = m.D;
  const { Rn } = tr;
  const ws = m.ws;
  const dg = ws.get('ne.dg', Rn * 4 * D);
  be.gemm(false, false, Rn, 4 * D, D, 1, dh, ne.fc2W, 0, dg);
  be.gemm(true, false, D, 4 * D, Rn, 1, dh, tr.g, 1, gv.fc2W);
  biasGrad(m, gv.fc2B, dh, Rn, D);
  const df1 = ws.zeros('ne.df1', Rn * 4 * D);
  be.geluBackward(df1, dg, tr.f1, Rn * 4 * D, 'exact');
  const dln = ws.get('ne.dln', Rn * D);
  be.gemm(false, false, Rn, D, 4 * D, 1, df1, ne.fc1W, 0, dln);
  be.gemm(true, false, 4 * D, D, Rn, 1, df1, tr.ln, 1, gv.fc1W);
  biasGrad(m, gv.fc1B, df1, Rn, 4 * D);
  // The residual passes dh straight to h0; the norm adds its part.
  const dh0 = ws.get('ne.dh0', Rn * D);
  dh0.set(dh);
  be.layerNormBackward(dh0, gv.normW, gv.normB, dln, tr.h0, tr.mean, tr.rstd, ne.normW, Rn, D);
  be.gemm(true, false, D, 2 * D, Rn, 1, dh0, tr.phi, 1, gv.projW);
  biasGrad(m, gv.projB, dh0, Rn, D);
}
