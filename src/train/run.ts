// The parts of a run folder shared by `train` and `distill`: config resolution (fresh start or resume with the stored
// config), the learning-rate schedule, validation data, and the summary written when a run finishes.
import fs from 'node:fs';
import path from 'node:path';
import type { OptimSettings } from './presets.ts';
import { clearCheckpoints, hasCheckpoint } from './checkpoint.ts';
import { writeFileAtomic } from './atomic.ts';
import { learningRate } from '../tensor/optim.ts';

export const CONFIG_FILE = 'config.json';
export const LOG_FILE = 'log.jsonl';
export const RESULT_FILE = 'result.json';
export const MODEL_FILE = 'model.safetensors';
export const TOKENIZER_FILE = 'tokenizer.json';

/**
 * Starts a run folder or reopens one. A run with a checkpoint resumes with its stored config; `explicit` holds the
 * settings the user typed, and any that differ from the stored ones are an error (except `steps`, which may be
 * raised to train longer). `fresh` discards an existing run.
 */
export function openRun<C extends { optim: OptimSettings }>(runDir: string, config: C, explicit: Record<string, unknown>,
  fresh: boolean): { config: C; resuming: boolean } {
  const file = path.join(runDir, CONFIG_FILE);
  if (fresh && fs.existsSync(runDir)) {
    clearCheckpoints(runDir);
    for (const f of [CONFIG_FILE, LOG_FILE, RESULT_FILE, MODEL_FILE]) fs.rmSync(path.join(runDir, f), { force: true });
  }
  fs.mkdirSync(runDir, { recursive: true });
  if (fs.existsSync(file) && hasCheckpoint(runDir)) {
    const stored = JSON.parse(fs.readFileSync(file, 'utf8')) as C;
    const flat = { ...stored, ...stored.optim } as unknown as Record<string, unknown>;
    const conflicts = Object.entries(explicit)
      .filter(([k, v]) => k !== 'steps' && k in flat && JSON.stringify(flat[k]) !== JSON.stringify(v))
      .map(([k, v]) => `${k}: stored ${JSON.stringify(flat[k])}, given ${JSON.stringify(v)}`);
    if (conflicts.length) {
      throw new Error(`run ${runDir} exists with other settings (${conflicts.join('; ')}); ` +
        'omit them to resume, or pass --fresh to start over');
    }
    if (explicit.steps !== undefined) stored.optim.steps = explicit.steps as number;
    writeFileAtomic(file, JSON.stringify(stored, null, 2) + '\n');
    return { config: stored, resuming: true };
  }
  clearCheckpoints(runDir);
  for (const f of [LOG_FILE, RESULT_FILE]) fs.rmSync(path.join(runDir, f), { force: true });
  writeFileAtomic(file, JSON.stringify(config, null, 2) + '\n');
  return { config, resuming: false };
}

export function lrAt(step: number, o: OptimSettings): number {
  return learningRate(step, { peak: o.lr, floor: Math.min(o.minLr, o.lr), warmup: Math.min(o.warmup, o.steps), total: o.steps });
}

export function checkOptim(o: OptimSettings): void {
  const int = (k: keyof OptimSettings, min: number): void => {
    const v = o[k];
    if (!Number.isSafeInteger(v) || v < min) throw new Error(`${k} must be an integer >= ${min}, got ${v}`);
  };
  const num = (k: keyof OptimSettings, lo: number, hi = Infinity): void => {
    const v = o[k];
    if (typeof v !== 'number' || !(v >= lo && v <= hi)) throw new Error(`${k} must be a number in [${lo}, ${hi}], got ${v}`);
  };
  int('steps', 1); int('batchSize', 1); int('seqLen', 2); int('warmup', 0);
  int('evalEvery', 1); int('evalSeqs', 1); int('ckptEvery', 1); int('logEvery', 1);
  num('lr', 0); num('minLr', 0); num('weightDecay', 0); num('beta1', 0, 1); num('beta2', 0, 1); num('clip', Number.MIN_VALUE);
}

export function writeResult(runDir: string, result: object): void {
  writeFileAtomic(path.join(runDir, RESULT_FILE), JSON.stringify(result, null, 2) + '\n');
}

export function readResult<R>(runDir: string): R | null {
  const f = path.join(runDir, RESULT_FILE);
  return fs.existsSync(f) ? (JSON.parse(fs.readFileSync(f, 'utf8')) as R) : null;
}

/** Yields to the event loop so signal handlers (Ctrl-C) can run between synchronous training steps. */
export function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Wall-clock bookkeeping of a training loop, shared by `train` and `distill`: tokens/s over the current log window,
 * and seconds not yet banked into the run's elapsed time (banked at each checkpoint, so resumed runs add up). */
export class LoopClock {
  tokPerSec = 0;
  private sessionStart = Date.now();
  private windowTokens = 0;
  private windowStart = Date.now();

  addTokens(n: number): void {
    this.windowTokens += n;
  }

  /** Ends the throughput window (on log steps) and returns its tokens/s. */
  closeWindow(): number {
    const now = Date.now();
    this.tokPerSec = (this.windowTokens * 1000) / Math.max(1, now - this.windowStart);
    this.windowTokens = 0;
    this.windowStart = now;
    return this.tokPerSec;
  }

  /** Seconds since the last bank() (or the start), without banking them. */
  unbanked(): number {
    return (Date.now() - this.sessionStart) / 1000;
  }

  /** Returns the unbanked seconds and starts counting afresh, so each second is banked once. */
  bank(): number {
    const s = this.unbanked();
    this.sessionStart = Date.now();
    return s;
  }
}
