// The `native` Backend: a thin typed wrapper over the N-API addon (native/*.c, built to build/Release/kforce.node).
// Float32 buffers go to the addon, which validates every argument and throws errors naming the op; Float64 buffers
// (gradient checks) go to the TypeScript backend, since the addon is float32-only.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AttentionArgs, AttentionBackwardArgs, Backend, FloatArray } from './backend.ts';
import { tsBackend } from './ts-backend.ts';

/** The raw addon surface (argument order as in native/addon.c). */
interface Addon {
  linear(out: Float32Array, x: Float32Array, w: Float32Array, bias: Float32Array | null, M: number, K: number,
    N: number, activation: string | null): void;
  vpack(w: Float32Array, N: number, K: number, packed: Float32Array): boolean;
  vpackFloats(N: number, K: number): number;
  vpackUse(M: number, K: number): boolean;
  linearVpacked(out: Float32Array, x: Float32Array, packed: Float32Array, bias: Float32Array | null, M: number,
    K: number, N: number, activation: string | null): void;
  blasLinear(out: Float32Array, x: Float32Array, w: Float32Array, M: number, K: number, N: number): boolean;
  gemm(transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number, a: Float32Array,
    b: Float32Array, beta: number, c: Float32Array): void;
  layerNorm(out: Float32Array, mean: Float32Array, rstd: Float32Array, x: Float32Array, weight: Float32Array,
    bias: Float32Array | null, rows: number, D: number, eps: number): void;
  layerNormBackward(dx: Float32Array, dweight: Float32Array, dbias: Float32Array | null, dout: Float32Array,
    x: Float32Array, mean: Float32Array, rstd: Float32Array, weight: Float32Array, rows: number, D: number): void;
  gelu(out: Float32Array, x: Float32Array, n: number, kind: string): void;
  geluBackward(dx: Float32Array, dout: Float32Array, x: Float32Array, n: number, kind: string): void;
  rope(x: Float32Array, stride: number, rows: number, nHeads: number, headDim: number, positions: Int32Array,
    invFreq: Float32Array, inverse: boolean): void;
  attention(q: Float32Array, qStride: number, k: Float32Array, kStride: number, v: Float32Array, vStride: number,
    out: Float32Array, outStride: number, lse: Float32Array, rowPtr: Int32Array, ranges: Int32Array, nq: number,
    nHeads: number, headDim: number, scale: number): void;
  attentionBackward(q: Float32Array, qStride: number, k: Float32Array, kStride: number, v: Float32Array,
    vStride: number, out: Float32Array, outStride: number, lse: Float32Array, rowPtr: Int32Array, ranges: Int32Array,
    nq: number, nHeads: number, headDim: number, scale: number, dout: Float32Array, dq: Float32Array,
    dk: Float32Array, dv: Float32Array): void;
  crossEntropy(losses: Float32Array, dlogits: Float32Array | null, logits: Float32Array, targets: Int32Array,
    rows: number, V: number, ignoreIndex: number, rowScale: Float32Array | null): void;
  sumSquares(g: Float32Array): number;
  adamw(params: Float32Array, grads: Float32Array, m: Float32Array, v: Float32Array, decayMask: Uint8Array | null,
    lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, step: number, gradScale: number): void;
  sampleAr(rows: Float32Array[], V: number, temps: Float64Array, topPs: Float64Array, us: Float64Array,
    out: Int32Array): void;
  selectPflm(blocks: Float32Array[], counts: Int32Array[], takes: Int32Array, lambdas: Float64Array, V: number,
    kmax: number, maskIndex: number, out: Int32Array): void;
  exp64(out: Float64Array, x: Float64Array): void;
  screenSupported(): boolean;
  screenBytes(N: number, K: number): number;
  screenInt8Ratio(): number;
  screenPrepare(w: Float32Array, N: number, K: number, wq: Int8Array, meta: Float32Array): boolean;
  screenSelect(h: Float32Array, M: number, K: number, N: number, wq: Int8Array, meta: Float32Array, w: Float32Array,
    bias: Float32Array | null, isum: Int32Array, rowStart: Int32Array, takes: Int32Array, counts: Int32Array[],
    lambdas: Float64Array, maskIndex: number, kmax: number, out: Int32Array): void;
  addInPlace(a: Float32Array, b: Float32Array): void;
  scatterRows(dst: Float32Array, dstStride: number, src: Float32Array, srcStride: number, width: number,
    rowIndex: Int32Array): void;
  readBandwidth(buf: Float32Array, reps: number): number;
  fmaPeak(ms: number): number;
  misalignment(buf: Float32Array): number;
  adviseHuge(buf: Float32Array): void;
  hugePages(on?: boolean | null): boolean;
  info(): { blas: string; threads: number; avx512: boolean };
}

let cached: { addon: Addon | null; error: string | null; path: string | null } | null = null;

/** build/Release/kforce.node of the package this file belongs to (source or compiled layout), or KFORCE_NATIVE_PATH. */
function addonPath(): string | null {
  const override = process.env.KFORCE_NATIVE_PATH;
  if (override) return override;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const p = join(dir, 'build', 'Release', 'kforce.node');
    if (existsSync(p)) return p;
    dir = resolve(dir, '..');
  }
  return null;
}

function loadAddon(): { addon: Addon | null; error: string | null; path: string | null } {
  if (cached) return cached;
  const path = addonPath();
  if (!path) {
    cached = { addon: null, path: null, error: 'build/Release/kforce.node not found (run `npm run build:native`)' };
    return cached;
  }
  // OpenBLAS worker threads busy-wait for ~2^28 cycles after each call by default; on a 2-core machine that
  // steals the core our own pool needs for the next kernel. The library reads this when it is loaded.
  if (process.env.OPENBLAS_THREAD_TIMEOUT === undefined) process.env.OPENBLAS_THREAD_TIMEOUT = '16';
  try {
    const addon = createRequire(import.meta.url)(path) as Addon;
    cached = { addon, path, error: null };
  } catch (e) {
    cached = { addon: null, path, error: `cannot load ${path}: ${(e as Error).message}` };
  }
  return cached;
}

/** The loaded addon's exports (null when it is unavailable), for tools that time its calls (scripts/profile-step.ts):
 * the backend and the kernel wrappers look their functions up on this object at every call. */
export function nativeAddonExports(): Record<string, unknown> | null {
  return loadAddon().addon as unknown as Record<string, unknown> | null;
}

function requireAddon(what: string): Addon {
  const { addon, error } = loadAddon();
  if (!addon) throw new Error(`${what}: native addon unavailable: ${error}`);
  return addon;
}

const isF64 = (a: FloatArray): a is Float64Array => a instanceof Float64Array;
const f32 = (a: FloatArray): Float32Array => a as Float32Array;
const f32n = (a: FloatArray | null): Float32Array | null => a as Float32Array | null;

// ---- packed weights for 9-64 rows (native/linear.c kf_linear_vpacked) ------------------------------------------------
// A lane-major copy of a weight matrix lets the linear kernel read every weight once for up to 64 rows (the grouped
// path computes a block once per 8 rows while DRAM idles), with the same bits. The kernel decides where (measured,
// RESULTS.md sessions 15 and 17): at 16, 28-32, 42-48 and 56-64 rows, and from 9 to 64 rows for K >= 2048. The copies
// cost one more copy of every weight used at those row counts, so they are off by default and the decoding commands
// turn them on (preferPackedLinearsForDecoding).
// Copies are made on first use, keyed by the weight view; a copy is dropped when an optimizer step runs (adamw) and
// remade when a few sampled weights no longer match it (weights overwritten some other way).
let packedOn = false;
let packedCopies = new WeakMap<Float32Array, { packed: Float32Array | null; probe: Float32Array }>();
const PROBES = 8;
const packedUse = new Map<number, Map<number, boolean>>(); // M -> K -> the kernel's kf_linear_vpacked_use
const packedCounts = { copies: 0, calls: 0 };

/** How many packed copies were made and how many linear calls ran from one, since the process started. */
export function packedLinearCounts(): { copies: number; calls: number } {
  return { ...packedCounts };
}

const probeNow = new Float32Array(PROBES);

/** PROBES weights spread over w, into out. */
function probeOf(w: Float32Array, out: Float32Array): Float32Array {
  const n = w.length;
  for (let i = 0; i < PROBES; i++) out[i] = w[Math.floor((i * (n - 1)) / (PROBES - 1))];
  return out;
}

function sameProbe(w: Float32Array, probe: Float32Array): boolean {
  const now = probeOf(w, probeNow);
  for (let i = 0; i < PROBES; i++) {
    if (!(now[i] === probe[i] || (now[i] !== now[i] && probe[i] !== probe[i]))) return false; // NaN matches NaN
  }
  return true;
}

function usePacked(addon: Addon, M: number, K: number): boolean {
  let byK = packedUse.get(M);
  if (!byK) packedUse.set(M, (byK = new Map()));
  let u = byK.get(K);
  if (u === undefined) byK.set(K, (u = addon.vpackUse(M, K)));
  return u;
}

/** The packed copy of w [N, K] (made now if missing or stale), or null when this build or shape has none. */
function packedCopy(addon: Addon, w: Float32Array, N: number, K: number): Float32Array | null {
  const hit = packedCopies.get(w);
  if (hit && sameProbe(w, hit.probe)) return hit.packed;
  let packed: Float32Array | null = alignedFloat32(addon.vpackFloats(N, K));
  if (!addon.vpack(w, N, K, packed)) packed = null;
  else packedCounts.copies++;
  packedCopies.set(w, { packed, probe: probeOf(w, new Float32Array(PROBES)) });
  return packed;
}

/**
 * The packed-weight path of the native `linear` for 9-64 rows (see above): `on` sets it, no argument reads it;
 * false without the addon. Off by default; KFORCE_LIN_VP=0 keeps the kernel from ever choosing it.
 */
export function packedLinears(on?: boolean): boolean {
  if (!loadAddon().addon) return false;
  if (on !== undefined) {
    packedOn = on;
    if (!on) packedCopies = new WeakMap();
  }
  return packedOn;
}

/** For processes that only decode (generate, serve, the speed and quality benchmarks): packed weights on. */
export function preferPackedLinearsForDecoding(): boolean {
  return packedLinears(true);
}

/** What the decoding commands (generate, serve, the speed and quality benchmarks) set before loading a model: huge
 * pages (preferHugePagesForDecoding) and packed weights (preferPackedLinearsForDecoding). */
export function preferNativeSettingsForDecoding(): void {
  preferHugePagesForDecoding();
  preferPackedLinearsForDecoding();
}

function makeBackend(addon: Addon): Backend {
  const info = addon.info();
  return {
    name: 'native',
    threads: info.threads,
    blas: info.blas,

    linear(out, x, w, bias, M, K, N, activation) {
      if (isF64(out)) return tsBackend.linear(out, x, w, bias, M, K, N, activation);
      // (usePacked: the kernel's rule, which also says no outside 9-64 rows or for K not a multiple of 16)
      if (packedOn && N > 0 && w.length === N * K && usePacked(addon, M, K)) {
        const packed = packedCopy(addon, f32(w), N, K);
        if (packed) {
          packedCounts.calls++;
          return addon.linearVpacked(f32(out), f32(x), packed, f32n(bias), M, K, N, activation ?? null);
        }
      }
      addon.linear(f32(out), f32(x), f32(w), f32n(bias), M, K, N, activation ?? null);
    },
    gemm(transA, transB, M, N, K, alpha, a, b, beta, c) {
      if (isF64(c)) return tsBackend.gemm(transA, transB, M, N, K, alpha, a, b, beta, c);
      addon.gemm(transA, transB, M, N, K, alpha, f32(a), f32(b), beta, f32(c));
    },
    layerNorm(out, mean, rstd, x, weight, bias, rows, D, eps) {
      if (isF64(out)) return tsBackend.layerNorm(out, mean, rstd, x, weight, bias, rows, D, eps);
      addon.layerNorm(f32(out), f32(mean), f32(rstd), f32(x), f32(weight), f32n(bias), rows, D, eps);
    },
    layerNormBackward(dx, dweight, dbias, dout, x, mean, rstd, weight, rows, D) {
      if (isF64(dx)) return tsBackend.layerNormBackward(dx, dweight, dbias, dout, x, mean, rstd, weight, rows, D);
      addon.layerNormBackward(f32(dx), f32(dweight), f32n(dbias), f32(dout), f32(x), f32(mean), f32(rstd),
        f32(weight), rows, D);
    },
    gelu(out, x, n, kind) {
      if (isF64(out)) return tsBackend.gelu(out, x, n, kind);
      addon.gelu(f32(out), f32(x), n, kind);
    },
    geluBackward(dx, dout, x, n, kind) {
      if (isF64(dx)) return tsBackend.geluBackward(dx, dout, x, n, kind);
      addon.geluBackward(f32(dx), f32(dout), f32(x), n, kind);
    },
    rope(x, stride, rows, nHeads, headDim, positions, invFreq, inverse) {
      if (isF64(x)) return tsBackend.rope(x, stride, rows, nHeads, headDim, positions, invFreq, inverse);
      addon.rope(f32(x), stride, rows, nHeads, headDim, positions, f32(invFreq), inverse);
    },
    attention<T extends FloatArray>(a: AttentionArgs<T>) {
      if (isF64(a.q)) return tsBackend.attention(a);
      addon.attention(f32(a.q), a.qStride, f32(a.k), a.kStride, f32(a.v), a.vStride, f32(a.out), a.outStride,
        f32(a.lse), a.mask.rowPtr, a.mask.ranges, a.nq, a.nHeads, a.headDim, a.scale);
    },
    attentionBackward<T extends FloatArray>(a: AttentionBackwardArgs<T>) {
      if (isF64(a.q)) return tsBackend.attentionBackward(a);
      addon.attentionBackward(f32(a.q), a.qStride, f32(a.k), a.kStride, f32(a.v), a.vStride, f32(a.out), a.outStride,
        f32(a.lse), a.mask.rowPtr, a.mask.ranges, a.nq, a.nHeads, a.headDim, a.scale, f32(a.dout), f32(a.dq),
        f32(a.dk), f32(a.dv));
    },
    crossEntropy(losses, dlogits, logits, targets, rows, V, ignoreIndex, rowScale) {
      if (isF64(logits)) return tsBackend.crossEntropy(losses, dlogits, logits, targets, rows, V, ignoreIndex, rowScale);
      addon.crossEntropy(f32(losses), f32n(dlogits), f32(logits), targets, rows, V, ignoreIndex, f32n(rowScale));
    },
    sumSquares(g) {
      return addon.sumSquares(g);
    },
    adamw(params, grads, m, v, o) {
      packedCopies = new WeakMap(); // the weights change: packed copies are stale
      addon.adamw(params, grads, m, v, o.decayMask, o.lr, o.beta1, o.beta2, o.eps, o.weightDecay, o.step, o.gradScale);
    },
  };
}

let backendCache: Backend | null = null;

/** The native backend, or null with the reason it is unavailable (addon not built or not loadable). */
export function loadNativeBackend(): { backend: Backend | null; error: string | null } {
  if (backendCache) return { backend: backendCache, error: null };
  const { addon, error } = loadAddon();
  if (!addon) return { backend: null, error };
  backendCache = makeBackend(addon);
  return { backend: backendCache, error: null };
}

/**
 * The addon's token-selection kernels (native/sample.c), which give exactly the tokens of the TypeScript rules in
 * src/decode/sampling.ts (that module decides when to use them); null when the addon is unavailable.
 *  - sampleAr: per row i (logits processors already applied), temps[i] = 0: first argmax; else the inverse-CDF token
 *    of softmax(row / temps[i]) at us[i], within the top-p nucleus when topPs[i] < 1. out[i] = token, -1 where
 *    the TS rule throws (NaN or infinite logits), -2 when scratch memory ran out. temps finite >= 0, topPs and us
 *    in (0, 1].
 *  - selectPflm: per sequence i, slots s < takes[i] of blocks[i] ([kmax * V]) take in turn
 *    argmax(logits - fround(lambdas[i]) * count), counts[i] including the earlier slots' choices (restored after:
 *    the caller records the tokens); out[i * kmax + s] = token, or -1 for a NaN row (later slots unset). Sets the
 *    mask logit of the used slots in place.
 *  - exp64: out[i] = exp(x[i]) with the bits of Math.exp.
 */
export interface NativeSelect {
  sampleAr(rows: Float32Array[], V: number, temps: Float64Array, topPs: Float64Array, us: Float64Array,
    out: Int32Array): void;
  selectPflm(blocks: Float32Array[], counts: Int32Array[], takes: Int32Array, lambdas: Float64Array, V: number,
    kmax: number, maskIndex: number, out: Int32Array): void;
  exp64(out: Float64Array, x: Float64Array): void;
}

export function nativeSelect(): NativeSelect | null {
  const { addon } = loadAddon();
  if (!addon) return null;
  return {
    sampleAr: (rows, V, temps, topPs, us, out) => addon.sampleAr(rows, V, temps, topPs, us, out),
    selectPflm: (blocks, counts, takes, lambdas, V, kmax, maskIndex, out) =>
      addon.selectPflm(blocks, counts, takes, lambdas, V, kmax, maskIndex, out),
    exp64: (out, x) => addon.exp64(out, x),
  };
}

/**
 * The screened PFLM selection of the addon (native/screen.c); null when the addon is unavailable or was built
 * without int8 dot products (AVX512_VNNI).
 *  - int8Ratio(): int8 dot-product instructions (vpdpbusd, 64 multiply-adds) per fp32 FMA instruction (16) on one
 *    core of this host, measured once per process (~10 ms).
 *  - bytes(N, K): size of the int8 weight copies (rows of K rounded up to 64 bytes, twice: in groups of 4 rows for
 *    1-7 h rows and lane-major tiles of 12 rows for 8 or more, native/screen.c).
 *  - prepare: wq [bytes(N, K)] = int8 copy of w [N, K], meta [SCREEN_META * N] = per row its scale, upper bounds of
 *    its L1 norm and of its quantisation residual's L2 norm, the sum of its int8 values and an upper bound of its L2
 *    norm; false when w holds a non-finite value (the screen cannot bound the logits).
 *  - select: for sequence i, slots s < takes[i] on rows rowStart[i] + s of h [M, K]: the tokens selectPflm gives on
 *    the logits h w^T + bias (mask logit -1000) with counts[i] and lambdas[i], in out[i * kmax + s]; -1 where that
 *    rule fails on a row (NaN), -2 when memory ran out (later slots unset). counts are left as they were. isum:
 *    [M * N] scratch.
 */
/** Floats of per-row data the screen keeps for each output row (KF_SCREEN_META in native/kf.h; the addon checks it). */
export const SCREEN_META = 5;

export interface NativeScreen {
  bytes(N: number, K: number): number;
  int8Ratio(): number;
  prepare(w: Float32Array, N: number, K: number, wq: Int8Array, meta: Float32Array): boolean;
  select(h: Float32Array, M: number, K: number, N: number, wq: Int8Array, meta: Float32Array, w: Float32Array,
    bias: Float32Array | null, isum: Int32Array, rowStart: Int32Array, takes: Int32Array, counts: Int32Array[],
    lambdas: Float64Array, maskIndex: number, kmax: number, out: Int32Array): void;
}

export function nativeScreen(): NativeScreen | null {
  const { addon } = loadAddon();
  if (!addon || !addon.screenSupported()) return null;
  return {
    bytes: (N, K) => addon.screenBytes(N, K),
    int8Ratio: () => addon.screenInt8Ratio(),
    prepare: (w, N, K, wq, meta) => addon.screenPrepare(w, N, K, wq, meta),
    select: (h, M, K, N, wq, meta, w, bias, isum, rowStart, takes, counts, lambdas, maskIndex, kmax, out) =>
      addon.screenSelect(h, M, K, N, wq, meta, w, bias, isum, rowStart, takes, counts, lambdas, maskIndex, kmax, out),
  };
}

/**
 * Row glue of the forward pass in the addon (native/rows.c), for float32 buffers; null when the addon is unavailable.
 * Results equal the JS loops bit for bit.
 *  - addInPlace: a += b (same length).
 *  - scatterRows: row r of src (stride srcStride) to row rowIndex[r] of dst (stride dstStride), `width` floats each.
 */
export interface NativeRows {
  addInPlace(a: Float32Array, b: Float32Array): void;
  scatterRows(dst: Float32Array, dstStride: number, src: Float32Array, srcStride: number, width: number,
    rowIndex: Int32Array): void;
}

export function nativeRows(): NativeRows | null {
  const { addon } = loadAddon();
  if (!addon) return null;
  return {
    addInPlace: (a, b) => addon.addInPlace(a, b),
    scatterRows: (dst, dstStride, src, srcStride, width, rowIndex) =>
      addon.scatterRows(dst, dstStride, src, srcStride, width, rowIndex),
  };
}

/** Streaming read (sum) of buf on all native threads, best of `reps`; returns GB/s. For benchmarks. */
export function readBandwidth(buf: Float32Array, reps: number): number {
  return requireAddon('readBandwidth').readBandwidth(buf, reps);
}

/** fp32 FMA throughput of all native threads (independent FMA chains for about `ms` ms), GFLOP/s: the compute
 * peak this machine gives right now (co-tenants included). For benchmarks. */
export function fmaPeak(ms = 200): number {
  return requireAddon('fmaPeak').fmaPeak(ms);
}

/** What OpenBLAS alone does for out = x @ w^T (sgemv for one row, sgemm otherwise); false when built without
 * BLAS. The benchmarks' reference point. */
export function blasLinear(out: Float32Array, x: Float32Array, w: Float32Array, M: number, K: number,
  N: number): boolean {
  return requireAddon('blasLinear').blasLinear(out, x, w, M, K, N);
}

/**
 * Transparent huge pages for the native backend's large buffers (KV caches, workspaces, allocated from now on) and for
 * the weights the `linear` kernel reads from now on: `on` sets it, no argument reads it; false without the addon.
 * Off by default (KFORCE_LIN_HUGE=1 turns it on at start-up). On the development host (docs/RESULTS.md, session 13)
 * it made decoding faster (AR by 6-35%, the PFLM by -1 to +33%, batch 1 to 64) and a small model's training step
 * 4-34% slower, so the CLI's decoding commands turn it on (preferHugePagesForDecoding) and training leaves it off.
 * Values never change, only where memory sits.
 */
export function hugePages(on?: boolean): boolean {
  const { addon } = loadAddon();
  if (!addon) return false;
  return addon.hugePages(on === undefined ? null : on);
}

/** For processes that only decode (generate, serve, the speed and quality benchmarks): huge pages on, unless
 * KFORCE_LIN_HUGE says otherwise (set and not empty: left as the knob read it). Call before the model is loaded, so
 * that its buffers are placed on them. Returns whether they are on. */
export function preferHugePagesForDecoding(env: NodeJS.ProcessEnv = process.env): boolean {
  const set = env.KFORCE_LIN_HUGE;
  if (set !== undefined && set !== '') return hugePages();
  return hugePages(true);
}

/** Bytes by which the first element of `a` sits past a 64-byte (cache line) boundary; null without the addon. */
export function cacheLineOffset(a: Float32Array): number | null {
  const { addon } = loadAddon();
  return addon ? addon.misalignment(a) : null;
}

/** Allocations of at least this many bytes are advised onto transparent huge pages while the native `huge` knob is on
 * (hugePages above). */
const HUGE_ALLOC_BYTES = 4 << 20;

/** A zeroed Float32Array of n elements whose first element sits on a 64-byte (cache line) boundary, so that
 * AVX-512 loads of its rows do not split lines (large ones on huge pages if enabled, see HUGE_ALLOC_BYTES). Falls back to a plain
 * array when the addon is unavailable. */
export function alignedFloat32(n: number): Float32Array {
  const { addon } = loadAddon();
  if (!addon) return new Float32Array(n);
  const raw = new Float32Array(n + 16);
  if (raw.byteLength >= HUGE_ALLOC_BYTES) addon.adviseHuge(raw);
  const skew = addon.misalignment(raw);
  const off = skew === 0 ? 0 : (64 - skew) / 4;
  if (!Number.isInteger(off)) return new Float32Array(n); // not even 4-byte aligned: nothing sensible to do
  return raw.subarray(off, off + n);
}
