export {
  HEAD_KINDS,
  HeadJsonSchema,
  headFromJSON,
  trainHead,
  type EpochLog,
  type FeatureSet,
  type Head,
  type HeadJson,
  type HeadKind,
  type TrainOptions,
  type TrainResult,
} from './heads.js';
export {
  accuracyOf,
  argmaxRows,
  evaluate,
  logLoss,
  mostConfused,
  type ConfusedPair,
  type ClassMetrics,
  type Evaluation,
  type WrongPrediction,
} from './metrics.js';
export { confusionMatrixPng, confusionMatrixSvg, escapeXml, trainingCurvePng, trainingCurveSvg, type ChartSize } from './charts.js';
