// Finite-difference gradient checking in float64. The pattern: write the op (or a whole model) as a scalar function
// f() of some Float64Array inputs, typically f = sum(output * R) for a fixed random R, run the analytic backward with
// dout = R, and compare each input's gradient with central differences (f(x+h) - f(x-h)) / 2h.
//
// Error metric: |analytic - numeric| / max(|analytic|, |numeric|, floor), where floor = floorRel * (largest
// |gradient| of the input). Large components are compared relatively; components far below the gradient's scale
// (where the finite difference is dominated by rounding noise) are compared against the scale instead, so a true
// zero gradient does not produce a huge relative error from 1e-12 noise.

export interface GradCheckOptions {
  /** Step size h, relative to max(1, |x_i|). Default 1e-5 (float64 central differences: error ~h^2 + eps/h). */
  step?: number;
  /** Maximum allowed error (metric above). Default 1e-6. */
  tol?: number;
  /** Floor of the denominator as a fraction of the largest |gradient| component. Default 1e-3. */
  floorRel?: number;
  /** Indices of x to check (default: all). Large inputs can check a sample. */
  indices?: ArrayLike<number>;
}

export interface GradCheckResult {
  maxErr: number;
  worstIndex: number;
  analytic: number; // at worstIndex
  numeric: number; // at worstIndex
  checked: number;
  numericGrad: Float64Array; // numeric gradient at the checked indices (0 elsewhere)
}

/** Central-difference gradient of f with respect to x (x is perturbed in place and restored exactly). */
export function numericGradient(f: () => number, x: Float64Array, step = 1e-5,
  indices?: ArrayLike<number>): Float64Array {
  const g = new Float64Array(x.length);
  const n = indices ? indices.length : x.length;
  for (let t = 0; t < n; t++) {
    const i = indices ? indices[t] : t;
    const x0 = x[i];
    const h = step * Math.max(1, Math.abs(x0));
    x[i] = x0 + h;
    const fp = f();
    x[i] = x0 - h;
    const fm = f();
    x[i] = x0;
    // (x0 + h) - (x0 - h) is the step actually taken after rounding.
    g[i] = (fp - fm) / ((x0 + h) - (x0 - h));
  }
  return g;
}

/** Compares analytic with the numeric gradient of f at x without throwing. */
export function compareGradient(f: () => number, x: Float64Array, analytic: ArrayLike<number>,
  opts: GradCheckOptions = {}): GradCheckResult {
  if (analytic.length !== x.length) {
    throw new Error(`gradcheck: analytic gradient has ${analytic.length} elements, input has ${x.length}`);
  }
  const numeric = numericGradient(f, x, opts.step ?? 1e-5, opts.indices);
  const idx = opts.indices ?? Array.from({ length: x.length }, (_, i) => i);
  let scale = 0;
  for (let t = 0; t < idx.length; t++) {
    const i = idx[t];
    scale = Math.max(scale, Math.abs(analytic[i]), Math.abs(numeric[i]));
  }
  const floor = Math.max((opts.floorRel ?? 1e-3) * scale, 1e-300);
  let maxErr = 0, worst = -1;
  for (let t = 0; t < idx.length; t++) {
    const i = idx[t];
    const a = analytic[i], nm = numeric[i];
    const err = Math.abs(a - nm) / Math.max(Math.abs(a), Math.abs(nm), floor);
    if (!(err <= maxErr)) { // also catches NaN
      maxErr = Number.isNaN(err) ? Infinity : err;
      worst = i;
      if (maxErr === Infinity) break;
    }
  }
  return {
    maxErr, worstIndex: worst, analytic: worst >= 0 ? analytic[worst] : 0, numeric: worst >= 0 ? numeric[worst] : 0,
    checked: idx.length, numericGrad: numeric,
  };
}

/** Throws an Error naming `what` and the worst component when the analytic gradient disagrees with f's numeric one. */
export function checkGradient(what: string, f: () => number, x: Float64Array, analytic: ArrayLike<number>,
  opts: GradCheckOptions = {}): GradCheckResult {
  const r = compareGradient(f, x, analytic, opts);
  const tol = opts.tol ?? 1e-6;
  if (!(r.maxErr <= tol)) {
    throw new Error(`gradcheck ${what}: error ${r.maxErr.toExponential(3)} > tol ${tol} at index ${r.worstIndex} ` +
      `(analytic ${r.analytic}, numeric ${r.numeric}; ${r.checked} components checked)`);
  }
  return r;
}

/** sum_i a[i] * b[i] in float64, the usual scalar projection f = <output, R> used with checkGradient. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`gradcheck dot: lengths ${a.length} and ${b.length} differ`);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}
