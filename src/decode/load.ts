// Loading what generation needs from disk: a model file and the tokenizer that goes with it (an explicit path, or
// tokenizer.json beside the model; none means the model works on token ids only).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { loadModel } from '../io/model-file.ts';
import type { Model } from '../model/factory.ts';
import { Tokenizer } from '../train/tokenizer.ts';

/** The tokenizer at `explicit`, else tokenizer.json in the model's folder, else null. */
export function tokenizerFor(modelPath: string, explicit?: string): Tokenizer | null {
  if (explicit) return Tokenizer.load(explicit);
  const beside = join(dirname(modelPath), 'tokenizer.json');
  return existsSync(beside) ? Tokenizer.load(beside) : null;
}

/** Checks that a tokenizer fits a model (same vocabulary size and [MASK] id). */
export function checkTokenizerFits(tok: Tokenizer, model: { config: { vocabSize: number; maskIndex: number } }, what: string): void {
  if (tok.vocabSize !== model.config.vocabSize) {
    throw new Error(`${what}: tokenizer has ${tok.vocabSize} ids but the model's vocabulary is ${model.config.vocabSize}`);
  }
  if (tok.maskId !== model.config.maskIndex) {
    throw new Error(`${what}: tokenizer [MASK] is ${tok.maskId} but the model's maskIndex is ${model.config.maskIndex}`);
  }
}

export async function loadModelFile(path: string): Promise<Model> {
  if (!existsSync(path)) throw new Error(`model file not found: ${path}`);
  return loadModel(path);
}

/** Parses '1,2,3' into token ids in [0, V). */
export function parseIds(text: string, vocabSize: number, what = '--ids'): number[] {
  const ids = text.split(/[\s,]+/).filter(Boolean).map(Number);
  if (ids.length === 0) throw new Error(`${what}: no token ids in '${text}'`);
  for (const t of ids) {
    if (!Number.isInteger(t) || t < 0 || t >= vocabSize) throw new Error(`${what}: '${t}' is not a token id in [0, ${vocabSize})`);
  }
  return ids;
}
