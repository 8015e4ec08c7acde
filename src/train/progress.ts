// What a training run reports while it runs: a JSONL log (one object per logged step or evaluation, appended and
// flushed as it goes) and a progress bar with loss and tokens/s on a terminal, or plain periodic lines otherwise.
import fs from 'node:fs';
import cliProgress from 'cli-progress';

export type LogRecord = Record<string, unknown> & { step: number; event: string };

export class JsonlLog {
  private fd: number;
  constructor(readonly file: string) {
    this.fd = fs.openSync(file, 'a');
  }

  write(rec: LogRecord): void {
    fs.writeSync(this.fd, JSON.stringify(rec) + '\n');
  }

  close(): void {
    fs.closeSync(this.fd);
  }

  /** Drops records after `step` (left by a run killed after its last checkpoint), so a resumed run's log reads as
   * one uninterrupted run. */
  static truncateAfter(file: string, step: number): void {
    if (!fs.existsSync(file)) return;
    const keep = fs.readFileSync(file, 'utf8').split('\n').filter((line) => {
      if (!line.trim()) return false;
      try {
        const r = JSON.parse(line) as { step?: number };
        return typeof r.step !== 'number' || r.step <= step;
      } catch {
        return false; // a line cut short by the kill
      }
    });
    fs.writeFileSync(file, keep.map((l) => l + '\n').join(''));
  }

  static read(file: string): LogRecord[] {
    if (!fs.existsSync(file)) return [];
    return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as LogRecord);
  }
}

export interface ProgressValues {
  loss: number;
  val?: number | null;
  tokPerSec: number;
  extra?: string;
}

/** A cli-progress bar on a TTY; elsewhere a line every `every` steps (or none when quiet). */
export class Progress {
  private bar: cliProgress.SingleBar | null = null;
  private lastLine = 0;
  private lastDraw = 0;

  constructor(private readonly label: string, private readonly total: number, start: number,
    private readonly every: number, private readonly quiet: boolean) {
    if (!quiet && process.stderr.isTTY) {
      this.bar = new cliProgress.SingleBar({
        format: `${label} {bar} {value}/{total} | loss {loss} | val {val} | {tps} tok/s | {extra} | ETA {eta_formatted}`,
        stream: process.stderr,
        hideCursor: true,
        etaBuffer: 50,
        fps: 4,
        synchronousUpdate: false,
      }, cliProgress.Presets.shades_classic);
      this.bar.start(total, start, { loss: '-', val: '-', tps: '-', extra: '' });
    }
  }

  update(step: number, v: ProgressValues): void {
    const payload = {
      loss: v.loss.toFixed(4), val: v.val == null ? '-' : v.val.toFixed(4), tps: Math.round(v.tokPerSec),
      extra: v.extra ?? '',
    };
    if (this.bar) {
      // Redrawing on every step costs real time on a slow terminal; a few frames a second is enough.
      const now = Date.now();
      if (now - this.lastDraw >= 250 || step === this.total) {
        this.lastDraw = now;
        this.bar.update(step, payload);
      }
    }
    else if (!this.quiet && (step - this.lastLine >= this.every || step === this.total)) {
      this.lastLine = step;
      process.stderr.write(`${this.label} step ${step}/${this.total} loss ${payload.loss} val ${payload.val} ` +
        `${payload.tps} tok/s${payload.extra ? ' ' + payload.extra : ''}\n`);
    }
  }

  message(msg: string): void {
    if (this.quiet) return;
    if (this.bar) {
      // cli-progress redraws on the current line; print above it.
      process.stderr.write('\r\x1b[K' + msg + '\n');
      this.bar.render();
    } else process.stderr.write(msg + '\n');
  }

  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}

/** Ctrl-C (and SIGTERM) handling for a training loop: the first signal asks the loop to save and stop. */
export class StopSignal {
  requested = false;
  private readonly handler = (sig: NodeJS.Signals): void => {
    if (this.requested) {
      process.stderr.write(`\n${sig} again: still saving the checkpoint, please wait\n`);
      return;
    }
    this.requested = true;
    process.stderr.write(`\n${sig}: saving a checkpoint after this step, then exiting\n`);
  };

  constructor() {
    process.on('SIGINT', this.handler);
    process.on('SIGTERM', this.handler);
  }

  dispose(): void {
    process.off('SIGINT', this.handler);
    process.off('SIGTERM', this.handler);
  }
}
