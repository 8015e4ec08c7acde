import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import {
  addDecodeBenchOptions, addRandomModelOptions, addReportOptions, decodeBenchSettings, randomModelConfig,
} from '../../src/cli/options.ts';
import type { DecodeBenchFlags, RandomModelFlags, ReportFlags } from '../../src/cli/options.ts';
import { intOption, numOption } from '../../src/train/cli-util.ts';

function parse<T>(add: (c: Command) => Command, args: string[]): T {
  const cmd = add(new Command('x').exitOverride());
  cmd.parse(args, { from: 'user' });
  return cmd.opts<T & Record<string, unknown>>();
}

test('random-model flags: defaults, config, AR ignores --max-k, bad values name their flag', () => {
  const d = parse<RandomModelFlags>((c) => addRandomModelOptions(c, 'random'), []);
  assert.deepEqual(randomModelConfig(d, true), {
    nBlocks: 12, hiddenSize: 768, nHeads: 12, vocabSize: 50258, maskIndex: 50257, maxK: 4, maxSeqLen: 1024,
  });
  const o = parse<RandomModelFlags>((c) => addRandomModelOptions(c, 'random'),
    ['--blocks', '2', '--hidden', '16', '--heads', '2', '--vocab', '64', '--max-k', 'x']);
  assert.equal(randomModelConfig(o, false).maxK, 0);
  assert.throws(() => randomModelConfig(o, true), /--max-k must be an integer in \[1, Infinity\], got 'x'/);
  assert.throws(() => randomModelConfig({ ...o, vocab: '1' }, false), /--vocab must be an integer in \[2,/);
  assert.throws(() => randomModelConfig({ ...o, hidden: '8.5' }, false), /--hidden must be an integer/);
});

test('decode-bench and report flags: defaults per command, parsed values, flag-named errors', () => {
  type F = DecodeBenchFlags & ReportFlags;
  const add = (c: Command) => addReportOptions(addDecodeBenchOptions(c, { newTokens: '122', per: 'sequence', seed: 'seed' }), 'x', 'runs/x');
  const d = parse<F>(add, []);
  assert.deepEqual(decodeBenchSettings(d), { newTokens: 122, ks: undefined, seed: 0 });
  assert.equal(d.out, 'runs/x');
  assert.equal(d.json, undefined);
  const o = parse<F>(add, ['--k', '1,2,4', '--seed', '7', '--new-tokens', '5', '--json', '--results', 'r.md']);
  assert.deepEqual(decodeBenchSettings(o), { newTokens: 5, ks: [1, 2, 4], seed: 7 });
  assert.equal(o.json, true);
  assert.equal(o.results, 'r.md');
  assert.throws(() => decodeBenchSettings({ ...o, k: '1,0' }), /--k must be an integer in \[1,/);
  assert.throws(() => decodeBenchSettings({ ...o, newTokens: '0' }), /--new-tokens must be an integer in \[1,/);
  const noOut = parse<Partial<F>>((c) => addReportOptions(c, 'x'), []);
  assert.equal(noOut.out, undefined);
});

test('intOption and numOption refuse blanks, non-numbers and out-of-range values, naming the flag', () => {
  assert.equal(intOption('--n', '12', 0), 12);
  assert.equal(intOption('--n', 3, 0), 3);
  for (const bad of ['', ' ', 'abc', '1.5', 'Infinity', undefined]) {
    assert.throws(() => intOption('--n', bad, 0), /--n must be an integer in \[0, Infinity\]/);
  }
  assert.throws(() => intOption('--port', '70000', 0, 65535), /--port must be an integer in \[0, 65535\], got '70000'/);
  assert.equal(numOption('--tau', '0.5', Number.MIN_VALUE), 0.5);
  assert.throws(() => numOption('--penalty', ' ', 0, 2), /--penalty must be a number in \[0, 2\], got ' '/);
  assert.throws(() => numOption('--penalty', '3', 0, 2), /--penalty must be a number in \[0, 2\], got '3'/);
});
