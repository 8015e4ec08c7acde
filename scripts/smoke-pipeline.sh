#!/usr/bin/env bash
# Smoke test of the whole training pipeline: Brown corpus -> byte-level BPE -> tiny AR teacher -> PFLM k=1 -> k=2 -> k=4.
# Prints progress on stderr and, as its last stdout line, one JSON object with the teacher's validation loss before
# and after training and, per stage, the held-out per-slot accuracy against the teacher's targets.
# Knobs (environment): SMOKE_DIR (default runs/smoke), SMOKE_BYTES (corpus bytes, default 1500000), SMOKE_VOCAB
# (default 512), SMOKE_TEACHER_ARGS / SMOKE_DISTILL_ARGS (extra flags, e.g. "--steps 50"), SMOKE_SCHEDULE (1,2,4).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${SMOKE_DIR:-runs/smoke}
BYTES=${SMOKE_BYTES:-1500000}
VOCAB=${SMOKE_VOCAB:-512}
SCHEDULE=${SMOKE_SCHEDULE:-1,2,4}
kforce() { node --import tsx src/cli/main.ts "$@"; }

start=$(node -e "console.log(Date.now())")
rm -rf "$DIR"
mkdir -p "$DIR"
kforce data build brown --out "$DIR/data" --tokenizer "bpe:$VOCAB" --max-bytes "$BYTES" >&2
# shellcheck disable=SC2086
kforce train --data "$DIR/data" --run "$DIR/teacher" --preset tiny --quiet ${SMOKE_TEACHER_ARGS:-} >&2
# shellcheck disable=SC2086
kforce distill --data "$DIR/data" --teacher "$DIR/teacher" --schedule "$SCHEDULE" --run "$DIR/pflm" --preset tiny --quiet \
  ${SMOKE_DISTILL_ARGS:-} >&2

node -e '
const fs = require("fs");
const [dir, schedule, start] = process.argv.slice(1);
const wall = (Date.now() - Number(start)) / 1000;
const read = (f) => JSON.parse(fs.readFileSync(f, "utf8"));
const meta = read(`${dir}/data/meta.json`);
const t = read(`${dir}/teacher/result.json`);
const r4 = (x) => Math.round(x * 1e4) / 1e4;
const stages = schedule.split(",").map((k) => {
  const r = read(`${dir}/pflm-k${k}/result.json`);
  return { k: r.k, targets: r.targets, steps: r.steps, seconds: r4(r.wallSeconds),
    heldOutSlotAccStart: r.heldOutStart.acc.map(r4), heldOutSlotAcc: r.heldOut.acc.map(r4), heldOutSlotLoss: r.heldOut.loss.map(r4) };
});
console.log(JSON.stringify({
  corpus: "brown", corpusBytes: meta.sources.reduce((s, x) => s + x.bytes, 0), vocabSize: meta.vocabSize,
  trainTokens: meta.splits.train.tokens, valTokens: meta.splits.val.tokens,
  teacherParams: t.params, teacherSteps: t.steps, teacherSeconds: r4(t.wallSeconds),
  teacherValLossStart: r4(t.valLossStart), teacherValLossEnd: r4(t.valLossEnd),
  stages, backend: t.backend, wallSeconds: r4(Number(wall)),
}));
' "$DIR" "$SCHEDULE" "$start"
