// A small on-disk world for CLI tests: a text corpus of many short documents, its token data folder (BPE tokenizer,
// train/val shards) and random-weight models saved with the tokenizer beside them: an AR teacher, a PFLM (maxK 2)
// and a larger AR judge.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildDataset } from '../../src/train/dataset.ts';
import { saveModelFile } from '../../src/train/model-io.ts';
import { randomArModel, randomModels } from '../../src/eval/random-model.ts';
import { Rng } from '../../src/tensor/rng.ts';

export interface Fixture {
  root: string;
  data: string;
  models: string;
  tokenizer: string;
}

const WORDS = ['the', 'cat', 'sat', 'on', 'a', 'mat', 'and', 'dog', 'ran', 'to', 'house', 'with', 'old', 'man', 'saw', 'red'];

export async function makeFixture(): Promise<Fixture> {
  const root = mkdtempSync(join(tmpdir(), 'kforce-fixture-'));
  const text = join(root, 'text');
  mkdirSync(text);
  const rng = new Rng(1);
  for (let d = 0; d < 80; d++) {
    const words = Array.from({ length: 60 }, () => WORDS[rng.int(WORDS.length)]);
    writeFileSync(join(text, `doc${d}.txt`), words.join(' ') + '.\n');
  }
  const data = join(root, 'data');
  const meta = await buildDataset({ sources: [text], out: data, tokenizer: 'bpe:280', valFraction: 0.2 });
  const tokenizer = join(data, 'tokenizer.json');
  const cfg = { vocabSize: meta.vocabSize, hiddenSize: 16, nHeads: 2, nBlocks: 1, maskIndex: meta.maskId, maxK: 2, maxSeqLen: 64 };
  const { ar, pflm } = randomModels(cfg, 5, 0.5);
  const judge = randomArModel({ ...cfg, hiddenSize: 24, nBlocks: 2 }, 6, 0.5);
  const models = join(root, 'models');
  await saveModelFile(join(models, 'teacher.safetensors'), ar, { tokenizer });
  await saveModelFile(join(models, 'pflm-k2.safetensors'), pflm, { tokenizer });
  await saveModelFile(join(models, 'judge.safetensors'), judge, { tokenizer });
  return { root, data, models, tokenizer: join(models, 'tokenizer.json') };
}
