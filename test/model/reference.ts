// A deliberately naive float64 re-statement of KFORCING.md sections 2-3 for tests: one row at a time, dense loops,
// named tensors looked up by their reference names, no packing, no CSR masks, no backend. The production model must
// agree with it; being independent code, it catches layout, RoPE, masking and norm mistakes in the packed path.
import { erf, tsBackend } from '../../src/tensor/ts-backend.ts';
import { withChecks } from '../../src/tensor/checked.ts';
import { loadNativeBackend } from '../../src/tensor/native.ts';
import type { Backend } from '../../src/tensor/backend.ts';
import type { ModelConfig, Tensor } from '../../src/model/types.ts';

type Tensors = Map<string, Tensor>;

function T(t: Tensors, name: string): Float32Array {
  const x = t.get(name);
  if (!x) throw new Error(`reference: missing ${name}`);
  return x.data;
}

function layerNorm(x: Float64Array, w: Float32Array, b: Float32Array | null): Float64Array {
  const n = x.length;
  let mu = 0;
  for (const v of x) mu += v;
  mu /= n;
  let va = 0;
  for (const v of x) va += (v - mu) * (v - mu);
  va /= n;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = ((x[i] - mu) / Math.sqrt(va + 1e-5)) * w[i] + (b ? b[i] : 0);
  return out;
}

/** y = W x + b with W [out, in] row-major. */
function matvec(W: Float32Array, x: Float64Array, nOut: number, b: Float32Array | null): Float64Array {
  const nIn = x.length;
  const y = new Float64Array(nOut);
  for (let o = 0; o < nOut; o++) {
    let s = b ? b[o] : 0;
    for (let i = 0; i < nIn; i++) s += W[o * nIn + i] * x[i];
    y[o] = s;
  }
  return y;
}

function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
}

function geluExact(x: number): number {
  return 0.5 * x * (1 + erf(x / Math.SQRT2));
}

/** rotate_half RoPE of one head vector at position pos. */
function rope(v: Float64Array, pos: number, invFreq: Float32Array): Float64Array {
  const h = v.length / 2;
  const out = new Float64Array(v.length);
  for (let i = 0; i < h; i++) {
    const c = Math.cos(pos * invFreq[i]), s = Math.sin(pos * invFreq[i]);
    out[i] = v[i] * c - v[h + i] * s;
    out[h + i] = v[h + i] * c + v[i] * s;
  }
  return out;
}

/**
 * Logits of every row of one attention group: rows[i] is the input embedding, positions[i] its RoPE position,
 * allowed(i, j) whether row i attends to row j. Mask logit replaced by -1000.
 */
export function referenceForward(t: Tensors, cfg: ModelConfig, rows: Float64Array[], positions: number[],
  allowed: (i: number, j: number) => boolean): Float64Array[] {
  const D = cfg.hiddenSize, H = cfg.nHeads, Dh = D / H, V = cfg.vocabSize;
  const invFreq = T(t, 'rotary_emb.inv_freq');
  let x: Float64Array[] = rows.map((r) => Float64Array.from(r));
  const n = x.length;
  for (let l = 0; l < cfg.nBlocks; l++) {
    const p = `blocks.${l}.`;
    const q: Float64Array[][] = [], k: Float64Array[][] = [], v: Float64Array[][] = [];
    for (let i = 0; i < n; i++) {
      const qkv = matvec(T(t, p + 'attn_qkv.weight'), layerNorm(x[i], T(t, p + 'norm1.weight'), null), 3 * D, null);
      q.push([]); k.push([]); v.push([]);
      for (let h = 0; h < H; h++) {
        q[i].push(rope(qkv.slice(h * Dh, (h + 1) * Dh), positions[i], invFreq));
        k[i].push(rope(qkv.slice(D + h * Dh, D + (h + 1) * Dh), positions[i], invFreq));
        v[i].push(qkv.slice(2 * D + h * Dh, 2 * D + (h + 1) * Dh));
      }
    }
    const next: Float64Array[] = [];
    for (let i = 0; i < n; i++) {
      const att = new Float64Array(D);
      for (let h = 0; h < H; h++) {
        const js: number[] = [];
        const sc: number[] = [];
        for (let j = 0; j < n; j++) {
          if (!allowed(i, j)) continue;
          let s = 0;
          for (let d = 0; d < Dh; d++) s += q[i][h][d] * k[j][h][d];
          js.push(j);
          sc.push(s / Math.sqrt(Dh));
        }
        const mx = Math.max(...sc);
        const e = sc.map((s) => Math.exp(s - mx));
        const z = e.reduce((a, b) => a + b, 0);
        js.forEach((j, idx) => {
          for (let d = 0; d < Dh; d++) att[h * Dh + d] += (e[idx] / z) * v[j][h][d];
        });
      }
      const mid = matvec(T(t, p + 'attn_out.weight'), att, D, null).map((y, d) => y + x[i][d]);
      const hdn = matvec(T(t, p + 'mlp.0.weight'), layerNorm(mid, T(t, p + 'norm2.weight'), null), 4 * D,
        T(t, p + 'mlp.0.bias')).map(geluTanh);
      next.push(matvec(T(t, p + 'mlp.2.weight'), hdn, D, T(t, p + 'mlp.2.bias')).map((y, d) => y + mid[d]));
    }
    x = next;
  }
  return x.map((r) => {
    const lg = matvec(T(t, 'output_layer.linear.weight'), layerNorm(r, T(t, 'output_layer.norm_final.weight'), null), V,
      T(t, 'output_layer.linear.bias'));
    lg[cfg.maskIndex] = -1000;
    return lg;
  });
}

/** Token embedding row. */
export function referenceEmbed(t: Tensors, cfg: ModelConfig, id: number): Float64Array {
  const D = cfg.hiddenSize;
  return Float64Array.from(T(t, 'vocab_embed.embedding').subarray(id * D, (id + 1) * D));
}

/** Noise-encoder output for one uniform u at temperature tau. phi is rounded to float32 (the model's input dtype). */
export function referenceNoiseEmbedding(t: Tensors, cfg: ModelConfig, u: number, tau: number): Float64Array {
  const D = cfg.hiddenSize, half = D / 2;
  const phi = new Float64Array(2 * D);
  for (const [s, o] of [[u, 0], [tau, D]] as const) {
    for (let i = 0; i < half; i++) {
      const w = Math.pow(10000, -i / half);
      phi[o + i] = Math.fround(Math.cos(2 * Math.PI * s * w));
      phi[o + half + i] = Math.fround(Math.sin(2 * Math.PI * s * w));
    }
  }
  const h0 = matvec(T(t, 'noise_encoder.combined_proj.weight'), phi, D, T(t, 'noise_encoder.combined_proj.bias'));
  const ln = layerNorm(h0, T(t, 'noise_encoder.norm.weight'), T(t, 'noise_encoder.norm.bias'));
  const hdn = matvec(T(t, 'noise_encoder.mlp.0.weight'), ln, 4 * D, T(t, 'noise_encoder.mlp.0.bias')).map(geluExact);
  return matvec(T(t, 'noise_encoder.mlp.2.weight'), hdn, D, T(t, 'noise_encoder.mlp.2.bias')).map((y, d) => y + h0[d]);
}

/** Plain causal forward of one sequence of embedding rows at positions 0..n-1. */
export function referenceCausal(t: Tensors, cfg: ModelConfig, rows: Float64Array[]): Float64Array[] {
  return referenceForward(t, cfg, rows, rows.map((_, i) => i), (i, j) => j <= i);
}

/** Largest |a - b| / max(1, |b|) over paired arrays (relative for large values, absolute near zero). */
export function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`maxRelDiff: lengths ${a.length} and ${b.length} differ`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i]));
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

export const TINY: ModelConfig = {
  vocabSize: 37, hiddenSize: 16, nHeads: 2, nBlocks: 2, maskIndex: 36, maxK: 4, maxSeqLen: 64,
};

/** Deterministic pseudo-random token rows (no model RNG involved). */
export function tokenRows(B: number, T: number, V: number, seed: number, avoid = -1): number[][] {
  let s = seed >>> 0;
  const next = (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
  return Array.from({ length: B }, () => Array.from({ length: T }, () => {
    for (;;) {
      const id = Math.floor(next() * V);
      if (id !== avoid) return id;
    }
  }));
}

/** Deterministic uniforms in (0, 1). */
export function uniforms(n: number, seed: number): number[] {
  let s = (seed * 2654435761) >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 4294967296;
  });
}

/** The backends the model tests run on: TypeScript always, the native addon when it is built (both checked). */
export function testBackends(): Array<[string, Backend]> {
  const out: Array<[string, Backend]> = [['ts', withChecks(tsBackend)]];
  const nat = loadNativeBackend();
  if (nat.backend) out.push(['native', withChecks(nat.backend)]);
  return out;
}
