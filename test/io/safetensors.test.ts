import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  readSafetensors, readSafetensorsFile, readSafetensorsHeader, writeSafetensors,
} from '../../src/io/safetensors.ts';
import { encodeHalf, floatToHalf, halfToFloat, roundToHalf } from '../../src/io/dtypes.ts';
import type { Tensor } from '../../src/model/types.ts';

const FIX = 'test/fixtures';
const dir = mkdtempSync(join(tmpdir(), 'kforce-st-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function rand(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 2 ** 32 - 0.5) * 8;
  }
  return a;
}

function sample(): Map<string, Tensor> {
  return new Map<string, Tensor>([
    ['w', { shape: [3, 5], data: rand(15, 1) }],
    ['b', { shape: [7], data: rand(7, 2) }],
    ['scalar', { shape: [], data: Float32Array.of(-2.5) }],
    ['empty', { shape: [0, 4], data: new Float32Array(0) }],
    ['odd', { shape: [1, 3], data: rand(3, 3) }],
  ]);
}

/** A safetensors file with a hand-written header (for malformed-file tests). */
function craft(name: string, header: unknown, data: Uint8Array = new Uint8Array(0), headerText?: string): string {
  const text = Buffer.from(headerText ?? JSON.stringify(header), 'utf-8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(text.length));
  const p = join(dir, name);
  writeFileSync(p, Buffer.concat([len, text, data]));
  return p;
}

test('F32 round trip keeps every value, shape, name order and the metadata', async () => {
  const p = join(dir, 'rt.safetensors');
  const t = sample();
  await writeSafetensors(p, t, { format: 'pt', note: 'héllo' });
  const back = await readSafetensorsFile(p);
  assert.deepEqual([...back.tensors.keys()], [...t.keys()]);
  for (const [k, v] of t) {
    assert.deepEqual(back.tensors.get(k)!.shape, v.shape);
    assert.deepEqual(back.tensors.get(k)!.data, v.data);
    assert.equal(back.dtypes.get(k), 'F32');
  }
  assert.deepEqual(back.metadata, { format: 'pt', note: 'héllo' });
  const raw = readFileSync(p);
  const hlen = Number(raw.readBigUInt64LE(0));
  assert.equal((8 + hlen) % 8, 0, 'data section is 8-byte aligned');
  assert.equal(raw.length, 8 + hlen + 4 * (15 + 7 + 1 + 0 + 3));
  // Header-only read sees the same layout without loading data.
  const h = await readSafetensorsHeader(p);
  assert.deepEqual(h.entries.map((e) => [e.name, e.dtype, e.shape]), [...t].map(([k, v]) => [k, 'F32', v.shape]));
});

test('a plain object of tensors is accepted as well as a Map', async () => {
  const p = join(dir, 'obj.safetensors');
  await writeSafetensors(p, { a: { shape: [2], data: Float32Array.of(1, 2) } });
  assert.deepEqual((await readSafetensors(p)).get('a')!.data, Float32Array.of(1, 2));
});

test('F16 write stores halves (half the bytes) and reads back the float16-rounded values', async () => {
  const p = join(dir, 'half.safetensors');
  const t = sample();
  t.set('special', { shape: [8], data: Float32Array.of(65504, 70000, -70000, 1e-8, 6e-8, -0, NaN, 1 / 3) });
  await writeSafetensors(p, t, undefined, { dtype: 'F16' });
  const back = await readSafetensorsFile(p);
  for (const [k, v] of t) {
    assert.equal(back.dtypes.get(k), 'F16');
    assert.deepEqual(back.tensors.get(k)!.data, roundToHalf(v.data), k);
  }
  const s = back.tensors.get('special')!.data;
  assert.equal(s[0], 65504);
  assert.equal(s[1], Infinity);
  assert.equal(s[2], -Infinity);
  assert.equal(s[3], 0, '1e-8 is below half the smallest subnormal');
  assert.equal(s[4], 2 ** -24, '6e-8 rounds to the smallest subnormal');
  assert.ok(Object.is(s[5], -0));
  assert.ok(Number.isNaN(s[6]));
  assert.equal(s[7], 0.333251953125);
  const raw = readFileSync(p);
  const hlen = Number(raw.readBigUInt64LE(0));
  assert.equal(raw.length, 8 + hlen + 2 * (15 + 7 + 1 + 3 + 8));
});

test('float16 conversion: exact on every half value, ties to even, carries into the exponent', () => {
  for (let h = 0; h < 65536; h++) {
    const f = halfToFloat(h);
    if (Number.isNaN(f)) {
      assert.ok(Number.isNaN(halfToFloat(floatToHalf(f))));
      continue;
    }
    assert.equal(floatToHalf(f), h, `half 0x${h.toString(16)}`);
  }
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1).
  assert.equal(halfToFloat(floatToHalf(1 + 2 ** -11)), 1);
  assert.equal(halfToFloat(floatToHalf(1 + 3 * 2 ** -11)), 1 + 2 * 2 ** -10);
  // Largest mantissa rounding up moves to the next binade.
  assert.equal(halfToFloat(floatToHalf(2 - 2 ** -12)), 2);
  // Subnormal halfway: 2^-25 (half the smallest subnormal) ties to 0; just above goes to 2^-24.
  assert.equal(floatToHalf(2 ** -25), 0);
  assert.equal(halfToFloat(floatToHalf(2 ** -25 * 1.0001)), 2 ** -24);
  assert.equal(halfToFloat(floatToHalf(65520)), Infinity, '65520 rounds past the largest half');
});

test('reads F16, BF16 and F64 written by the Python safetensors library', async () => {
  const got = await readSafetensorsFile(join(FIX, 'mixed-dtypes.safetensors'));
  const want = await readSafetensors(join(FIX, 'mixed-dtypes-f32.safetensors'));
  assert.deepEqual(got.metadata, { source: 'safetensors.torch' });
  assert.equal(got.dtypes.get('f16'), 'F16');
  assert.equal(got.dtypes.get('bf16'), 'BF16');
  assert.equal(got.dtypes.get('f64'), 'F64');
  for (const [k, v] of got.tensors) {
    assert.deepEqual(v.shape, want.get(k)!.shape, k);
    assert.deepEqual(v.data, want.get(k)!.data, k);
  }
  // Our float16 encoder reproduces PyTorch's bytes for the same values.
  const raw = readFileSync(join(FIX, 'mixed-dtypes.safetensors'));
  const h = await readSafetensorsHeader(join(FIX, 'mixed-dtypes.safetensors'));
  const e = h.entries.find((x) => x.name === 'f16')!;
  const torchBytes = raw.subarray(h.dataStart + e.begin, h.dataStart + e.end);
  const ours = encodeHalf(want.get('f16')!.data);
  assert.deepEqual(new Uint8Array(ours.buffer), new Uint8Array(torchBytes));
});

test('writes are atomic: no temp file is left and an existing file is replaced whole', async () => {
  const sub = mkdtempSync(join(dir, 'atomic-'));
  const p = join(sub, 'm.safetensors');
  await writeSafetensors(p, sample());
  await writeSafetensors(p, { only: { shape: [1], data: Float32Array.of(9) } });
  assert.deepEqual(readdirSync(sub), ['m.safetensors']);
  assert.deepEqual([...(await readSafetensors(p)).keys()], ['only']);
  // A write that fails validation leaves the previous file untouched.
  await assert.rejects(writeSafetensors(p, { bad: { shape: [2, 2], data: new Float32Array(3) } }),
    /tensor 'bad' has shape \[2, 2\] \(4 elements\) but 3 values/);
  await assert.rejects(writeSafetensors(join(sub, 'nope', 'x.safetensors'), sample()), /write failed/);
  assert.deepEqual(readdirSync(sub), ['m.safetensors']);
  assert.deepEqual([...(await readSafetensors(p)).keys()], ['only']);
});

test('writer rejects bad arguments with named errors', async () => {
  const p = join(dir, 'bad.safetensors');
  await assert.rejects(writeSafetensors(p, { x: { shape: [1], data: [1] as unknown as Float32Array } }),
    /tensor 'x' must be \{ shape: number\[\], data: Float32Array \}/);
  await assert.rejects(writeSafetensors(p, { __metadata__: { shape: [1], data: Float32Array.of(1) } }), /invalid tensor name/);
  await assert.rejects(writeSafetensors(p, sample(), { n: 3 as unknown as string }), /metadata value 'n' must be a string/);
  await assert.rejects(writeSafetensors(p, sample(), undefined, { dtype: 'BF16' as 'F16' }), /cannot write dtype 'BF16'/);
});

test('malformed files fail with a message naming the problem', async () => {
  const f32 = (n: number) => new Uint8Array(4 * n);
  const ok = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
  const cases: Array<[string, string, RegExp]> = [];
  const add = (name: string, p: string, re: RegExp) => cases.push([name, p, re]);

  const tiny = join(dir, 'tiny.safetensors');
  writeFileSync(tiny, Uint8Array.of(1, 0, 0));
  add('truncated before the length', tiny, /truncated: the file has 3 bytes/);

  const full = craft('full.safetensors', ok, f32(2));
  const cut = join(dir, 'cut.safetensors');
  writeFileSync(cut, readFileSync(full).subarray(0, 20));
  add('cut inside the header', cut, /header length \d+ exceeds the 12 bytes after the length field/);
  const cutData = join(dir, 'cutdata.safetensors');
  writeFileSync(cutData, readFileSync(full).subarray(0, readFileSync(full).length - 3));
  add('cut inside the data', cutData, /tensor 'a' has data_offsets \[0, 8\] beyond the 5-byte data section \(truncated file\?\)/);

  add('bad JSON', craft('json.safetensors', null, f32(2), '{"a": {"dtype": "F32", '), /bad JSON header/);
  add('header not an object', craft('arr.safetensors', null, f32(0), '[1, 2, 3]'), /header does not start with '\{'/);
  add('offsets out of range', craft('range.safetensors', { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, f32(2)),
    /tensor 'a' has data_offsets \[0, 16\] beyond the 8-byte data section/);
  add('offsets reversed', craft('rev.safetensors', { a: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, f32(2)),
    /end before begin/);
  add('overlap', craft('overlap.safetensors', {
    a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
    b: { dtype: 'F32', shape: [4], data_offsets: [8, 24] },
  }, f32(6)), /tensors 'a' \[0, 16\) and 'b' \[8, 24\) overlap/);
  add('unknown dtype', craft('dtype.safetensors', { a: { dtype: 'F17', shape: [2], data_offsets: [0, 8] } }, f32(2)),
    /tensor 'a' has unknown dtype 'F17'/);
  add('unsupported dtype', craft('i64.safetensors', { a: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, f32(2)),
    /tensor 'a' has dtype I64, which is not supported/);
  add('shape/size mismatch', craft('size.safetensors', { a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, f32(2)),
    /tensor 'a' of shape \[3\] and dtype F32 needs 12 bytes but its data_offsets span 8/);
  add('negative dim', craft('neg.safetensors', { a: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, f32(2)),
    /invalid shape \[-2\]/);
  add('metadata not strings', craft('meta.safetensors', { __metadata__: { n: 1 }, ...ok }, f32(2)),
    /__metadata__ value 'n' is not a string/);
  add('entry without dtype', craft('nodtype.safetensors', { a: { shape: [2], data_offsets: [0, 8] } }, f32(2)),
    /tensor 'a' has no dtype string/);
  add('a torch zip checkpoint', join(FIX, 'tiny-pflm.ckpt'), /zip archive \(a PyTorch \.ckpt\/\.pt checkpoint\?\), not a safetensors file/);
  const text = join(dir, 'text.safetensors');
  writeFileSync(text, 'this is a plain text file, not tensors\n');
  add('a text file', text, /header length \d+ exceeds .* \(truncated file, or not a safetensors file\)/);
  add('a missing file', join(dir, 'missing.safetensors'), /cannot open/);

  for (const [name, p, re] of cases) {
    await assert.rejects(readSafetensors(p), (e: Error) => {
      assert.match(e.message, re, name);
      assert.ok(e.message.includes(p), `${name}: message names the file`);
      return true;
    });
  }
  // The well-formed control file of the same construction loads.
  assert.deepEqual((await readSafetensors(full)).get('a')!.data, new Float32Array(2));
});
