import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { unzipSync, zipSync } from 'fflate';
import { openTorchArchive, readCheckpoint, readCkpt } from '../../src/io/ckpt.ts';
import { readSafetensors } from '../../src/io/safetensors.ts';
import { roundToHalf } from '../../src/io/dtypes.ts';
import type { Tensor } from '../../src/model/types.ts';
import { f32Bytes, PickleWriter, torchZip } from './pickle-writer.ts';

const FIX = 'test/fixtures';
const dir = mkdtempSync(join(tmpdir(), 'kforce-ckpt-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, bytes: Uint8Array): string {
  const p = join(dir, name);
  writeFileSync(p, bytes);
  return p;
}

function assertSameTensors(got: Map<string, Tensor>, want: Map<string, Tensor>, map = (d: Float32Array) => d): void {
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
  for (const [k, w] of want) {
    const g = got.get(k)!;
    assert.deepEqual(g.shape, w.shape, k);
    assert.deepEqual(g.data, map(w.data), k);
  }
}

test('Lightning fp32 checkpoint: state_dict, backbone. prefix stripped, tensors identical to the safetensors copy', async () => {
  const c = await readCheckpoint(join(FIX, 'tiny-pflm.ckpt'));
  assert.equal(c.source, 'state_dict');
  assert.equal(c.strippedPrefix, 'backbone.');
  assert.deepEqual(c.dropped, ['noise.sigma_max']);
  assertSameTensors(c.tensors, await readSafetensors(join(FIX, 'tiny-pflm.safetensors')));
});

test('Lightning fp16 checkpoint converts halves to float32 exactly', async () => {
  const got = await readCkpt(join(FIX, 'tiny-pflm-fp16.ckpt'));
  assertSameTensors(got, await readSafetensors(join(FIX, 'tiny-pflm.safetensors')), roundToHalf);
});

test('bare state dict (torch.save(module.state_dict())) loads with its names as they are', async () => {
  const c = await readCheckpoint(join(FIX, 'tiny-ar-raw.pt'));
  assert.equal(c.source, 'root');
  assert.equal(c.strippedPrefix, '');
  assertSameTensors(c.tensors, await readSafetensors(join(FIX, 'tiny-ar.safetensors')));
});

test('dtypes, shared storages, offsets, transposes and stride-0 views match PyTorch .contiguous().float()', async () => {
  const got = await readCkpt(join(FIX, 'mixed-dtypes.pt'));
  const want = await readSafetensors(join(FIX, 'mixed-dtypes-f32.safetensors'));
  assertSameTensors(got, want);
  assert.deepEqual(got.get('i64')!.data, Float32Array.of(-3, 0, 7, 2 ** 40));
  assert.deepEqual(got.get('transposed')!.shape, [6, 4]);
});

test('zip64 archives (central-directory zip64 extras, zip64 end records) read the same tensors', async () => {
  const raw = readFileSync(join(FIX, 'mixed-dtypes-zip64.pt'));
  assert.ok(raw.includes(Buffer.from([0x50, 0x4b, 0x06, 0x06])), 'fixture carries a zip64 end record');
  assertSameTensors(await readCkpt(join(FIX, 'mixed-dtypes-zip64.pt')), await readSafetensors(join(FIX, 'mixed-dtypes-f32.safetensors')));
});

test('crafted archives: deflated entries, untyped storage + dtype (_rebuild_tensor_v3), wrappers, DDP prefix', async () => {
  const half = new Uint16Array([0x3c00, 0xc000, 0x3800]); // 1, -2, 0.5
  const pkl = new PickleWriter().emptyDict()
    .item('model', (w) => w.emptyDict()
      .item('module.a', (x) => x.tensor({ storageType: 'FloatStorage', key: '0', numel: 4, offset: 1, shape: [2], stride: [2] }))
      .item('module.h', (x) => x.tensor({ storageType: 'UntypedStorage', key: '1', numel: 6, offset: 0, shape: [3],
        stride: [1], rebuild: '_rebuild_tensor_v3', dtype: 'float16' })))
    .item('hparams', (w) => w.object('omegaconf.dictconfig', 'DictConfig'))
    .finish();
  const p = write('wrapped.pt', torchZip(pkl, { 0: f32Bytes([10, 11, 12, 13]), 1: new Uint8Array(half.buffer) }, 'whatever', 6));
  const c = await readCheckpoint(p);
  assert.equal(c.source, 'model');
  assert.equal(c.strippedPrefix, 'module.');
  assert.deepEqual(c.tensors.get('a')!.data, Float32Array.of(11, 13));
  assert.deepEqual(c.tensors.get('h')!.data, Float32Array.of(1, -2, 0.5));
  // An explicit prefix overrides the default choice.
  const all = await readCheckpoint(p, { prefix: '' });
  assert.deepEqual([...all.tensors.keys()], ['module.a', 'module.h']);
});

test('the low-level archive API exposes the pickled tree with lazy tensors', async () => {
  const a = await openTorchArchive(join(FIX, 'tiny-pflm.ckpt'));
  try {
    const root = a.root as Map<string, unknown>;
    assert.equal(root.get('epoch'), 0);
    assert.equal(root.get('pytorch-lightning_version'), '2.6.6');
    const opt = root.get('optimizer_states') as Array<Map<string, unknown>>;
    const st = (opt[0].get('state') as Map<number, Map<string, unknown>>).get(0)!;
    const t = await a.tensor(st.get('exp_avg_sq') as never, 'exp_avg_sq');
    assert.deepEqual(t.data, Float32Array.of(1, 1, 1, 1));
  } finally {
    await a.close();
  }
});

test('malformed and foreign files fail with a message naming the problem', async () => {
  const cases: Array<[string, string, RegExp]> = [];
  const add = (name: string, p: string, re: RegExp) => cases.push([name, p, re]);
  add('plain text', write('text.ckpt', Buffer.from('not a checkpoint at all')), /not a zip archive/);
  add('safetensors file', join(FIX, 'tiny-ar.safetensors'), /not a zip archive \(a safetensors file\?/);
  add('legacy pickle', write('legacy.pt', Uint8Array.of(0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46)), /legacy torch\.save format/);
  add('zip without data.pkl', write('other.zip', zipSync({ 'docs/readme.txt': Buffer.from('hi') })), /missing data\.pkl/);
  const ckpt = readFileSync(join(FIX, 'tiny-pflm.ckpt'));
  add('truncated archive', write('cut.ckpt', ckpt.subarray(0, ckpt.length >> 1)), /truncated or damaged zip archive/);
  add('missing file', join(dir, 'absent.ckpt'), /cannot open/);

  // Same archive, one storage cut short (rezipped so the directory stays consistent).
  const files = unzipSync(ckpt);
  const storageName = Object.keys(files).find((n) => n.endsWith('/data/0'))!;
  files[storageName] = files[storageName].subarray(0, 100);
  add('short storage', write('short.ckpt', zipSync(files, { level: 0 })), /storage tiny-pflm\/data\/0 has 100 bytes, the pickle declares 4736 \(truncated\?\)/);
  const noStorage = unzipSync(ckpt);
  delete noStorage[storageName];
  add('missing storage', write('nostorage.ckpt', zipSync(noStorage, { level: 0 })), /zip entry 'tiny-pflm\/data\/0' is missing/);

  add('unsupported opcode', write('opcode.pt', torchZip(Uint8Array.of(0x80, 0x02, 0xff, 0x2e), {})),
    /cannot unpickle: unsupported pickle opcode 0xff/);
  const unknownClass = new PickleWriter().emptyDict().item('state_dict', (w) => w.emptyDict()
    .item('backbone.a', (x) => x.tensor({ storageType: 'FloatStorage', key: '0', numel: 1, offset: 0, shape: [1], stride: [1] }))
    .item('backbone.b', (x) => x.object('mylib.layers', 'Thing'))).finish();
  add('class in state dict', write('class.ckpt', torchZip(unknownClass, { 0: f32Bytes([1]) })),
    /state_dict entry 'backbone\.b' is a mylib\.layers\.Thing object, not a tensor/);
  const sparse = new PickleWriter().emptyDict()
    .item('w', (x) => x.tensor({ storageType: 'FloatStorage', key: '0', numel: 1, offset: 0, shape: [1], stride: [1] }))
    .item('s', (x) => x.object('torch._utils', '_rebuild_sparse_tensor')).finish();
  add('unsupported rebuild', write('sparse.pt', torchZip(sparse, { 0: f32Bytes([1]) })),
    /entry 's' is a tensor saved with torch\._utils\._rebuild_sparse_tensor; sparse, quantized, nested and other special tensors cannot be imported/);
  const complex = new PickleWriter().emptyDict()
    .item('c', (x) => x.tensor({ storageType: 'ComplexFloatStorage', key: '0', numel: 1, offset: 0, shape: [1], stride: [1] }))
    .finish();
  add('unsupported storage type', write('complex.pt', torchZip(complex, { 0: new Uint8Array(8) })),
    /tensor 'c' has type torch\.ComplexFloatStorage, which cannot be imported/);
  const overrun = new PickleWriter().emptyDict()
    .item('w', (x) => x.tensor({ storageType: 'FloatStorage', key: '0', numel: 2, offset: 1, shape: [2, 2], stride: [2, 1] }))
    .finish();
  add('view beyond its storage', write('overrun.pt', torchZip(overrun, { 0: f32Bytes([1, 2]) })),
    /tensor 'w' \(shape \[2,2\], stride \[2,1\], offset 1\) reaches element 4 of storage '0', which holds 2/);
  const noTensors = new PickleWriter().emptyDict().item('epoch', (x) => x.int(3))
    .item('hyper_parameters', (x) => x.emptyDict()).finish();
  add('no tensors', write('empty.ckpt', torchZip(noTensors, {})),
    /no tensors found: expected a Lightning checkpoint \('state_dict'\) or a state dict; top-level keys are \[epoch, hyper_parameters\]/);

  for (const [name, p, re] of cases) {
    await assert.rejects(readCkpt(p), (e: Error) => {
      assert.match(e.message, re, `${name}: ${e.message}`);
      assert.ok(e.message.includes(p), `${name}: message names the file`);
      return true;
    });
  }
});
