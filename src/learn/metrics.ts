/**
 * Classification metrics from predicted probabilities: what a person wants to know after training a head.
 */
import { z } from 'zod';
import { GraftError } from '../errors.js';

export interface ClassMetrics {
  class: string;
  /** Of the images predicted as this class, the share that really are (0 when nothing was predicted as it). */
  precision: number;
  /** Of the images of this class, the share found (0 when the class has no images). */
  recall: number;
  f1: number;
  /** Number of images whose true class this is. */
  support: number;
}

export interface WrongPrediction {
  /** Row in the evaluated set. */
  index: number;
  path?: string;
  trueClass: string;
  predictedClass: string;
  /** Probability given to the (wrong) predicted class. */
  probability: number;
  /** Probability given to the true class. */
  trueProbability: number;
}

export interface Evaluation {
  n: number;
  accuracy: number;
  /** Mean recall over the classes that have at least one image (sklearn's balanced_accuracy_score). */
  balancedAccuracy: number;
  /** Mean negative log-probability of the true class (natural log; probabilities clipped at 1e-15). */
  logLoss: number;
  perClass: ClassMetrics[];
  /** confusion[true][predicted] = count. */
  confusion: number[][];
  /** Wrong predictions, most confident first (ties: lower index first). */
  mostConfidentlyWrong: WrongPrediction[];
  /** Off-diagonal cells of the confusion matrix, largest first (fastai's most_confused). */
  mostConfused: ConfusedPair[];
}

export interface ConfusedPair { trueClass: string; predictedClass: string; count: number }

/** A number of metrics.json: JSON writes NaN (no images to measure on) as null; read back as NaN. */
const metric = z.number().nullable().transform((v) => v ?? NaN);

/** An Evaluation as metrics.json holds it (under `validation`), for reading it back (report, the page). */
export const EvaluationSchema = z.object({
  n: z.number().int().nonnegative(),
  accuracy: metric,
  balancedAccuracy: metric,
  logLoss: metric,
  perClass: z.array(z.object({ class: z.string(), precision: metric, recall: metric, f1: metric, support: z.number().int().nonnegative() })),
  confusion: z.array(z.array(z.number().int().nonnegative())),
  mostConfidentlyWrong: z.array(
    z.object({ index: z.number().int(), path: z.string().optional(), trueClass: z.string(), predictedClass: z.string(), probability: metric, trueProbability: metric }),
  ),
  mostConfused: z.array(z.object({ trueClass: z.string(), predictedClass: z.string(), count: z.number().int() })),
}) satisfies z.ZodType<Evaluation, unknown>;

/** The `k` largest off-diagonal cells (ties: by true then predicted class index). */
export function mostConfused(confusion: number[][], classes: string[], k = 10): ConfusedPair[] {
  const pairs: (ConfusedPair & { t: number; p: number })[] = [];
  confusion.forEach((row, t) => row.forEach((count, p) => {
    if (t !== p && count > 0) pairs.push({ trueClass: classes[t], predictedClass: classes[p], count, t, p });
  }));
  pairs.sort((a, b) => b.count - a.count || a.t - b.t || a.p - b.p);
  return pairs.slice(0, k).map(({ trueClass, predictedClass, count }) => ({ trueClass, predictedClass, count }));
}

const EPS = 1e-15;

/** Index of the largest probability in each row (ties: the lowest class index). */
export function argmaxRows(proba: Float32Array, n: number, numClasses: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const o = i * numClasses;
    let best = 0;
    let bestP = proba[o];
    for (let c = 1; c < numClasses; c++) {
      if (proba[o + c] > bestP) {
        bestP = proba[o + c];
        best = c;
      }
    }
    out[i] = best;
  }
  return out;
}

/** Mean cross-entropy of `proba` (n × C, rows sum to 1) against labels `y`. */
export function logLoss(proba: Float32Array, y: Int32Array, numClasses: number): number {
  const n = y.length;
  let sum = 0;
  for (let i = 0; i < n; i++) sum -= Math.log(Math.max(proba[i * numClasses + y[i]], EPS));
  return sum / n;
}

/** Share of rows whose argmax is the label. */
export function accuracyOf(proba: Float32Array, y: Int32Array, numClasses: number): number {
  const pred = argmaxRows(proba, y.length, numClasses);
  let ok = 0;
  for (let i = 0; i < y.length; i++) if (pred[i] === y[i]) ok++;
  return ok / y.length;
}

export function evaluate(
  proba: Float32Array,
  y: Int32Array,
  classes: string[],
  items?: { path: string }[],
  topWrong = 12,
): Evaluation {
  const C = classes.length;
  const n = y.length;
  if (C < 1) throw new GraftError('evaluate: no classes');
  if (n === 0) throw new GraftError('evaluate: nothing to evaluate (0 examples)');
  if (proba.length !== n * C) {
    throw new GraftError(`evaluate: expected ${n} × ${C} = ${n * C} probabilities, got ${proba.length}`);
  }
  if (items && items.length !== n) throw new GraftError(`evaluate: ${items.length} items for ${n} labels`);
  for (let i = 0; i < n; i++) {
    if (!(y[i] >= 0 && y[i] < C)) throw new GraftError(`evaluate: label ${y[i]} at row ${i} is not a class index (0..${C - 1})`);
  }

  const pred = argmaxRows(proba, n, C);
  const confusion: number[][] = Array.from({ length: C }, () => new Array<number>(C).fill(0));
  let correct = 0;
  for (let i = 0; i < n; i++) {
    confusion[y[i]][pred[i]]++;
    if (pred[i] === y[i]) correct++;
  }

  const perClass: ClassMetrics[] = [];
  let recallSum = 0;
  let present = 0;
  for (let c = 0; c < C; c++) {
    const tp = confusion[c][c];
    let support = 0;
    let predicted = 0;
    for (let k = 0; k < C; k++) {
      support += confusion[c][k];
      predicted += confusion[k][c];
    }
    const precision = predicted > 0 ? tp / predicted : 0;
    const recall = support > 0 ? tp / support : 0;
    const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
    perClass.push({ class: classes[c], precision, recall, f1, support });
    if (support > 0) {
      recallSum += recall;
      present++;
    }
  }

  const wrong: WrongPrediction[] = [];
  for (let i = 0; i < n; i++) {
    if (pred[i] === y[i]) continue;
    const w: WrongPrediction = {
      index: i,
      trueClass: classes[y[i]],
      predictedClass: classes[pred[i]],
      probability: proba[i * C + pred[i]],
      trueProbability: proba[i * C + y[i]],
    };
    if (items) w.path = items[i].path;
    wrong.push(w);
  }
  wrong.sort((a, b) => b.probability - a.probability || a.index - b.index);

  return {
    n,
    accuracy: correct / n,
    balancedAccuracy: present > 0 ? recallSum / present : 0,
    logLoss: logLoss(proba, y, C),
    perClass,
    confusion,
    mostConfidentlyWrong: wrong.slice(0, Math.max(0, topWrong)),
    mostConfused: mostConfused(confusion, classes),
  };
}

/** Per-class loss weights n / (C · n_c) (classes absent from training get 0). */
export function classWeights(y: Int32Array, C: number): Float32Array {
  const counts = new Float64Array(C);
  for (const c of y) counts[c]++;
  const present = counts.filter((c) => c > 0).length;
  return Float32Array.from(counts, (c) => (c > 0 ? y.length / (present * c) : 0));
}
