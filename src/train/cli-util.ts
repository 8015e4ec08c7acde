// Option parsing shared by the commands: numbers are validated here, naming the flag, so a typo fails before any work.

export function numOption(name: string, v: unknown, min = -Infinity, max = Infinity): number {
  const n = parseNumber(v);
  if (n === null || n < min || n > max) throw new Error(`${name} must be a number in [${min}, ${max}], got '${String(v)}'`);
  return n;
}

export function intOption(name: string, v: unknown, min = -Infinity, max = Infinity): number {
  const n = parseNumber(v);
  if (n === null || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new Error(`${name} must be an integer in [${min}, ${max}], got '${String(v)}'`);
  }
  return n;
}

/** A finite number, or null for anything else (a blank string too: Number('') and Number(' ') are 0). */
function parseNumber(v: unknown): number | null {
  if (v === undefined || (typeof v === 'string' && v.trim() === '')) return null;
  const n = typeof v === 'number' ? v : Number(String(v));
  return Number.isFinite(n) ? n : null;
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
