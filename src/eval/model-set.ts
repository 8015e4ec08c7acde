// Finding the models of a model folder (e.g. models/small/: an AR teacher, PFLM stages, a judge, tokenizer.json)
// by what the files hold rather than by fixed names: the kind comes from the file, a name containing 'judge' marks the
// judge, and among several other AR models the one named 'teacher' (else the first by name) is the teacher.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadModel } from '../io/model-file.ts';
import type { ArModel } from '../model/ar.ts';
import type { PflmModel } from '../model/pflm.ts';

export interface ModelSet {
  dir: string;
  teacher: ArModel | null;
  teacherFile: string | null;
  judge: ArModel | null;
  judgeFile: string | null;
  /** Sorted by maxK. */
  pflms: PflmModel[];
  pflmFiles: string[];
  tokenizerFile: string | null;
}

export function modelFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort().map((f) => join(dir, f));
}

export async function loadModelSet(dir: string): Promise<ModelSet> {
  const files = modelFiles(dir);
  if (files.length === 0) throw new Error(`no .safetensors model files in ${dir}`);
  const set: ModelSet = { dir, teacher: null, teacherFile: null, judge: null, judgeFile: null, pflms: [], pflmFiles: [], tokenizerFile: null };
  const ars: Array<[string, ArModel]> = [];
  const pflms: Array<[string, PflmModel]> = [];
  for (const f of files) {
    const m = await loadModel(f);
    if (m.kind === 'pflm') pflms.push([f, m]);
    else ars.push([f, m]);
  }
  const base = (f: string) => f.slice(f.lastIndexOf('/') + 1).toLowerCase();
  const judge = ars.find(([f]) => base(f).includes('judge'));
  if (judge) [set.judgeFile, set.judge] = judge;
  const others = ars.filter((a) => a !== judge);
  const teacher = others.find(([f]) => base(f).includes('teacher')) ?? others[0];
  if (teacher) [set.teacherFile, set.teacher] = teacher;
  pflms.sort((a, b) => a[1].config.maxK - b[1].config.maxK || a[0].localeCompare(b[0]));
  set.pflms = pflms.map((p) => p[1]);
  set.pflmFiles = pflms.map((p) => p[0]);
  const tok = join(dir, 'tokenizer.json');
  set.tokenizerFile = existsSync(tok) ? tok : null;
  return set;
}
