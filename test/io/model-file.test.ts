import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inferConfig, loadModel, saveModel, CONFIG_METADATA_KEY } from '../../src/io/model-file.ts';
import { readSafetensors, readSafetensorsFile, writeSafetensors } from '../../src/io/safetensors.ts';
import { roundToHalf } from '../../src/io/dtypes.ts';
import { initModel, modelTensors } from '../../src/model/factory.ts';
import type { PflmModel } from '../../src/model/pflm.ts';
import type { Tensor } from '../../src/model/types.ts';
import { f32Bytes, PickleWriter, torchZip } from './pickle-writer.ts';

const FIX = 'test/fixtures';
const dir = mkdtempSync(join(tmpdir(), 'kforce-model-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function sameTensors(got: Map<string, Tensor>, want: Map<string, Tensor>, map = (d: Float32Array) => d): void {
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
  for (const [k, w] of want) assert.deepEqual(got.get(k)!.data, map(w.data), k);
}

test('PFLM safetensors with stored config loads as a PFLM with that config', async () => {
  const m = await loadModel(join(FIX, 'tiny-pflm.safetensors'));
  assert.equal(m.kind, 'pflm');
  assert.deepEqual(m.config, { vocabSize: 37, hiddenSize: 32, nHeads: 4, nBlocks: 2, maskIndex: 36, maxK: 4, maxSeqLen: 64 });
  sameTensors(modelTensors(m), await readSafetensors(join(FIX, 'tiny-pflm.safetensors')));
});

test('AR safetensors without metadata: config inferred from shapes like the official loader', async () => {
  const m = await loadModel(join(FIX, 'tiny-ar.safetensors'));
  assert.equal(m.kind, 'ar');
  assert.deepEqual(m.config, { vocabSize: 37, hiddenSize: 48, nHeads: 2, nBlocks: 2, maskIndex: 36, maxK: 0, maxSeqLen: 0 });
  const m3 = await loadModel(join(FIX, 'tiny-ar.safetensors'), { maskIndex: 3, maxSeqLen: 128 });
  assert.equal(m3.config.maskIndex, 3);
  assert.equal(m3.config.maxSeqLen, 128);
});

test('Lightning .ckpt (fp32 and fp16) and a bare .pt state dict load through the same entry point', async () => {
  const st = await readSafetensors(join(FIX, 'tiny-pflm.safetensors'));
  const ck = await loadModel(join(FIX, 'tiny-pflm.ckpt'));
  assert.equal(ck.kind, 'pflm');
  assert.deepEqual(ck.config, { vocabSize: 37, hiddenSize: 32, nHeads: 4, nBlocks: 2, maskIndex: 36, maxK: 4, maxSeqLen: 0 });
  sameTensors(modelTensors(ck), st);
  const k2 = await loadModel(join(FIX, 'tiny-pflm.ckpt'), { maxK: 2 });
  assert.equal(k2.config.maxK, 2);
  const half = await loadModel(join(FIX, 'tiny-pflm-fp16.ckpt'));
  sameTensors(modelTensors(half), st, roundToHalf);
  const raw = await loadModel(join(FIX, 'tiny-ar-raw.pt'), { maskIndex: 3 });
  assert.equal(raw.kind, 'ar');
  sameTensors(modelTensors(raw), await readSafetensors(join(FIX, 'tiny-ar.safetensors')));
  // The file type comes from the magic bytes when the extension says nothing.
  const noExt = join(dir, 'model-without-extension');
  copyFileSync(join(FIX, 'tiny-pflm.ckpt'), noExt);
  assert.equal((await loadModel(noExt)).kind, 'pflm');
  const noExtSt = join(dir, 'weights.data');
  copyFileSync(join(FIX, 'tiny-ar.safetensors'), noExtSt);
  assert.equal((await loadModel(noExtSt)).kind, 'ar');
});

test('a checkpoint and its safetensors copy give bit-identical outputs', async () => {
  const a = (await loadModel(join(FIX, 'tiny-pflm.ckpt'))) as PflmModel;
  const b = (await loadModel(join(FIX, 'tiny-pflm.safetensors'))) as PflmModel;
  const ctx = [[1, 5, 9, 2]];
  const noise = [[[0.1, 0.7], [0.3, 0.2], [0.9, 0.5], [0.45, 0.05]]];
  assert.deepEqual(a.stairLogits(ctx, noise, [1]).data, b.stairLogits(ctx, noise, [1]).data);
});

test('saveModel writes config + kind metadata; F32 round trips exactly, F16 to the rounded weights', async () => {
  const cfg = { vocabSize: 29, hiddenSize: 16, nHeads: 2, nBlocks: 3, maskIndex: 5, maxK: 3, maxSeqLen: 32 };
  const m = initModel(cfg, 'pflm', 11, { std: 0.5 });
  const p32 = join(dir, 'm32.safetensors');
  await saveModel(p32, m, { metadata: { note: 'unit test', [CONFIG_METADATA_KEY]: 'overridden' } });
  const file = await readSafetensorsFile(p32);
  assert.deepEqual(JSON.parse(file.metadata[CONFIG_METADATA_KEY]), cfg);
  assert.equal(file.metadata.kforce_kind, 'pflm');
  assert.equal(file.metadata.note, 'unit test');
  const back = await loadModel(p32);
  assert.deepEqual(back.config, cfg);
  sameTensors(modelTensors(back), modelTensors(m));

  const p16 = join(dir, 'm16.safetensors');
  await saveModel(p16, m, { dtype: 'F16' });
  const b16 = await loadModel(p16);
  assert.deepEqual(b16.config, cfg);
  sameTensors(modelTensors(b16), modelTensors(m), roundToHalf);

  const ar = initModel({ ...cfg, maxK: 0 }, 'ar', 3);
  const pa = join(dir, 'ar.safetensors');
  await saveModel(pa, ar);
  const ar2 = await loadModel(pa);
  assert.equal(ar2.kind, 'ar');
  assert.equal(ar2.config.maskIndex, 5, 'stored maskIndex beats the V - 1 default');
  assert.equal((await loadModel(pa, { maskIndex: 7 })).config.maskIndex, 7, 'options beat stored values');
});

test('inferConfig follows the official rules and names what is missing', () => {
  const t = (shape: number[]): Tensor => ({ shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });
  const base = new Map<string, Tensor>([
    ['vocab_embed.embedding', t([50, 24])], ['rotary_emb.inv_freq', t([3])], ['blocks.0.norm1.weight', t([24])],
    ['blocks.5.norm1.weight', t([24])],
  ]);
  assert.deepEqual(inferConfig(base), { vocabSize: 50, hiddenSize: 24, nHeads: 4, nBlocks: 6, maskIndex: 49, maxK: 0, maxSeqLen: 0 });
  base.set('noise_encoder.norm.weight', t([24]));
  assert.equal(inferConfig(base).maxK, 4);
  assert.throws(() => inferConfig(new Map([['x', t([2])]])), /no 2-D vocab_embed\.embedding tensor \(tensors: x\)/);
  assert.throws(() => inferConfig(new Map([['vocab_embed.embedding', t([5, 8])]])), /no blocks\.\{i\}\.\* tensors/);
  assert.throws(() => inferConfig(new Map([['vocab_embed.embedding', t([5, 8])], ['blocks.0.a', t([1])]])),
    /rotary_emb\.inv_freq is missing/);
  assert.throws(() => inferConfig(new Map([['vocab_embed.embedding', t([5, 10])], ['blocks.0.a', t([1])],
    ['rotary_emb.inv_freq', t([2])]])), /hidden size 10 is not a multiple of the head dim 4/);
});

test('unexpected names, wrong shapes and inconsistent metadata are refused with their names', async () => {
  const st = await readSafetensors(join(FIX, 'tiny-ar.safetensors'));
  const extra = new Map(st);
  extra.set('blocks.0.attn.bias', { shape: [4], data: new Float32Array(4) });
  const pe = join(dir, 'extra.safetensors');
  await writeSafetensors(pe, extra);
  await assert.rejects(loadModel(pe), /loadModel .*extra\.safetensors \(ar, V=37, D=48, H=2, blocks=2\): unexpected tensors: blocks\.0\.attn\.bias/);

  const wrong = new Map(st);
  wrong.set('blocks.1.mlp.0.bias', { shape: [191], data: new Float32Array(191) });
  const pw = join(dir, 'wrong.safetensors');
  await writeSafetensors(pw, wrong);
  await assert.rejects(loadModel(pw), /blocks\.1\.mlp\.0\.bias: shape \[191\], expected \[192\]/);

  const missing = new Map(st);
  missing.delete('output_layer.linear.bias');
  const pm = join(dir, 'missing.safetensors');
  await writeSafetensors(pm, missing);
  await assert.rejects(loadModel(pm), /missing tensors: output_layer\.linear\.bias/);

  const pc = join(dir, 'conflict.safetensors');
  await writeSafetensors(pc, st, { [CONFIG_METADATA_KEY]: JSON.stringify({ hiddenSize: 64 }) });
  await assert.rejects(loadModel(pc), /metadata kforce_config\.hiddenSize = 64 but the tensors give 48/);
  const pj = join(dir, 'badjson.safetensors');
  await writeSafetensors(pj, st, { [CONFIG_METADATA_KEY]: '{hidden' });
  await assert.rejects(loadModel(pj), /metadata kforce_config is not valid JSON/);
  await assert.rejects(loadModel(join(FIX, 'tiny-ar.safetensors'), { maskIndex: 37 }), /maskIndex 37 is outside \[0, 37\)/);
  await assert.rejects(loadModel(join(dir, 'nothing.ckpt')), /cannot open/);
});

test('checkpoint path: names outside the architecture are reported with the file', async () => {
  const t = (key: string, shape: number[]) => (w: PickleWriter) => w.tensor({ storageType: 'FloatStorage', key,
    numel: shape.reduce((a, b) => a * b, 1), offset: 0, shape, stride: shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1)) });
  const pkl = new PickleWriter().emptyDict().item('state_dict', (w) => w.emptyDict()
    .item('backbone.vocab_embed.embedding', t('0', [5, 4]))
    .item('backbone.rotary_emb.inv_freq', t('1', [1]))
    .item('backbone.blocks.0.adaLN_modulation.weight', t('2', [24, 4]))).finish();
  const p = join(dir, 'adaln.ckpt');
  writeFileSync(p, torchZip(pkl, { 0: f32Bytes(new Array(20).fill(0)), 1: f32Bytes([1]), 2: f32Bytes(new Array(96).fill(0)) }));
  await assert.rejects(loadModel(p), (e: Error) => {
    assert.match(e.message, /^loadModel .*adaln\.ckpt: buildModel \(ar, V=5, D=4, H=2, blocks=1\): missing tensors: blocks\.0\.norm1\.weight/);
    assert.match(e.message, /unexpected tensors: blocks\.0\.adaLN_modulation\.weight/);
    return true;
  });
});
