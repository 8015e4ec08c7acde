import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { markdownTable, num, replaceSection, textTable, updateResultsFile, writeReport } from '../../src/eval/report.ts';
import { escapeXml, lineChart, niceTicks } from '../../src/eval/svg.ts';

test('num formats significant digits and missing values', () => {
  assert.equal(num(3), '3');
  assert.equal(num(3.14159), '3.14');
  assert.equal(num(0.012345, 2), '0.012');
  assert.equal(num(12345.6), '12346');
  assert.equal(num(NaN), '-');
  assert.equal(num(undefined), '-');
});

test('markdownTable: header, right-aligned numeric columns, escaped pipes', () => {
  const t = markdownTable(['k', 'name'], [[1, 'a|b'], [2.5, 'c']]);
  assert.equal(t, '| k | name |\n|---:|---|\n| 1 | a\\|b |\n| 2.5 | c |\n');
  assert.throws(() => markdownTable(['a', 'b'], [[1]]), /row 0 has 1 cells/);
});

test('textTable pads columns', () => {
  assert.equal(textTable(['x', 'long'], [[1, 'a'], [10, 'bb']]), ' x  long\n 1  a\n10  bb\n');
});

test('replaceSection appends, then replaces only its own block', () => {
  let doc = '# Results\n\nintro\n';
  doc = replaceSection(doc, 'speed', 'Speed', 'v1');
  assert.equal(doc, '# Results\n\nintro\n\n## Speed\n\n<!-- kforce:speed:begin -->\nv1\n<!-- kforce:speed:end -->\n');
  doc = replaceSection(doc, 'quality', 'Quality', 'q1');
  doc = replaceSection(doc, 'speed', 'Speed', 'v2\nline');
  assert.ok(doc.includes('<!-- kforce:speed:begin -->\nv2\nline\n<!-- kforce:speed:end -->'));
  assert.ok(!doc.includes('v1'));
  assert.ok(doc.includes('q1'));
  assert.equal(doc.match(/## Speed/g)!.length, 1);
  assert.throws(() => replaceSection('<!-- kforce:x:begin -->', 'x', 'X', 'b'), /one of its two markers/);
  assert.throws(() => replaceSection('', 'Bad Id', 'X', 'b'), /section id/);
});

test('updateResultsFile and writeReport write files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kforce-report-'));
  const f = join(dir, 'docs', 'RESULTS.md');
  updateResultsFile(f, 'speed', 'Speed', 'table');
  updateResultsFile(f, 'speed', 'Speed', 'table2');
  const text = readFileSync(f, 'utf8');
  assert.ok(text.startsWith('# kforce results'));
  assert.ok(text.includes('table2') && !text.includes('table\n'));
  writeFileSync(f, text.replace('# kforce results', '# kept title'));
  updateResultsFile(f, 'speed', 'Speed', 'table3');
  assert.ok(readFileSync(f, 'utf8').startsWith('# kept title'));
  const paths = writeReport(join(dir, 'out'), { 'a.md': 'x', 'b.svg': '<svg/>' });
  assert.equal(readFileSync(paths[1], 'utf8'), '<svg/>');
});

test('niceTicks and escapeXml', () => {
  assert.deepEqual(niceTicks(0, 4.2), [0, 1, 2, 3, 4]);
  assert.deepEqual(niceTicks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.equal(escapeXml('a<b & "c">'), 'a&lt;b &amp; &quot;c&quot;&gt;');
});

test('lineChart: well-formed SVG with one path per series, markers at the data, legend and labels', () => {
  const svg = lineChart({
    title: 'Speedup <vs> batch',
    xLabel: 'batch size',
    yLabel: 'speedup',
    xScale: 'log2',
    series: [
      { name: 'k=1', points: [[1, 1], [4, 1.1], [16, 0.9], [64, 0.8]] },
      { name: 'k=4', points: [[1, 3.5], [4, 3], [16, 2], [64, 0.7]] },
    ],
    hLines: [{ y: 1, label: 'AR' }],
  });
  assert.ok(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'));
  assert.ok(svg.trimEnd().endsWith('</svg>'));
  assert.equal(svg.match(/<path /g)!.length, 2);
  assert.equal(svg.match(/<circle /g)!.length, 8);
  assert.ok(svg.includes('Speedup &lt;vs&gt; batch'));
  assert.ok(svg.includes('>k=4</text>'));
  assert.ok(svg.includes('stroke-dasharray'));
  // log2 axis: 1, 4, 16, 64 evenly spaced
  const xs = [...svg.matchAll(/<circle cx="([\d.]+)"/g)].slice(0, 4).map((m) => Number(m[1]));
  const gaps = xs.slice(1).map((x, i) => x - xs[i]);
  for (const g of gaps) assert.ok(Math.abs(g - gaps[0]) < 0.2, `gaps ${gaps}`);
  // Higher y is drawn higher (smaller svg y).
  const ys = [...svg.matchAll(/<circle cx="[\d.]+" cy="([\d.]+)"/g)].map((m) => Number(m[1]));
  assert.ok(ys[4] < ys[0]);
  assert.throws(() => lineChart({ title: 't', xLabel: 'x', yLabel: 'y', series: [{ name: 'a', points: [[NaN, 1]] }] }), /no finite/);
  assert.throws(() => lineChart({ title: 't', xLabel: 'x', yLabel: 'y', xScale: 'log2', series: [{ name: 'a', points: [[0, 1]] }] }), /positive/);
});
