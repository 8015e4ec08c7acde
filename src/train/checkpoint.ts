// Training checkpoints: everything needed to continue a run bit-identically after a kill. A checkpoint is a folder
// runs/<name>/ckpt/ holding model.safetensors (weights), optim.safetensors (AdamW moments) and state.json (step,
// optimizer step, RNG state, data position, metrics). It is written as ckpt.tmp-<pid>/, then swapped in with renames
// (old -> ckpt.prev, new -> ckpt, then ckpt.prev removed), so at every instant a complete checkpoint exists.
import fs from 'node:fs';
import path from 'node:path';
import { readSafetensorsFile, writeSafetensors } from '../io/safetensors.ts';
import type { AdamW } from '../tensor/optim.ts';
import { buildModel, modelTensors } from '../model/factory.ts';
import type { AnyModel } from '../model/factory.ts';
import type { BaseModel } from '../model/core.ts';
import type { ModelConfig } from '../model/types.ts';
import type { DataPosition } from './batches.ts';
import { fsyncPath, writeFileAtomic } from './atomic.ts';

export interface TrainState {
  step: number; // optimizer steps completed
  adamStep: number;
  rng: number[] | null; // Rng.state() of the run's noise stream (null when the run draws none)
  data: DataPosition;
  tokensSeen: number;
  elapsed: number; // seconds spent training, summed over all sessions of the run
  metrics: Record<string, unknown>;
}

export interface Checkpoint {
  model: AnyModel;
  m: Float32Array;
  v: Float32Array;
  state: TrainState;
}

const CKPT = 'ckpt';
const PREV = 'ckpt.prev';

export async function saveCheckpoint(runDir: string, model: BaseModel<Float32Array>, opt: AdamW, state: TrainState): Promise<void> {
  const tmp = path.join(runDir, `${CKPT}.tmp-${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  const meta = { format: 'kforce-ckpt-1', kind: model.kind, config: JSON.stringify(model.config) };
  await writeSafetensors(path.join(tmp, 'model.safetensors'), modelTensors(model), meta);
  const P = opt.m.length;
  await writeSafetensors(path.join(tmp, 'optim.safetensors'), new Map([
    ['adam.m', { shape: [P], data: opt.m }],
    ['adam.v', { shape: [P], data: opt.v }],
  ]), { adamStep: String(opt.t) });
  // state.json last: a folder with it is complete.
  writeFileAtomic(path.join(tmp, 'state.json'), JSON.stringify(state, null, 1));
  fsyncPath(tmp);
  const cur = path.join(runDir, CKPT);
  const prev = path.join(runDir, PREV);
  fs.rmSync(prev, { recursive: true, force: true });
  if (fs.existsSync(cur)) fs.renameSync(cur, prev);
  fs.renameSync(tmp, cur);
  fsyncPath(runDir);
  fs.rmSync(prev, { recursive: true, force: true });
}

function complete(dir: string): boolean {
  return ['model.safetensors', 'optim.safetensors', 'state.json'].every((f) => fs.existsSync(path.join(dir, f)));
}

export function hasCheckpoint(runDir: string): boolean {
  return complete(path.join(runDir, CKPT)) || complete(path.join(runDir, PREV));
}

/** The newest complete checkpoint of a run (ckpt/, else ckpt.prev/ when a swap was interrupted), or null. */
export async function loadCheckpoint(runDir: string): Promise<Checkpoint | null> {
  const dir = [CKPT, PREV].map((d) => path.join(runDir, d)).find(complete);
  if (!dir) return null;
  const weights = await readSafetensorsFile(path.join(dir, 'model.safetensors'));
  const cfgText = weights.metadata.config;
  if (!cfgText) throw new Error(`${dir}/model.safetensors: no model config in its metadata`);
  const config = JSON.parse(cfgText) as ModelConfig;
  const model = buildModel(config, weights.tensors) as AnyModel;
  const optim = await readSafetensorsFile(path.join(dir, 'optim.safetensors'));
  const m = optim.tensors.get('adam.m')?.data;
  const v = optim.tensors.get('adam.v')?.data;
  if (!m || !v || m.length !== model.params.length || v.length !== model.params.length) {
    throw new Error(`${dir}/optim.safetensors: moments do not match the model's ${model.params.length} parameters`);
  }
  const state = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8')) as TrainState;
  return { model, m, v, state };
}

/** Removes every checkpoint of a run (when it is restarted from scratch). */
export function clearCheckpoints(runDir: string): void {
  for (const d of [CKPT, PREV]) fs.rmSync(path.join(runDir, d), { recursive: true, force: true });
}
