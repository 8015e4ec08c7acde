// Report writers shared by the benchmarks: markdown tables, a report folder (markdown + SVG + JSON), and the
// marked sections of docs/RESULTS.md that a benchmark run replaces with its own text (the rest of the file is kept).
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import os from 'node:os';

export type Cell = string | number;

/** Formats a number with `digits` significant digits (integers stay whole); '-' for NaN/undefined. */
export function num(x: number | undefined, digits = 3): string {
  if (x === undefined || Number.isNaN(x)) return '-';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (Number.isInteger(x) && Math.abs(x) < 1e6) return String(x);
  const a = Math.abs(x);
  if (a >= 1000) return x.toFixed(0);
  return Number(x.toPrecision(digits)).toString();
}

/** A GitHub-flavoured markdown table; numeric cells are right-aligned. */
export function markdownTable(headers: string[], rows: Cell[][]): string {
  for (const [i, r] of rows.entries()) {
    if (r.length !== headers.length) throw new Error(`markdownTable: row ${i} has ${r.length} cells for ${headers.length} headers`);
  }
  const esc = (c: Cell) => (typeof c === 'number' ? num(c) : c.replace(/\|/g, '\\|').replace(/\n/g, ' '));
  const numeric = headers.map((_, j) => rows.length > 0 && rows.every((r) => typeof r[j] === 'number'));
  const lines = [
    `| ${headers.map((h) => esc(h)).join(' | ')} |`,
    `|${numeric.map((n) => (n ? '---:' : '---')).join('|')}|`,
    ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`),
  ];
  return lines.join('\n') + '\n';
}

/** A plain-text table for terminals (columns padded, numbers right-aligned). */
export function textTable(headers: string[], rows: Cell[][]): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? num(c) : c)))];
  const widths = headers.map((_, j) => Math.max(...cells.map((r) => String(r[j]).length)));
  const right = headers.map((_, j) => rows.length > 0 && rows.every((r) => typeof r[j] === 'number'));
  return cells
    .map((r) => r.map((c, j) => (right[j] ? String(c).padStart(widths[j]) : String(c).padEnd(widths[j]))).join('  ').trimEnd())
    .join('\n') + '\n';
}

/** One line describing the machine, for reports. */
export function machineLine(backend?: { name: string; threads: number; blas: string }): string {
  const cpu = os.cpus()[0]?.model?.trim() ?? 'unknown CPU';
  const b = backend ? `, backend ${backend.name} (${backend.threads} threads, ${backend.blas})` : '';
  return `${cpu}, ${os.cpus().length} vCPUs, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Node ${process.version}${b}`;
}

/** Writes the files of a report folder (creating it); returns their paths. */
export function writeReport(dir: string, files: Record<string, string>): string[] {
  mkdirSync(dir, { recursive: true });
  return Object.entries(files).map(([name, text]) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  });
}

const begin = (id: string) => `<!-- kforce:${id}:begin -->`;
const end = (id: string) => `<!-- kforce:${id}:end -->`;

/**
 * Replaces the text between `<!-- kforce:<id>:begin -->` and `<!-- kforce:<id>:end -->` in `doc` with `body`, or
 * appends a new marked section under `heading` when the markers are absent.
 */
export function replaceSection(doc: string, id: string, heading: string, body: string): string {
  if (!/^[a-z0-9-]+$/.test(id)) throw new Error(`replaceSection: section id '${id}' must be lower-case letters, digits or '-'`);
  const b = begin(id);
  const e = end(id);
  const i = doc.indexOf(b);
  const j = doc.indexOf(e);
  const block = `${b}\n${body.trimEnd()}\n${e}`;
  if (i >= 0 && j > i) return doc.slice(0, i) + block + doc.slice(j + e.length);
  if (i >= 0 || j >= 0) throw new Error(`replaceSection: section '${id}' has only one of its two markers`);
  const sep = doc.length === 0 ? '' : doc.endsWith('\n\n') ? '' : doc.endsWith('\n') ? '\n' : '\n\n';
  return `${doc}${sep}## ${heading}\n\n${block}\n`;
}

/** Applies replaceSection to a file (created with a title when missing). */
export function updateResultsFile(file: string, id: string, heading: string, body: string): void {
  const doc = existsSync(file) ? readFileSync(file, 'utf8') : '# kforce results\n\nMeasured numbers, written by the commands named in each section.\n';
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, replaceSection(doc, id, heading, body));
}
