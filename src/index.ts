/** graft's library API: the CLI is a thin layer over these. */
export { GraftError, UsageError, ImageError } from './errors.js';
export * from './image/index.js';
export * from './data/index.js';
export { Backbone, softmaxRows, topK, type BackboneOptions, type Prediction } from './engine/backbone.js';
export { extractFeatures, type ExtractOptions, type ExtractResult } from './engine/extract.js';
export { FeatureCache, defaultFeatureCacheDir } from './engine/feature-cache.js';
export { OrtModel } from './engine/ort.js';
export { resolveModel, type ModelRef, type ResolveOptions } from './models/resolve.js';
export { loadOnnx, type OnnxInfo } from './models/onnx-file.js';
export { imagenetClasses, readLabelsFile } from './models/labels.js';
export * from './learn/index.js';
export { loadRun, saveRun, isRunDir, type RunConfig, type LoadedRun } from './learn/run.js';
export { trainRun, type TrainRunOptions, type TrainRunResult } from './tasks/train.js';
export { evalRun, type EvalRunOptions } from './tasks/evaluate.js';
export { predict, type PredictOptions, type PredictResult } from './tasks/predict.js';
export { extractDir, type ExtractDirOptions } from './tasks/extract.js';
export { layers } from './tasks/layers.js';
export type { Reporter } from './tasks/reporter.js';
