// The load script of issue 6 end to end on a tiny random model: both servers, two load levels, the JSON report.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

test('npm run bench:serve on a tiny model: every level served without errors, ratios against the best-rate roofline', () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/bench-serve.ts', '--config', 'tiny', '--duration', '0.8',
    '--warmup', '0.4', '--clients', '1,2', '--small', 'no', '--json'], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  const report = JSON.parse(lines[lines.length - 1]);
  assert.deepEqual(report.results.map((x: { clients: number; model: string }) => `${x.clients}/${x.model}`),
    ['1/ar', '1/pflm', '2/ar', '2/pflm']);
  // two windows per model and level by default, in mirrored order (AR PFLM PFLM AR), merged into one result
  const order = [...r.stderr.matchAll(/^\s+(ar|pflm)\s+(\d+) clients \(window (\d)\)/gm)].map((m) => `${m[2]}/${m[1]}/${m[3]}`);
  assert.deepEqual(order, ['1/ar/1', '1/pflm/1', '1/pflm/2', '1/ar/2', '2/ar/1', '2/pflm/1', '2/pflm/2', '2/ar/2']);
  assert.equal(report.settings.repeats, 2);
  for (const x of report.results) {
    assert.equal(x.windows, 2);
    assert.equal(x.errors, 0);
    assert.ok(x.requests > 0 && x.tokensPerSecond > 0 && x.p50Ms > 0 && x.p99Ms >= x.p50Ms);
  }
  // Rates read before the servers start and after they stop; the roofline uses the best of each.
  const { readings } = report.machine;
  assert.equal(readings.length, 2);
  assert.equal(report.machine.bandwidthGBs, Math.max(...readings.map((m: { bandwidthGBs: number }) => m.bandwidthGBs)));
  assert.equal(report.machine.gflops, Math.max(...readings.map((m: { gflops: number }) => m.gflops)));
  assert.deepEqual(report.ratios.map((x: { clients: number }) => x.clients), [1, 2]);
  for (const x of report.ratios) assert.ok(x.ratio > 0 && x.predicted > 0);
});

test('bench:serve rejects a bad --repeats before starting anything', () => {
  for (const v of ['0', '1.5', 'x']) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/bench-serve.ts', '--repeats', v], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /--repeats/);
  }
});
