// Model files as the training commands see them: a model is saved with its tokenizer.json beside it (the metadata
// names the file), and a teacher is given either as a model file or as a finished run folder.
import fs from 'node:fs';
import path from 'node:path';
import { loadModel, readModelFile, saveModel } from '../io/model-file.ts';
import type { Model } from '../model/factory.ts';
import { MODEL_FILE, TOKENIZER_FILE } from './run.ts';

export const TOKENIZER_METADATA_KEY = 'kforce_tokenizer';

/** Saves a model; when `tokenizer` is given it is copied next to the model (unless already there) and named in the
 * file's metadata, so the model file and its tokenizer travel together. */
export async function saveModelFile(file: string, model: Model, opts: { tokenizer?: string; fp16?: boolean } = {}): Promise<void> {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const metadata: Record<string, string> = {};
  if (opts.tokenizer) {
    const dest = path.join(path.dirname(file), TOKENIZER_FILE);
    if (path.resolve(dest) !== path.resolve(opts.tokenizer)) fs.copyFileSync(opts.tokenizer, dest);
    metadata[TOKENIZER_METADATA_KEY] = TOKENIZER_FILE;
  }
  await saveModel(file, model, { dtype: opts.fp16 ? 'F16' : 'F32', metadata });
}

export interface LoadedModel {
  model: Model;
  file: string;
  /** The tokenizer.json that travels with the model, or null when there is none next to it. */
  tokenizer: string | null;
}

/** Resolves a model spec (a model file, or a run folder holding model.safetensors) and loads it. */
export async function loadModelSpec(spec: string, what = 'model'): Promise<LoadedModel> {
  if (!fs.existsSync(spec)) throw new Error(`${what} not found: ${spec}`);
  let file = spec;
  if (fs.statSync(spec).isDirectory()) {
    file = path.join(spec, MODEL_FILE);
    if (!fs.existsSync(file)) throw new Error(`${what} ${spec} is a folder without ${MODEL_FILE} (has its run finished?)`);
  }
  const model = await loadModel(file);
  let tokenizer: string | null = null;
  if (file.endsWith('.safetensors')) {
    const named = (await readModelFile(file)).metadata[TOKENIZER_METADATA_KEY];
    const cand = path.join(path.dirname(file), named ?? TOKENIZER_FILE);
    if (fs.existsSync(cand)) tokenizer = cand;
  } else {
    const cand = path.join(path.dirname(file), TOKENIZER_FILE);
    if (fs.existsSync(cand)) tokenizer = cand;
  }
  return { model, file, tokenizer };
}
