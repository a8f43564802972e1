import { join, dirname, basename, extname } from 'node:path';
import { UsageError } from '../errors.js';
import { decodeImage, type RgbImage } from '../image/decode.js';
import { writePng } from '../image/png.js';
import { writeJsonAtomic } from '../util/fs.js';
import { loadClassifier, resolveClass, type DiffClassifier } from '../vision/classifier.js';
import { dream, DREAM_DEFAULTS, type DreamOptions } from '../vision/dream.js';
import { loadJudge, type Judge, type JudgeVerdict } from '../vision/featurevis/judges.js';
import { describe, parseObjective } from '../vision/featurevis/objectives.js';
import { compareSheet, shortNames } from '../vision/featurevis/sheet.js';
import type { Reporter } from './reporter.js';

export interface DreamTaskOptions extends Omit<DreamOptions, 'classIndex' | 'onStep' | 'objective' | 'models'> {
  /** The class to dream of (name or index); optional with `objective`. */
  className?: string;
  /** An objective as text (featurevis/objectives.ts parseObjective), e.g. "conv_pw_13_relu:42" or "prob:tabby". */
  objective?: string;
  /** More networks to optimise for at once (model paths, catalog names or run folders). */
  models?: string[];
  /** Other networks that judge the result: their top-5 goes into the JSON (and the sheet with `compare`). */
  judges?: string[];
  /**
   * Write a comparison sheet at `out` instead of one image: plain gradient ascent, + total variation, + Fourier and
   * decorrelated colour, + transforms (the defaults), each with its probability and the judges' top-5.
   */
  compare?: boolean;
  out: string;
  reporter?: Reporter;
}

export interface DreamStage {
  title: string;
  settings: Record<string, unknown>;
  png?: string;
  probability: number;
  verdicts: JudgeVerdict[];
  totalVariation: number;
  seconds: number;
}

export interface DreamTaskResult {
  png: string;
  json: string;
  class?: { index: number; name: string };
  objective: string;
  /** Probability ONNX Runtime gives the saved 8-bit PNG, re-read from disk (NaN without a class). */
  probability: number;
  probabilityFloat: number;
  totalVariation: number;
  steps: number;
  seconds: number;
  settings: Record<string, unknown>;
  /** Further images of a batch (batch > 1). */
  images?: string[];
  /** What the judges see in the (first) image. */
  verdicts?: JudgeVerdict[];
  /** With compare: one entry per column of the sheet. */
  stages?: DreamStage[];
}

const stem = (p: string) => join(dirname(p), basename(p, extname(p)));

/**
 * The four stages of the lesson: each adds one idea to the previous (the last one is graft's default). Free pixels
 * need a strong total-variation weight to look any smoother (`PLAIN_TV`); the Fourier stages use the dream's own.
 */
export const PLAIN_TV = 1;
export function compareStages(tv: number): { title: string; note: string; opts: Partial<DreamOptions> }[] {
  return [
    { title: 'plain gradient ascent', note: 'free pixels, no penalty, no transforms', opts: { param: 'pixel', decorrelate: false, transforms: false, jitter: 0, tv: 0 } },
    { title: '+ total variation', note: `free pixels, TV weight ${PLAIN_TV}`, opts: { param: 'pixel', decorrelate: false, transforms: false, jitter: 0, tv: PLAIN_TV } },
    { title: '+ Fourier, decorrelated colour', note: `1/f spectrum, ImageNet colour axes, TV ${tv}`, opts: { param: 'fourier', decorrelate: true, transforms: false, jitter: 0, tv } },
    { title: '+ pad, jitter, scale, rotate', note: 'random at every step (the default)', opts: { param: 'fourier', decorrelate: true, transforms: true, tv } },
  ];
}

/** The ideal image of a class (or objective), written as a PNG with a JSON of settings and results beside it. */
export async function dreamTask(target: string, opts: DreamTaskOptions): Promise<DreamTaskResult> {
  const model = await loadClassifier(target);
  const extra: DiffClassifier[] = [];
  const judges: Judge[] = [];
  try {
    if (opts.className === undefined && opts.objective === undefined) throw new UsageError('give --class or --objective');
    const index = opts.className !== undefined ? resolveClass(model.classes, opts.className) : undefined;
    const objective = opts.objective !== undefined ? parseObjective(opts.objective, opts.classScore ?? DREAM_DEFAULTS.classScore) : undefined;
    for (const m of opts.models ?? []) extra.push(await loadClassifier(m));
    for (const j of opts.judges ?? []) judges.push(await loadJudge(j));
    const className = index !== undefined ? model.classes[index]! : undefined;
    const steps = opts.steps ?? DREAM_DEFAULTS.steps;
    const r = opts.reporter;
    const base: DreamOptions = { ...opts, classIndex: index, objective, models: extra, steps };
    const settingsOf = (o: Partial<DreamOptions>) => ({
      model: target,
      ...(opts.models?.length && { models: opts.models }),
      objective: objective ? describe(objective) : `${o.classScore ?? opts.classScore ?? DREAM_DEFAULTS.classScore}:${className}`,
      steps,
      lr: o.lr ?? DREAM_DEFAULTS.lr,
      tv: o.tv ?? DREAM_DEFAULTS.tv,
      l2: o.l2 ?? DREAM_DEFAULTS.l2,
      param: o.param ?? DREAM_DEFAULTS.param,
      decorrelate: o.decorrelate ?? DREAM_DEFAULTS.decorrelate,
      transforms: o.transforms ?? DREAM_DEFAULTS.transforms,
      jitter: o.jitter ?? DREAM_DEFAULTS.jitter,
      batch: o.batch ?? 1,
      ...((o.diversity ?? 0) > 0 && { diversity: o.diversity, diversityLayer: o.diversityLayer }),
      seed: o.seed ?? 0,
      size: model.spec.size,
    });
    const judge = async (img: RgbImage) => (await Promise.all(judges.map(async (j) => (await j.judge([img], className))[0]!)));
    const sourceP = async (img: RgbImage) => (index !== undefined ? (await model.probabilities([img]))[0]![index]! : NaN);
    const run = async (o: DreamOptions, label: string) => {
      r?.start?.(label, steps, 'step');
      const res = await dream(model, { ...o, onStep: (s) => r?.update?.(label, s.step, Number.isNaN(s.probability) ? `loss=${s.loss.toFixed(3)}` : `p=${s.probability.toFixed(3)}`) });
      r?.end?.(label);
      return res;
    };

    if (opts.compare) {
      const stages: DreamStage[] = [];
      const columns = [];
      for (const st of compareStages(opts.tv ?? DREAM_DEFAULTS.tv)) {
        const o = { ...base, ...st.opts };
        const res = await run(o, st.title);
        // Judged as a saved PNG would be: the 8-bit picture.
        const png = `${stem(opts.out)}-${stages.length + 1}.png`;
        await writePng(res.image, png);
        const reread = await decodeImage(png);
        const probability = await sourceP(reread);
        const verdicts = await judge(reread);
        stages.push({ title: st.title, settings: settingsOf(o), png, probability, verdicts, totalVariation: res.totalVariation, seconds: res.seconds });
        columns.push({ title: st.title, note: st.note, image: reread, probability, verdicts });
      }
      const title = `ideal image of '${className ?? (objective ? describe(objective) : '')}' — ${basename(target)}, ${steps} steps, seed ${opts.seed ?? 0}`;
      const short = shortNames(judges.map((j) => j.name));
      const subtitle = judges.length ? `under each: the source network's probability, then the top-5 of the other networks (${short.prefix ? `${short.prefix}…: ` : ''}${short.names.join(', ')})` : "under each: the source network's probability";
      await compareSheet(columns, opts.out, { title, subtitle });
      const last = stages.at(-1)!;
      const json = `${stem(opts.out)}.json`;
      const result: DreamTaskResult = {
        png: opts.out, json, ...(index !== undefined && { class: { index, name: className! } }), objective: last.settings.objective as string,
        probability: last.probability, probabilityFloat: NaN, totalVariation: last.totalVariation, steps,
        seconds: stages.reduce((a, s) => a + s.seconds, 0), settings: last.settings, verdicts: last.verdicts, stages,
      };
      await writeJsonAtomic(json, result);
      return result;
    }

    const res = await run(base, 'dream');
    await writePng(res.image, opts.out);
    const images: string[] = [];
    for (let i = 1; i < res.images.length; i++) {
      const p = `${stem(opts.out)}-${i + 1}.png`;
      await writePng(res.images[i]!, p);
      images.push(p);
    }
    const reread = await decodeImage(opts.out);
    const verdicts = judges.length ? await judge(reread) : undefined;
    const settings = settingsOf(base);
    const json = `${stem(opts.out)}.json`;
    const result: DreamTaskResult = {
      png: opts.out,
      json,
      ...(index !== undefined && { class: { index, name: className! } }),
      objective: settings.objective,
      probability: await sourceP(reread),
      probabilityFloat: res.probability,
      totalVariation: res.totalVariation,
      steps,
      seconds: res.seconds,
      settings,
      ...(images.length && { images }),
      ...(verdicts && { verdicts }),
    };
    await writeJsonAtomic(json, { ...result, history: res.history.filter((h) => h.step % 10 === 0 || h.step === steps) });
    return result;
  } finally {
    for (const j of judges) await j.dispose();
    for (const m of extra) await m.dispose();
    await model.dispose();
  }
}
