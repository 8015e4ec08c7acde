#!/usr/bin/env bash
# The `small` recipe for real: data -> AR teacher -> PFLM k=1 -> k=2 -> k=4, then fp16 model files in models/small/.
# Every step is resumable: run the script again after a kill (or Ctrl-C) and it continues where it stopped (data is
# built once; training and distillation resume from their last checkpoint; finished stages are skipped).
# Environment: SMALL_DIR (runs folder, default runs/small), SMALL_OUT (default models/small), SMALL_SOURCES (corpus
# sources, default "mix": every installed corpus of ENGINEERING.md, at least Brown), SMALL_VOCAB (default 4096),
# SMALL_TEACHER_ARGS / SMALL_DISTILL_ARGS (extra flags), SMALL_JUDGE=1 (also train the `judge` preset scorer).
# The last stdout line is a JSON object with the figures docs/RESULTS.md needs; a markdown summary precedes it.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${SMALL_DIR:-runs/small}
OUT=${SMALL_OUT:-models/small}
SOURCES=${SMALL_SOURCES:-mix}
VOCAB=${SMALL_VOCAB:-4096}
kforce() { node --import tsx src/cli/main.ts "$@"; }
mkdir -p "$DIR" "$OUT"

if [ ! -f "$DIR/data/meta.json" ]; then
  # shellcheck disable=SC2086
  kforce data build $SOURCES --out "$DIR/data" --tokenizer "bpe:$VOCAB" --force >&2
fi
kforce data info "$DIR/data" >&2
# shellcheck disable=SC2086
kforce train --data "$DIR/data" --run "$DIR/teacher" --preset small ${SMALL_TEACHER_ARGS:-} >&2
# shellcheck disable=SC2086
kforce distill --data "$DIR/data" --teacher "$DIR/teacher" --schedule 1,2,4 --run "$DIR/pflm" --preset small \
  ${SMALL_DISTILL_ARGS:-} >&2
if [ "${SMALL_JUDGE:-0}" = "1" ]; then
  kforce train --data "$DIR/data" --run "$DIR/judge" --preset judge >&2
fi

node --import tsx --input-type=module -e '
import fs from "node:fs";
import path from "node:path";
import { loadModelSpec, saveModelFile } from "./src/train/model-io.ts";
import { readMeta, TokenReader } from "./src/train/shards.ts";
import { validationBatches } from "./src/train/batches.ts";
import { arValLoss } from "./src/train/train-ar.ts";
const [dir, out, judge] = process.argv.slice(1);
const read = (f) => JSON.parse(fs.readFileSync(f, "utf8"));
const r4 = (x) => (x == null ? null : Math.round(x * 1e4) / 1e4);
const meta = read(`${dir}/data/meta.json`);
const runs = [["teacher", `${dir}/teacher`], ["pflm-k1", `${dir}/pflm-k1`], ["pflm-k2", `${dir}/pflm-k2`], ["pflm-k4", `${dir}/pflm-k4`]];
if (judge === "1") runs.push(["judge", `${dir}/judge`]);
fs.copyFileSync(`${dir}/data/tokenizer.json`, `${out}/tokenizer.json`);
const models = {};
for (const [name, run] of runs) {
  const { model } = await loadModelSpec(run);
  await saveModelFile(`${out}/${name}.safetensors`, model, { tokenizer: `${out}/tokenizer.json`, fp16: true });
  const r = read(`${run}/result.json`);
  models[name] = { file: `${out}/${name}.safetensors`, bytes: fs.statSync(`${out}/${name}.safetensors`).size,
    params: r.params, steps: r.steps, wallSeconds: r4(r.wallSeconds), tokens: r.tokens, backend: r.backend,
    hidden: r.config.hiddenSize, heads: r.config.nHeads, blocks: r.config.nBlocks, k: r.config.maxK };
  if (r.kind === "ar") {
    // Validation loss of the fp16 file as shipped, on the same sequences the run evaluated.
    const cfg = read(`${run}/config.json`);
    const reader = new TokenReader(`${dir}/data`, readMeta(`${dir}/data`), "val");
    const shipped = (await loadModelSpec(`${out}/${name}.safetensors`)).model;
    const vb = validationBatches(reader, cfg.optim.seqLen, cfg.optim.evalSeqs, cfg.optim.batchSize);
    const fp16Loss = arValLoss(shipped, vb, cfg.optim.seqLen);
    reader.close();
    Object.assign(models[name], { valLossStart: r4(r.valLossStart), valLoss: r4(r.valLossEnd), valPpl: r4(r.valPplEnd),
      valLossFp16: r4(fp16Loss), valPplFp16: r4(Math.exp(fp16Loss)) });
  } else {
    Object.assign(models[name], { targets: r.targets, heldOutSlotAccStart: r.heldOutStart.acc.map(r4),
      heldOutSlotAcc: r.heldOut.acc.map(r4), heldOutSlotLoss: r.heldOut.loss.map(r4) });
  }
}
const summary = {
  corpus: { sources: meta.sources.map((s) => ({ name: s.name, used: s.used, docs: s.docs, mb: r4(s.bytes / 1e6), note: s.note })),
    trainTokens: meta.splits.train.tokens, valTokens: meta.splits.val.tokens, trainDocs: meta.splits.train.docs,
    valDocs: meta.splits.val.docs },
  tokenizer: { kind: meta.tokenizerKind, vocabSize: meta.vocabSize, maskId: meta.maskId, bosEosId: meta.bosId },
  models,
};
const md = [];
md.push(`corpus: ${summary.corpus.sources.filter((s) => s.used).map((s) => `${s.name} ${s.mb} MB`).join(", ")}; ` +
  `train ${summary.corpus.trainTokens} tokens, val ${summary.corpus.valTokens} tokens; tokenizer ${meta.tokenizerKind} (${meta.vocabSize} ids)`);
md.push("| model | params | D/H/blocks | steps | wall (s) | validation |", "|---|---|---|---|---|---|");
for (const [name, m] of Object.entries(models)) {
  const v = m.valPpl != null ? `val loss ${m.valLoss} (ppl ${m.valPpl}; fp16 file ${m.valPplFp16})`
    : `held-out per-slot acc ${m.heldOutSlotAcc.join(" / ")}, loss ${m.heldOutSlotLoss.join(" / ")}`;
  md.push(`| ${name} | ${(m.params / 1e6).toFixed(2)} M | ${m.hidden}/${m.heads}/${m.blocks} | ${m.steps} | ${m.wallSeconds} | ${v} |`);
}
console.log(md.join("\n"));
console.log(JSON.stringify(summary));
' "$DIR" "$OUT" "${SMALL_JUDGE:-0}"
