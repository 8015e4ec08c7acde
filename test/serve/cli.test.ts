// `kforce serve` as a process: it announces its address on stdout, serves, and on SIGTERM finishes the request it is
// running before it exits with status 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { postStream, type CompletionBody } from './helpers.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

test('kforce serve drains the running request on SIGTERM and exits 0', async () => {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--random', 'pflm', '--blocks', '1',
    '--hidden', '16', '--heads', '2', '--vocab', '64', '--max-k', '2', '--port', '0', '--max-tokens', '5000', '--max-context', '5010'],
  { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, KFORCE_BACKEND: 'ts' } });
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  try {
    const info = await new Promise<{ listening: string; kind: string; k: number }>((resolve, reject) => {
      let out = '';
      proc.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const line = out.split('\n').find((l) => l.startsWith('{') && l.endsWith('}'));
        if (line) resolve(JSON.parse(line) as { listening: string; kind: string; k: number });
      });
      void exited.then((code) => reject(new Error(`serve exited (${code}) before listening: ${stderr}`)));
    });
    assert.equal(info.kind, 'pflm');
    assert.equal(info.k, 2);
    let signalled = false;
    const s = await postStream(info.listening, { prompt: [1, 2, 3], max_tokens: 3000, seed: 1 }, {
      onEvent: () => {
        if (!signalled) {
          signalled = true;
          proc.kill('SIGTERM');
        }
      },
    });
    assert.ok(signalled);
    assert.equal(s.events.at(-1), '[DONE]');
    const chunks = s.events.slice(0, -1).map((e) => JSON.parse(e) as CompletionBody);
    assert.equal(chunks.flatMap((c) => c.choices[0].token_ids).length, 3000, 'the running request was completed');
    assert.equal(chunks.at(-1)!.choices[0].finish_reason, 'length');
    assert.equal(await exited, 0, stderr);
    assert.match(stderr, /SIGTERM, draining 1 running/);
    // the start-up line says how much KV cache it reserved (--max-batch 64 sequences by default)
    assert.match(stderr, /KV cache for 64 of 64 sequences reserved \(\d+ MB\)/);
  } finally {
    if (proc.exitCode === null) proc.kill('SIGKILL');
  }
});

test('kforce serve refuses a bad flag with a message naming it', async () => {
  for (const [flag, value, message] of [['--max-batch', '0', /--max-batch must be an integer/], ['--kv-reserve-mb', '-1', /--kv-reserve-mb/]] as const) {
    const proc = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--random', 'ar', '--blocks', '1',
      '--hidden', '16', '--heads', '2', '--vocab', '64', flag, value], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
    assert.equal(code, 1);
    assert.match(stderr, message);
  }
});
