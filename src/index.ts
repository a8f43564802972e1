/**
 * graft's public API: one verb per step of the lesson, each taking an options object, plus an in-memory
 * `Classifier`. The CLI is a thin layer over these. Engine-level pieces (sessions, caches, heads, the fine-tuning
 * loop, gradient programs, importers) are in `graft/advanced`.
 *
 *   const feats = await extract('mobilenet_v2_1.0_224', 'photos/', { out: 'feats/' });
 *   const run = await train({ data: 'photos/', model: 'mobilenet_v2_1.0_224', out: 'runs/pets' });
 *   const clf = await Classifier.load('runs/pets');  (await clf.predict(['cat.jpg']))[0].top
 */
import { attackTask } from './tasks/attack.js';
import { convertModel } from './tasks/convert.js';
import { dreamTask } from './tasks/dream.js';
import { evalRun } from './tasks/evaluate.js';
import { explainTask } from './tasks/explain.js';
import { exportRun } from './tasks/export.js';
import { extractDir } from './tasks/extract.js';
import { finetuneRun, lrFindRun, resumeFinetuneRun } from './tasks/finetune.js';
import { trainRun } from './tasks/train.js';
import { renderReport } from './tasks/report.js';
import { startServer } from './server/serve.js';

export { GraftError, UsageError, ImageError, InterruptedError } from './errors.js';
export { Classifier, type ClassifierOptions, type ImagePrediction } from './api/classifier.js';
export { Backbone, type BackboneOptions, type Prediction } from './engine/backbone.js';

/** Features of every image below a folder (cached): `graft extract`. */
export const extract = extractDir;
/** A head on frozen features, written as a run folder: `graft train`. */
export const train = trainRun;
/** Fine-tune the last blocks with the head: `graft train --finetune`. */
export const finetune = finetuneRun;
/** Continue a fine-tuning run from its last checkpoint: `graft train --resume`. */
export const resumeFinetune = resumeFinetuneRun;
/** Loss against learning rate, with a suggestion: `graft lr-find`. */
export const lrFind = lrFindRun;
/** A run (or an exported .onnx) on a labelled folder: `graft eval`. */
export const evaluate = evalRun;
export { predict } from './tasks/predict.js';
/** One ONNX classifier (+ sidecar) for a run: `graft export`. */
export const exportModel = exportRun;
/** The ideal image of a class: `graft dream`. */
export const dream = dreamTask;
/** Adversarial examples, verified on the saved PNG: `graft attack`. */
export const attack = attackTask;
/** Grad-CAM and friends, with deletion/insertion checks: `graft explain`. */
export const explain = explainTask;
export { featureMaps } from './vision/featuremaps.js';
export { layers } from './tasks/layers.js';
/** TF.js and TFLite models into ONNX: `graft convert`. */
export const convert = convertModel;
/** A run as one HTML page: `graft report`. */
export const report = renderReport;
/** The page and the HTTP API: `graft serve`. */
export const serve = startServer;
/** Static int8 (QDQ) quantisation calibrated on images: `graft quantize`. */
export { quantizeTask as quantize } from './tasks/quantize.js';
export type { QuantizeTaskOptions as QuantizeOptions, QuantizeTaskResult as QuantizeResult } from './tasks/quantize.js';

export { loadRun, type RunConfig, type LoadedRun } from './learn/run.js';
export { openDataset, type Dataset, type DatasetItem } from './data/index.js';
export { decodeImage, type RgbImage } from './image/decode.js';
export type { PreprocessSpec } from './image/spec.js';
export { catalogEntries, defaultStore, type CatalogEntry } from './models/store.js';
export type { Reporter } from './tasks/reporter.js';
export type { TrainRunOptions as TrainOptions, TrainRunResult as TrainResult } from './tasks/train.js';
export type { FinetuneRunOptions as FinetuneOptions, FinetuneRunResult as FinetuneResult, LrFindRunOptions as LrFindOptions } from './tasks/finetune.js';
export type { EvalRunOptions as EvaluateOptions, EvalRunResult as EvaluateResult } from './tasks/evaluate.js';
export type { PredictOptions, PredictResult } from './tasks/predict.js';
export type { ExportOptions, ExportResult } from './tasks/export.js';
export type { DreamTaskOptions as DreamOptions, DreamTaskResult as DreamResult } from './tasks/dream.js';
export type { AttackTaskOptions as AttackOptions, AttackTaskResult as AttackResult } from './tasks/attack.js';
export type { ExplainTaskOptions as ExplainOptions, ExplainTaskResult as ExplainResult } from './tasks/explain.js';
export type { ExtractDirOptions as ExtractOptions, ExtractDirResult as ExtractResult } from './tasks/extract.js';
export type { Evaluation } from './learn/metrics.js';
export type { ServeOptions } from './server/serve.js';
