// Load benchmark of `kforce serve`: the same model served as AR and as a k-token PFLM, each driven by 1, 8 and 64
// closed-loop clients (each client sends its next request as soon as the previous one finished). The servers run in
// child processes so their compute never shares an event loop with the clients that time them; both stay up, only
// one is loaded at a time, and each level runs its windows back to back in the order AR PFLM PFLM AR ... (--repeats
// windows per model, 2 by default: a drift of the host's speed over the level then weighs on both alike). Reports
// requests, errors, p50/p99 latency and generated tokens/s per level (over all its windows), the PFLM/AR throughput
// ratio, and the ratio a roofline predicts for that batch size with machine rates measured in this run.
//
//   npm run bench:serve -- [--duration 20] [--repeats 2] [--warmup 3] [--clients 1,8,64] [--prompt-tokens 8]
//                          [--max-tokens 64] [--k 4] [--config official|tiny|B,D,H,V] [--small auto|yes|no] [--json]
import { spawn, type ChildProcess } from 'node:child_process';
import { setMaxListeners } from 'node:events';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bestRates, predictSpeedup, type MachineRates } from '../src/eval/roofline.ts';
import { screensLayer } from '../src/decode/screen.ts';
import type { ModelConfig } from '../src/model/types.ts';
import { measureDecodeRates } from '../src/eval/machine-rates.ts';
import { loadModelSet, modelFiles } from '../src/eval/model-set.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SMALL_DIR = path.join(ROOT, 'models', 'small');

interface Args {
  duration: number;
  repeats: number;
  warmup: number;
  clients: number[];
  promptTokens: number;
  maxTokens: number;
  k: number;
  config: string;
  small: 'auto' | 'yes' | 'no';
  json: boolean;
  seed: number;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { duration: 20, repeats: 2, warmup: 3, clients: [1, 8, 64], promptTokens: 8, maxTokens: 64, k: 4, config: 'official', small: 'auto', json: false, seed: 1 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`bench-serve: ${flag} needs a value`);
      return v;
    };
    const num = (min: number): number => {
      const v = Number(val());
      if (!Number.isFinite(v) || v < min) throw new Error(`bench-serve: ${flag} must be a number >= ${min}`);
      return v;
    };
    switch (flag) {
      case '--duration': a.duration = num(0.1); break;
      case '--repeats': {
        const n = num(1);
        if (!Number.isInteger(n)) throw new Error(`bench-serve: --repeats takes a positive integer, got ${n}`);
        a.repeats = n;
        break;
      }
      case '--warmup': a.warmup = num(0); break;
      case '--clients': a.clients = val().split(',').map((s) => {
        const n = Number(s);
        if (!Number.isInteger(n) || n < 1) throw new Error(`bench-serve: --clients takes positive integers, got '${s}'`);
        return n;
      }); break;
      case '--prompt-tokens': a.promptTokens = Math.floor(num(1)); break;
      case '--max-tokens': a.maxTokens = Math.floor(num(1)); break;
      case '--k': a.k = Math.floor(num(1)); break;
      case '--config': a.config = val(); break;
      case '--small': {
        const v = val();
        if (v !== 'auto' && v !== 'yes' && v !== 'no') throw new Error(`bench-serve: --small is auto, yes or no, got '${v}'`);
        a.small = v;
        break;
      }
      case '--seed': a.seed = Math.floor(num(0)); break;
      case '--json': a.json = true; break;
      case '--quick': a.duration = 4; a.repeats = 1; a.warmup = 1; a.clients = [1, 4]; a.config = 'tiny'; a.maxTokens = 32; break;
      case '--help': case '-h':
        console.log('usage: npm run bench:serve -- [--duration s] [--repeats n] [--warmup s] [--clients 1,8,64] [--prompt-tokens n] [--max-tokens n] [--k n] [--config official|tiny|B,D,H,V] [--small auto|yes|no] [--quick] [--json]');
        process.exit(0);
        break;
      default: throw new Error(`bench-serve: unknown flag ${flag}`);
    }
  }
  return a;
}

/** Architectures by name; random weights. `official` is the paper's OpenWebText model (GPT-2 vocabulary + [MASK]). */
function randomConfig(spec: string, maxK: number): ModelConfig {
  const named: Record<string, [number, number, number, number]> = { official: [12, 768, 12, 50258], tiny: [2, 64, 4, 512] };
  const dims = named[spec] ?? spec.split(',').map(Number);
  if (dims.length !== 4 || dims.some((x) => !Number.isInteger(x) || x < 1)) {
    throw new Error(`bench-serve: --config is official, tiny or B,D,H,V (blocks, hidden, heads, vocab), got '${spec}'`);
  }
  const [nBlocks, hiddenSize, nHeads, vocabSize] = dims;
  return { nBlocks, hiddenSize, nHeads, vocabSize, maskIndex: vocabSize - 1, maxK, maxSeqLen: 1024 };
}

// ---- one server in a child process --------------------------------------------------------------------------------

interface Server {
  proc: ChildProcess;
  url: string;
  config: ModelConfig;
}

async function startServer(serveArgs: string[]): Promise<Server> {
  const proc = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts'), 'serve', '--host', '127.0.0.1', '--port', '0', ...serveArgs], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (d: Buffer): void => {
      out += d.toString();
      // The serve command prints one JSON line once it listens.
      for (const line of out.split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          const info = JSON.parse(line) as { listening?: string; config?: ModelConfig };
          if (info.listening && info.config) {
            proc.stdout!.off('data', onData);
            resolve({ proc, url: info.listening, config: info.config });
            return;
          }
        } catch {
          // a partial line; wait for more
        }
      }
    };
    proc.stdout!.on('data', onData);
    proc.once('exit', (code) => reject(new Error(`kforce serve exited with code ${code} before listening:\n${stderr}`)));
  });
}

async function stopServer(s: Server): Promise<void> {
  if (s.proc.exitCode !== null) return;
  const exited = new Promise<void>((r) => s.proc.once('exit', () => r()));
  s.proc.kill('SIGTERM');
  const timer = setTimeout(() => s.proc.kill('SIGKILL'), 30_000);
  await exited;
  clearTimeout(timer);
}

// ---- HTTP client ---------------------------------------------------------------------------------------------------

interface Outcome {
  status: number;
  /** Arrival time (ms, performance.now) and count of the token chunks received. */
  arrivals: Array<[number, number]>;
  start: number;
  end: number;
  ok: boolean;
}

/** One streaming completion; resolves when the stream ends, fails or is aborted. Never rejects. */
function streamCompletion(agent: http.Agent, url: string, body: unknown, signal: AbortSignal): Promise<Outcome> {
  const start = performance.now();
  const o: Outcome = { status: 0, arrivals: [], start, end: start, ok: false };
  return new Promise((resolve) => {
    const done = (): void => {
      o.end = performance.now();
      resolve(o);
    };
    const payload = JSON.stringify(body);
    const req = http.request(`${url}/v1/completions`, {
      method: 'POST', agent, signal, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
    }, (res) => {
      o.status = res.statusCode ?? 0;
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        if (o.status !== 200) return;
        buf += d;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (!ev.startsWith('data: ')) continue;
          const data = ev.slice(6);
          if (data === '[DONE]') {
            o.ok = true;
            continue;
          }
          const j = JSON.parse(data) as { choices?: Array<{ token_ids?: number[] }>; error?: unknown };
          if (j.error) o.ok = false;
          const n = j.choices?.[0]?.token_ids?.length ?? 0;
          if (n > 0) o.arrivals.push([performance.now(), n]);
        }
      });
      res.on('end', done);
      res.on('error', done);
      res.on('aborted', done);
    });
    req.on('error', done);
    req.end(payload);
  });
}

async function getJson<T>(url: string): Promise<T> {
  const r = await fetch(url);
  return (await r.json()) as T;
}

async function scrapeMetric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : NaN;
}

async function waitIdle(url: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const h = await getJson<{ running: number; queued: number }>(`${url}/health`);
    if (h.running === 0 && h.queued === 0) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('bench-serve: the server did not go idle after the clients stopped');
}

// ---- one load level ------------------------------------------------------------------------------------------------

interface LevelResult {
  clients: number;
  model: 'ar' | 'pflm';
  modelName: string;
  requests: number;
  errors: number;
  rejected: number;
  tokensPerSecond: number;
  serverTokensPerSecond: number;
  meanBatch: number;
  p50Ms: number;
  p99Ms: number;
  /** Windows merged into this result (--repeats). */
  windows: number;
}

/** One window's result with its latencies, which merging needs. */
type WindowResult = LevelResult & { latencies: number[] };

function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

async function runWindow(server: Server, kind: 'ar' | 'pflm', modelName: string, clients: number, a: Args): Promise<WindowResult> {
  const V = server.config.vocabSize;
  const mask = server.config.maskIndex;
  const agent = new http.Agent({ keepAlive: true, maxSockets: clients });
  const abort = new AbortController();
  // Every in-flight request of every client listens to this one signal.
  setMaxListeners(clients + 8, abort.signal);
  const t0 = performance.now();
  const wStart = t0 + a.warmup * 1000;
  const wEnd = wStart + a.duration * 1000;
  // Server-side counters at the window edges: tokens generated and the step batch-size histogram (sum, count).
  const scrape = async (): Promise<[number, number, number] | null> => {
    try {
      return [
        await scrapeMetric(server.url, 'kforce_generated_tokens_total'),
        await scrapeMetric(server.url, 'kforce_step_batch_size_sum'),
        await scrapeMetric(server.url, 'kforce_step_batch_size_count'),
      ];
    } catch {
      return null;
    }
  };
  const sleepUntil = (t: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, t - performance.now())));
  const latencies: number[] = [];
  let requests = 0;
  let errors = 0;
  let rejected = 0;
  let tokensInWindow = 0;
  let reqNo = 0;

  const client = async (c: number): Promise<void> => {
    while (performance.now() < wEnd) {
      const n = reqNo++;
      // Random prompt ids, never the [MASK] id; a fresh seed per request.
      const prompt = Array.from({ length: a.promptTokens }, (_, i) => {
        const t = (Math.imul(n + 1, 2654435761) ^ Math.imul(i + 7, 40503) ^ c) >>> 0;
        const id = t % (V - 1);
        return id >= mask ? id + 1 : id;
      });
      const o = await streamCompletion(agent, server.url, { prompt, max_tokens: a.maxTokens, seed: a.seed * 1_000_003 + n, stream: true }, abort.signal);
      for (const [t, k] of o.arrivals) if (t >= wStart && t < wEnd) tokensInWindow += k;
      if (o.end > wEnd) break; // cut off by the end of the window (aborted): neither a result nor an error
      if (o.status === 429) {
        rejected++;
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      // A request belongs to the window it completes in (at 64 clients one request can outlast a short window).
      // Failures count whenever they happen, warm-up included.
      if (!(o.ok && o.status === 200)) errors++;
      else if (o.end >= wStart) {
        requests++;
        latencies.push(o.end - o.start);
      }
    }
  };
  const running = Promise.all(Array.from({ length: clients }, (_, c) => client(c)));
  await sleepUntil(wStart);
  const ms = await scrape();
  await sleepUntil(wEnd);
  const me = await scrape();
  abort.abort();
  await running;
  agent.destroy();
  await waitIdle(server.url);
  const serverTokens = ms && me ? me[0] - ms[0] : NaN;
  const meanBatch = ms && me && me[2] > ms[2] ? (me[1] - ms[1]) / (me[2] - ms[2]) : NaN;
  latencies.sort((x, y) => x - y);
  return {
    clients,
    model: kind,
    modelName,
    requests,
    errors,
    rejected,
    tokensPerSecond: tokensInWindow / a.duration,
    serverTokensPerSecond: serverTokens / a.duration,
    meanBatch,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    windows: 1,
    latencies,
  };
}

/** The windows of one model at one level as one result: counts summed, rates averaged over the windows (all of one
 * duration), latency percentiles over every request. */
function mergeWindows(ws: WindowResult[]): LevelResult {
  const mean = (f: (w: WindowResult) => number): number => ws.reduce((acc, w) => acc + f(w), 0) / ws.length;
  const latencies = ws.flatMap((w) => w.latencies).sort((x, y) => x - y);
  return {
    clients: ws[0].clients, model: ws[0].model, modelName: ws[0].modelName,
    requests: ws.reduce((acc, w) => acc + w.requests, 0),
    errors: ws.reduce((acc, w) => acc + w.errors, 0),
    rejected: ws.reduce((acc, w) => acc + w.rejected, 0),
    tokensPerSecond: mean((w) => w.tokensPerSecond),
    serverTokensPerSecond: mean((w) => w.serverTokensPerSecond),
    meanBatch: mean((w) => w.meanBatch),
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    windows: ws.length,
  };
}

// ---- main ----------------------------------------------------------------------------------------------------------

interface ModelSpec {
  name: string;
  ar: string[];
  pflm: string[];
}

async function modelSpecs(a: Args): Promise<ModelSpec[]> {
  const cfg = randomConfig(a.config, a.k);
  const arch = ['--blocks', cfg.nBlocks, '--hidden', cfg.hiddenSize, '--heads', cfg.nHeads, '--vocab', cfg.vocabSize].map(String);
  const common = ['--max-batch', String(Math.max(...a.clients)), '--max-queue', String(Math.max(...a.clients)),
    '--max-tokens', String(a.maxTokens), '--max-context', String(a.promptTokens + a.maxTokens), '--no-eos'];
  const specs: ModelSpec[] = [{
    name: `random-${a.config}`,
    ar: ['--random', 'ar', ...arch, '--seed', String(a.seed), ...common],
    pflm: ['--random', 'pflm', '--max-k', String(a.k), ...arch, '--seed', String(a.seed), '--k', String(a.k), ...common],
  }];
  if (a.small === 'no' || modelFiles(SMALL_DIR).length === 0) {
    if (a.small === 'yes') throw new Error(`bench-serve: --small yes but ${SMALL_DIR} holds no .safetensors models`);
    return specs;
  }
  // The bundled teacher and the PFLM stage with the smallest maxK that still allows k.
  const set = await loadModelSet(SMALL_DIR);
  const pi = set.pflms.findIndex((m) => m.config.maxK >= a.k);
  if (!set.teacherFile || pi < 0) {
    if (a.small === 'yes') throw new Error(`bench-serve: ${SMALL_DIR} lacks an AR teacher or a PFLM with maxK >= ${a.k}`);
    return specs;
  }
  specs.push({ name: 'small', ar: ['--model', set.teacherFile, ...common], pflm: ['--model', set.pflmFiles[pi], '--k', String(a.k), ...common] });
  return specs;
}

function fmt(x: number, d = 1): string {
  return Number.isFinite(x) ? x.toFixed(d) : '-';
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const log = (s: string): void => {
    (a.json ? process.stderr : process.stdout).write(s + '\n');
  };
  log(`bench-serve: ${a.clients.join('/')} clients, ${a.repeats} window(s) per model and level (${a.warmup} s warm-up + ${a.duration} s each), prompts ${a.promptTokens} tokens, max_tokens ${a.maxTokens}, PFLM k = ${a.k}`);
  const specs = await modelSpecs(a);
  // Machine rates are read while no server computes: before any starts and after each model's servers stop; the
  // roofline takes the best reading of the run (a limit of the machine, which other tenants of a shared host can only
  // push down for a while). A buffer smaller than 256 MiB is replaced by one that size, so the DRAM rate is what is
  // measured, not a cache.
  const hidden = randomConfig(a.config, a.k).hiddenSize;
  const readings: MachineRates[] = [];
  const measure = (when: string): void => {
    const m = measureDecodeRates(new Float32Array(1), hidden);
    readings.push(m);
    log(`machine (measured ${when}): DRAM read ${(m.bandwidth / 1e9).toFixed(1)} GB/s, matmul ${(m.flops / 1e9).toFixed(1)} GFLOP/s` +
      (m.int8Ratio !== undefined ? `, int8 / fp32 instruction rate ${m.int8Ratio.toFixed(2)}` : ''));
  };
  const best = (): MachineRates => readings.reduce(bestRates);
  measure('before the servers start');
  const results: LevelResult[] = [];
  const ratios: Array<{ modelName: string; clients: number; ratio: number; predicted: number; withinTarget: boolean; target: string }> = [];
  for (const spec of specs) {
    const byKind: Record<string, LevelResult[]> = { ar: [], pflm: [] };
    // Both servers stay up (an idle one computes nothing) and each load level runs its windows back to back, AR PFLM
    // PFLM AR ...: this host's speed drifts by tens of percent over minutes; adjacent windows in mirrored order keep a
    // steady drift out of the ratio, far better than running every AR level before every PFLM level.
    log(`starting ar and pflm servers (${spec.name}) ...`);
    const servers: Partial<Record<'ar' | 'pflm', Server>> = {};
    let config: ModelConfig | null = null;
    try {
      servers.ar = await startServer(spec.ar);
      servers.pflm = await startServer(spec.pflm);
      config = servers.pflm.config;
      for (const c of a.clients) {
        const windows: Record<'ar' | 'pflm', WindowResult[]> = { ar: [], pflm: [] };
        for (let rep = 0; rep < a.repeats; rep++) {
          for (const kind of rep % 2 === 0 ? ['ar', 'pflm'] as const : ['pflm', 'ar'] as const) {
            const r = await runWindow(servers[kind]!, kind, spec.name, c, a);
            windows[kind].push(r);
            log(`  ${kind.padEnd(4)} ${String(c).padStart(3)} clients${a.repeats > 1 ? ` (window ${rep + 1})` : ''}: ${r.requests} requests, ${r.errors} errors, ` +
              `${r.rejected} rejected (429), p50 ${fmt(r.p50Ms, 0)} ms, p99 ${fmt(r.p99Ms, 0)} ms, ${fmt(r.tokensPerSecond)} tok/s ` +
              `(server ${fmt(r.serverTokensPerSecond)}), mean batch ${fmt(r.meanBatch)}`);
          }
        }
        for (const kind of ['ar', 'pflm'] as const) {
          const r = mergeWindows(windows[kind]);
          results.push(r);
          byKind[kind].push(r);
          if (a.repeats > 1) log(`  ${kind.padEnd(4)} ${String(c).padStart(3)} clients, all windows: ${fmt(r.tokensPerSecond)} tok/s, p50 ${fmt(r.p50Ms, 0)} ms, p99 ${fmt(r.p99Ms, 0)} ms`);
        }
      }
    } finally {
      for (const server of Object.values(servers)) await stopServer(server);
    }
    measure(`after the ${spec.name} servers stopped`);
    const rates = best();
    log(`roofline rates (best of ${readings.length}): DRAM read ${(rates.bandwidth / 1e9).toFixed(1)} GB/s, matmul ${(rates.flops / 1e9).toFixed(1)} GFLOP/s`);
    for (const c of a.clients) {
      const ar = byKind.ar.find((r) => r.clients === c)!;
      const pf = byKind.pflm.find((r) => r.clients === c)!;
      const ratio = pf.tokensPerSecond / ar.tokensPerSecond;
      // The PFLM server screens its output layer where this process would (same machine, same environment).
      const predicted = predictSpeedup(config!, { batch: c, promptLength: a.promptTokens, newTokens: a.maxTokens }, a.k, rates, 4,
        screensLayer(config!.vocabSize, config!.hiddenSize));
      const withinTarget = c === 1 ? ratio >= 2.5 : Math.abs(ratio / predicted - 1) <= 0.2;
      const target = c === 1 ? '>= 2.5' : `${fmt(predicted, 2)} +- 20%`;
      ratios.push({ modelName: spec.name, clients: c, ratio, predicted, withinTarget, target });
      log(`  PFLM/AR ${spec.name} at ${c} clients: ${fmt(ratio, 2)}x (roofline ${fmt(predicted, 2)}x; target ${target}: ${withinTarget ? 'met' : 'NOT met'})`);
    }
  }
  if (a.json) {
    console.log(JSON.stringify({
      machine: { bandwidthGBs: best().bandwidth / 1e9, gflops: best().flops / 1e9, int8Ratio: best().int8Ratio ?? null,
        readings: readings.map((m) => ({ bandwidthGBs: m.bandwidth / 1e9, gflops: m.flops / 1e9 })) },
      settings: { duration: a.duration, repeats: a.repeats, warmup: a.warmup, promptTokens: a.promptTokens, maxTokens: a.maxTokens, k: a.k },
      results,
      ratios,
    }));
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
