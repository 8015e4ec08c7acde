import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  buildModel, initModel, initStudentFromTeacher, modelTensors, paramLayout, referenceNames, ropeInvFreq,
} from '../../src/index.ts';
import type { Tensor } from '../../src/index.ts';
import { TINY } from './reference.ts';

test('layout: reference names and shapes, one flat buffer, decay mask on linear weights only', () => {
  const lay = paramLayout(TINY, 'pflm');
  const names = referenceNames(TINY, 'pflm');
  assert.equal(names[0], 'vocab_embed.embedding');
  assert.equal(names[1], 'rotary_emb.inv_freq');
  assert.ok(names.includes('blocks.1.mlp.2.bias'));
  assert.ok(names.includes('noise_encoder.mlp.0.weight'));
  assert.deepEqual(lay.byName.get('noise_encoder.combined_proj.weight')!.shape, [16, 32]);
  assert.deepEqual(lay.byName.get('blocks.0.attn_qkv.weight')!.shape, [48, 16]);
  let total = 0;
  for (const e of lay.entries) {
    assert.equal(e.offset, total);
    total += e.size;
    const decays = lay.decayMask[e.offset] === 1;
    assert.equal(decays, e.name.endsWith('.weight') && !/norm/.test(e.name) && e.name !== 'vocab_embed.embedding' ? true : false, e.name);
  }
  assert.equal(total, lay.total);
  assert.equal(paramLayout({ ...TINY, maxK: 0 }, 'ar').entries.some((e) => e.name.startsWith('noise_encoder')), false);
  assert.throws(() => paramLayout({ ...TINY, nHeads: 3 }, 'ar'), /divisible/);
  assert.throws(() => paramLayout({ ...TINY, maskIndex: 37 }, 'ar'), /maskIndex/);
});

test('initModel is deterministic per seed, GPT-2 style', () => {
  const a = initModel(TINY, 'pflm', 5), b = initModel(TINY, 'pflm', 5), c = initModel(TINY, 'pflm', 6);
  assert.deepEqual(a.params, b.params);
  assert.notDeepEqual(a.params, c.params);
  const t = modelTensors(a);
  assert.ok(t.get('blocks.0.norm1.weight')!.data.every((x) => x === 1));
  assert.ok(t.get('noise_encoder.norm.bias')!.data.every((x) => x === 0));
  const emb = t.get('vocab_embed.embedding')!.data;
  const sd = Math.sqrt(emb.reduce((s, x) => s + x * x, 0) / emb.length);
  assert.ok(sd > 0.015 && sd < 0.025, `std ${sd}`);
  assert.deepEqual(t.get('rotary_emb.inv_freq')!.data, ropeInvFreq(8));
  // The AR model of the same seed shares the backbone tensors (drawn in the same order).
  const ar = modelTensors(initModel({ ...TINY, maxK: 0 }, 'ar', 5));
  assert.deepEqual(ar.get('output_layer.linear.weight')!.data, t.get('output_layer.linear.weight')!.data);
});

test('buildModel round-trips modelTensors and names missing, unexpected and misshapen tensors', () => {
  const m = initModel(TINY, 'pflm', 8, { std: 0.3 });
  const t = new Map<string, Tensor>([...modelTensors(m)].map(([k, v]) => [k, { shape: v.shape, data: v.data.slice() }]));
  const b = buildModel(TINY, t);
  assert.equal(b.kind, 'pflm');
  assert.deepEqual(b.params, m.params);
  const ctx = [[1, 2, 3]], nz = [[[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]];
  assert.deepEqual(b.kind === 'pflm' && b.stairLogits(ctx, nz, [1]).data, m.stairLogits(ctx, nz, [1]).data);
  const arT = new Map([...t].filter(([k]) => !k.startsWith('noise_encoder.')));
  assert.equal(buildModel({ ...TINY, maxK: 0 }, arT).kind, 'ar');
  const missing = new Map(t);
  missing.delete('blocks.1.norm2.weight');
  assert.throws(() => buildModel(TINY, missing), /missing tensors: blocks\.1\.norm2\.weight/);
  const extra = new Map(t);
  extra.set('blocks.2.norm1.weight', { shape: [16], data: new Float32Array(16) });
  assert.throws(() => buildModel(TINY, extra), /unexpected tensors: blocks\.2\.norm1\.weight/);
  const bad = new Map(t);
  bad.set('output_layer.linear.bias', { shape: [36], data: new Float32Array(36) });
  assert.throws(() => buildModel(TINY, bad), /output_layer\.linear\.bias: shape \[36\], expected \[37\]/);
  // A PFLM config without maxK gets the default.
  assert.equal(buildModel({ ...TINY, maxK: 0 }, t).config.maxK, 4);
});

test('initStudentFromTeacher copies every tensor with matching name and shape', () => {
  const teacher = initModel({ ...TINY, maxK: 0 }, 'ar', 1);
  const student = initModel(TINY, 'pflm', 2);
  const before = modelTensors(student).get('noise_encoder.mlp.0.weight')!.data.slice();
  const { copied, kept } = initStudentFromTeacher(student, teacher);
  assert.ok(copied.includes('blocks.0.attn_qkv.weight') && copied.includes('rotary_emb.inv_freq'));
  assert.ok(kept.every((n) => n.startsWith('noise_encoder.')));
  assert.equal(kept.length, 8);
  const st = modelTensors(student), tt = modelTensors(teacher);
  for (const name of copied) assert.deepEqual(st.get(name)!.data, tt.get(name)!.data, name);
  assert.deepEqual(st.get('noise_encoder.mlp.0.weight')!.data, before);
  // A PFLM teacher with a different vocabulary shares nothing of those tensors.
  const other = initModel({ ...TINY, vocabSize: 40, maskIndex: 39 }, 'pflm', 3);
  const r = initStudentFromTeacher(student, other);
  assert.ok(r.kept.includes('vocab_embed.embedding') && r.copied.includes('noise_encoder.mlp.0.weight'));
});
