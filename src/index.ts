// Public API of kforce (the package entry). Model kinds, their construction, distillation targets and losses.
// Checkpoint IO (loadModel, readSafetensors, writeSafetensors) is re-exported from src/io.

export type { Tensor, ModelConfig, BatchDecoder, SeqId } from './model/types.ts';
export type { ModelKind, DType, ParamLayout, ParamEntry } from './model/params.ts';
export { paramLayout, referenceNames, ropeInvFreq, INV_FREQ_NAME } from './model/params.ts';
export { ArModel, arForward, arBackward, logSoftmaxRows } from './model/ar.ts';
export type { ArSession, ModelOptions } from './model/ar.ts';
export { PflmModel, stairForward, stairBackward, doubleForward, penalisedArgmax } from './model/pflm.ts';
export type { PflmSession, GenerateOptions } from './model/pflm.ts';
export { KvDecoder, createDecoder } from './model/decoder.ts';
export { initModel, buildModel, modelTensors, initStudentFromTeacher, DEFAULT_PFLM_MAX_K } from './model/factory.ts';
export type { Model, AnyModel, InitOptions } from './model/factory.ts';
export {
  inverseCdfTargets, inverseCdfTargetsFlat, selfForcingTargets, selfForcingTargetsFlat, noiseInversionIntervals,
  noiseInversionIntervalsFlat, inverseCdfSample, argmaxRow,
} from './model/targets.ts';
export { distillationLoss, nextTokenLoss, arLossAndGrad, stairLossAndGrad, gradTensors } from './model/loss.ts';
export { getBackend, setBackend } from './tensor/select.ts';
export { hugePages, packedLinears, preferHugePagesForDecoding, preferNativeSettingsForDecoding, preferPackedLinearsForDecoding } from './tensor/native.ts';
export { Rng } from './tensor/rng.ts';
// Checkpoint IO (src/io): safetensors, PyTorch/Lightning checkpoint import, whole-model load/save.
export { loadModel, saveModel, readModelFile, inferConfig, CONFIG_METADATA_KEY, KIND_METADATA_KEY } from './io/model-file.ts';
export type { LoadModelOptions, SaveModelOptions, ModelFileContents } from './io/model-file.ts';
export { readSafetensors, readSafetensorsFile, readSafetensorsHeader, writeSafetensors } from './io/safetensors.ts';
export type { SafetensorsContents, SafetensorsHeader, SafetensorsEntry, WriteOptions } from './io/safetensors.ts';
export { readCkpt, readCheckpoint, openTorchArchive } from './io/ckpt.ts';
export type { CheckpointContents, ReadCheckpointOptions, TorchArchive } from './io/ckpt.ts';
// Serving (src/serve): the OpenAI-compatible HTTP server and its continuous-batching scheduler.
export { createServer } from './serve/server.ts';
export type { ServerOptions, KforceServer, TextTokenizer } from './serve/server.ts';
export { Scheduler } from './serve/scheduler.ts';
export type { Job, JobHandle, JobResult, SchedulerOptions } from './serve/scheduler.ts';
// Decoding (src/decode): batched generation for both model kinds, the samplers and the positional noise stream.
export { generate } from './decode/generate.ts';
export type { GenerateOptions as DecodeOptions, GenerateResult, TokenEvent, FinishReason } from './decode/generate.ts';
export { NoiseStream, uniformAt, streamKey } from './decode/noise.ts';
export {
  TokenCounts, sampleAr, selectPflm, softmax64, inverseCdf, topPFilter, argmax, applyFrequencyPenalty, suppressMask,
  recommendedPenalty, MASK_LOGIT,
} from './decode/sampling.ts';
export type { ArSamplingOptions } from './decode/sampling.ts';
// Evaluation (src/eval): metrics, roofline model, benchmarks.
export { perplexity, unigramEntropy, repeatedNgramRate, SlotAgreement } from './eval/metrics.ts';
export { paramCounts, stepCost, stepSeconds, stepMemoryBound, predictRun, predictSpeedup } from './eval/roofline.ts';
export type { MachineRates, StepShape, StepCost, RunShape, RunPrediction } from './eval/roofline.ts';
export { scoreContinuations, teacherForce } from './eval/score.ts';
export { runSpeedBench } from './eval/bench-speed.ts';
export type { SpeedModels, SpeedOptions, SpeedReport, SpeedResult } from './eval/bench-speed.ts';
export { runQualityBench } from './eval/bench-quality.ts';
export type { QualityModels, QualityOptions, QualityReport, QualityRow } from './eval/bench-quality.ts';
export { runEngineBench } from './eval/bench-engine.ts';
export type { EngineOptions, EngineResult } from './eval/bench-engine.ts';
// Training (src/train): corpora, tokenizers, token shards, the AR trainer and K-Forcing distillation.
export { Tokenizer, MASK_TOKEN, EOT_TOKEN } from './train/tokenizer.ts';
export type { TokenizerInfo } from './train/tokenizer.ts';
export { resolveSources, BUILTIN_SOURCES, cleanBrown } from './train/corpus.ts';
export type { Doc, Source } from './train/corpus.ts';
export { buildDataset, trainTokenizerOn } from './train/dataset.ts';
export type { BuildOptions } from './train/dataset.ts';
export { readMeta, TokenReader } from './train/shards.ts';
export type { DataMeta } from './train/shards.ts';
export { BatchSampler, validationBatches } from './train/batches.ts';
export { PRESETS, getPreset, countParams } from './train/presets.ts';
export type { Preset, OptimSettings, ModelShape } from './train/presets.ts';
export { trainAr, arValLoss } from './train/train-ar.ts';
export type { TrainArOptions, TrainArResult } from './train/train-ar.ts';
export { distill, distillChain } from './train/distill.ts';
export type { DistillOptions, DistillResult, ChainOptions, SlotStats, TargetKind } from './train/distill.ts';
export { saveModelFile, loadModelSpec } from './train/model-io.ts';
