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
export { Rng } from './tensor/rng.ts';
// Checkpoint IO (src/io): safetensors, PyTorch/Lightning checkpoint import, whole-model load/save.
export { loadModel, saveModel, readModelFile, inferConfig, CONFIG_METADATA_KEY, KIND_METADATA_KEY } from './io/model-file.ts';
export type { LoadModelOptions, SaveModelOptions, ModelFileContents } from './io/model-file.ts';
export { readSafetensors, readSafetensorsFile, readSafetensorsHeader, writeSafetensors } from './io/safetensors.ts';
export type { SafetensorsContents, SafetensorsHeader, SafetensorsEntry, WriteOptions } from './io/safetensors.ts';
export { readCkpt, readCheckpoint, openTorchArchive } from './io/ckpt.ts';
export type { CheckpointContents, ReadCheckpointOptions, TorchArchive } from './io/ckpt.ts';
