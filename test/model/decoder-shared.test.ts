// stepShared: the same forward as step, but the logits are views of the model's scratch memory (no copy).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { initModel } from '../../src/index.ts';
import { TINY, tokenRows, uniforms } from './reference.ts';

const V = TINY.vocabSize;

test('stepShared returns step\'s logits as views that the next forward overwrites', () => {
  for (const kind of ['ar', 'pflm'] as const) {
    const m = kind === 'ar' ? initModel({ ...TINY, maxK: 0 }, 'ar', 3, { std: 0.3 }) : initModel(TINY, 'pflm', 4, { std: 0.3 });
    const rows = tokenRows(3, 12, V, 7);
    const a = m.decoder(), b = m.decoder();
    const ia = rows.map((r, i) => a.open(r.slice(0, 3 + i)));
    const ib = rows.map((r, i) => b.open(r.slice(0, 3 + i)));
    for (let s = 0; s < 3; s++) {
      const noise = kind === 'pflm' ? rows.map((_, i) => uniforms(4, 10 * s + i).slice(0, 1 + ((s + i) % 4))) : undefined;
      const want = a.step(ia, noise ? { noise } : {});
      const got = b.stepShared(ib, noise ? { noise } : {});
      assert.equal(got.length, want.length);
      got.forEach((g, i) => assert.deepEqual(g, want[i], `${kind} step ${s} row ${i}`));
      // views of one scratch buffer: consecutive rows are adjacent in memory, and a copy from step stays intact
      assert.equal(got[1].buffer, got[0].buffer);
      assert.equal(got[1].byteOffset, got[0].byteOffset + got[0].byteLength);
      const keep = want[0].slice();
      const before = got[0].slice();
      ia.forEach((id, i) => a.append(id, [rows[i][5 + s]]));
      ib.forEach((id, i) => b.append(id, [rows[i][5 + s]]));
      if (s === 2) {
        b.step(ib, noise ? { noise } : {}); // the next forward reuses the scratch logits
        assert.notDeepEqual(got[0], before);
        assert.deepEqual(want[0], keep);
      }
    }
  }
});
