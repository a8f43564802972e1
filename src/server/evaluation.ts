/**
 * What the page's evaluate step shows for a project run: every validation image with its true and predicted class
 * (so a confusion-matrix cell opens its images), per-class precision/recall and the top losses. The run folder does
 * not keep per-image predictions, so they are recomputed on the same seeded split (features come from the cache).
 */
import { join } from 'node:path';
import { argmaxRows, evaluate, EvaluationSchema, type Evaluation } from '../learn/metrics.js';
import { loadRun } from '../learn/run.js';
import { runBackbone } from '../learn/run-backbone.js';
import { runExtraction } from '../tasks/features.js';
import { openTrainVal, toFeatureSet } from '../tasks/train.js';
import { z } from 'zod';
import { readJsonFile } from '../util/json.js';

/** history.json as the page draws it: one entry per epoch. */
const HistorySchema = z.array(z.object({ epoch: z.number() }).passthrough());

export interface PageItem { image: string; true: number; predicted: number; probability: number; trueProbability: number; loss: number }

export interface PageEvaluation {
  run: string;
  classes: string[];
  mode: 'frozen' | 'finetune';
  evaluation: Omit<Evaluation, 'mostConfidentlyWrong'>;
  /** Validation images, the most confidently wrong first, then by loss. */
  items: PageItem[];
  history: unknown[];
  model: string;
}

const cache = new Map<string, Promise<PageEvaluation>>();

export function pageEvaluation(runDir: string, run: string, imageId: (path: string) => string | undefined, threads?: number): Promise<PageEvaluation> {
  let p = cache.get(runDir);
  if (!p) {
    p = compute(runDir, run, imageId, threads);
    cache.set(runDir, p);
    p.catch(() => cache.delete(runDir));
    if (cache.size > 8) cache.delete(cache.keys().next().value!);
  }
  return p;
}

const StoredSchema = z.object({
  validation: EvaluationSchema,
  validationPredictions: z.array(z.object({ path: z.string(), true: z.number().int(), predicted: z.number().int(), probability: z.number(), trueProbability: z.number() })),
});

async function compute(runDir: string, run: string, imageId: (path: string) => string | undefined, threads?: number): Promise<PageEvaluation> {
  const r = await loadRun(runDir);
  const history = await readJsonFile(join(runDir, 'history.json'), HistorySchema).catch(() => []);
  const mode = r.config.model.path === join(runDir, 'model.onnx') ? 'finetune' : 'frozen';
  // A frozen run keeps its validation predictions (from the head chosen on them, before any refit): use those.
  const stored = await readJsonFile(join(runDir, 'metrics.json'), StoredSchema).catch(() => undefined);
  if (stored) {
    const { mostConfidentlyWrong: _w, ...evaluation } = stored.validation;
    const items = stored.validationPredictions.map((p) => ({ image: imageId(p.path) ?? p.path, true: p.true, predicted: p.predicted, probability: p.probability, trueProbability: p.trueProbability, loss: -Math.log(Math.max(p.trueProbability, 1e-15)) }));
    items.sort((a, b) => b.loss - a.loss);
    return { run, classes: r.config.classes, mode, evaluation, items, history, model: r.config.model.source };
  }
  const d = r.config.data;
  const { valItems, classes } = await openTrainVal({ data: d.train, val: d.val, valFraction: d.valFraction ?? 0.2 }, d.splitSeed ?? 0);
  const backbone = await runBackbone(r, { threads });
  try {
    const res = await runExtraction(backbone, valItems.map((i) => i.path), {});
    const set = toFeatureSet(valItems, res);
    const proba = await r.head.predictProba(set.x, set.n);
    const C = classes.length;
    const pred = argmaxRows(proba, set.n, C);
    const { mostConfidentlyWrong: _w, ...evaluation } = evaluate(proba, set.y, classes, set.items, 0);
    const items: PageItem[] = set.items.map((it, i) => {
      const t = set.y[i]!;
      const tp = proba[i * C + t]!;
      return { image: imageId(it.path) ?? it.path, true: t, predicted: pred[i]!, probability: proba[i * C + pred[i]!]!, trueProbability: tp, loss: -Math.log(Math.max(tp, 1e-15)) };
    });
    items.sort((a, b) => b.loss - a.loss);
    return { run, classes, mode, evaluation, items, history, model: r.config.model.source };
  } finally {
    await backbone.dispose();
    await r.head.dispose();
  }
}
