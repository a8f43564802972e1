/**
 * `graft/advanced`: the engine-level pieces under the curated API of `graft` (src/index.ts) — backbones and their
 * ORT sessions, feature extraction and caches, heads and their training, the fine-tuning loop, gradient programs,
 * the model store and importers, and the task functions under their internal names. For people building on graft;
 * the names here may change between minor versions.
 */
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
export { modelSourcePath } from './models/model-source.js';
export { ModelStore, defaultStore, registerImporter, unregisterImporter, catalogEntries, findEntry, closeMatches, type CatalogEntry, type CatalogFile, type ModelFormat, type LabelSet, type Importer, type PulledModel, type StoreOptions, type StoredFile, type CachedModel } from './models/store.js';
export * from './learn/index.js';
export { loadRun, saveRun, isRunDir, type RunConfig, type LoadedRun } from './learn/run.js';
export { trainRun, type TrainRunOptions, type TrainRunResult } from './tasks/train.js';
export { finetuneRun, resumeFinetuneRun, lrFindRun, FINETUNE_FILES, type FinetuneRunOptions, type FinetuneRunResult, type FinetuneDataOptions, type LrFindRunOptions, type LrFindRunResult } from './tasks/finetune.js';
export { finetune, lrFind, scheduleAt, finetuneSettings, listBlocks, cutForLastBlocks, suffixModel, convWeightNames, bnAffineNames, replaceInitializers, readCheckpoint, writeCheckpoint, type Block, type CutSet, type FinetuneData, type FinetuneOptions, type FinetuneResult, type FinetuneSettings, type LrFindOptions, type LrFindResult, type Schedule } from './learn/finetune.js';
export { tunableBlocks } from './learn/blocks.js';
export { lrFinderPng, lrFinderSvg } from './learn/lr-chart.js';
export { evalRun, type EvalRunOptions } from './tasks/evaluate.js';
export { predict, type PredictOptions, type PredictResult } from './tasks/predict.js';
export { exportRun, describePreprocess, type ExportOptions, type ExportResult } from './tasks/export.js';
export { buildExportGraph, EXPORT_OUTPUTS, type ExportGraphOptions, type ExportedGraph } from './learn/export.js';
export { extractDir, type ExtractDirOptions } from './tasks/extract.js';
export { layers } from './tasks/layers.js';
export { featureMaps, type FeatureMapsOptions, type FeatureMapsResult, type LayerMaps } from './vision/featuremaps.js';
export { renderFeatureMapPng, writeFeatureMapPngs, featureMapPaths } from './vision/featuremap-png.js';
export type { Reporter } from './tasks/reporter.js';
export { GradientProgram, type ProgramSpec, type ProgramOptions, type ProgramResult } from './engine/grad/program.js';
export { buildGradient, DEFAULT_CONV_METHODS, type GradSpec, type GradGraph, type LossTerm } from './engine/grad/build.js';
export { prepareForward, type ForwardGraph } from './engine/grad/forward.js';
export { withPixelInput, PIXELS, PIXEL_LOGITS } from './engine/grad/pixels.js';
export { loadClassifier, type DiffClassifier, type ClassGradient } from './vision/classifier.js';
export { Classifier, type ClassifierOptions, type ImagePrediction } from './api/classifier.js';
export { dreamTask, type DreamTaskOptions, type DreamTaskResult } from './tasks/dream.js';
export { attackTask, type AttackTaskOptions, type AttackTaskResult } from './tasks/attack.js';
export { explainTask, type ExplainTaskOptions, type ExplainTaskResult } from './tasks/explain.js';
export { convertModel, type ConvertResult } from './tasks/convert.js';
export { renderReport } from './tasks/report.js';
export { startServer, type ServeOptions, type RunningServer } from './server/serve.js';
export { buildApp, type AppOptions } from './server/app.js';
