// Option parsing shared by the training commands: numbers are validated here so a typo fails before any work.

export function numOption(name: string, v: unknown, min = -Infinity, max = Infinity): number {
  const n = typeof v === 'number' ? v : Number(String(v));
  if (v === undefined || v === '' || !Number.isFinite(n) || n < min || n > max) {
    throw new Error(`${name} must be a number in [${min}, ${max}], got '${String(v)}'`);
  }
  return n;
}

export function intOption(name: string, v: unknown, min = -Infinity, max = Infinity): number {
  const n = numOption(name, v, min, max);
  if (!Number.isSafeInteger(n)) throw new Error(`${name} must be an integer, got '${String(v)}'`);
  return n;
}

/** '1,2,4' -> [1, 2, 4]. */
export function intList(name: string, v: string): number[] {
  const parts = v.split(',').map((s) => s.trim()).filter(Boolean);
  if (parts.length === 0) throw new Error(`${name} must be a comma-separated list of integers, got '${v}'`);
  return parts.map((p) => intOption(name, p, 1));
}

/** '0.7:1.3' or '0.7,1.3' -> [0.7, 1.3]; a single number gives [x, x]. */
export function rangeOption(name: string, v: string): [number, number] {
  const parts = v.split(/[:,]/).map((s) => s.trim());
  const lo = numOption(name, parts[0], Number.MIN_VALUE);
  const hi = parts.length > 1 ? numOption(name, parts[1], lo) : lo;
  if (parts.length > 2) throw new Error(`${name} must be 'lo:hi', got '${v}'`);
  return [lo, hi];
}
