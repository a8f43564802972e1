import { join, dirname, basename, extname } from 'node:path';
import { decodeImage } from '../image/decode.js';
import { writePng } from '../image/png.js';
import { writeJsonAtomic } from '../util/fs.js';
import { loadClassifier, resolveClass } from '../vision/classifier.js';
import { dream, type DreamOptions } from '../vision/dream.js';
import type { Reporter } from './reporter.js';

export interface DreamTaskOptions extends Omit<DreamOptions, 'classIndex' | 'onStep'> {
  className: string;
  out: string;
  reporter?: Reporter;
}

export interface DreamTaskResult {
  png: string;
  json: string;
  class: { index: number; name: string };
  /** Probability ONNX Runtime gives the saved 8-bit PNG, re-read from disk. */
  probability: number;
  probabilityFloat: number;
  totalVariation: number;
  steps: number;
  seconds: number;
  settings: Record<string, unknown>;
}

/** The ideal image of a class, written as a PNG with a JSON of settings and results beside it. */
export async function dreamTask(target: string, opts: DreamTaskOptions): Promise<DreamTaskResult> {
  const model = await loadClassifier(target);
  try {
    const index = resolveClass(model.classes, opts.className);
    const steps = opts.steps ?? 200;
    const r = opts.reporter;
    r?.start?.('dream', steps, 'step');
    const res = await dream(model, {
      ...opts,
      classIndex: index,
      onStep: (s) => r?.update?.('dream', s.step, `p=${s.probability.toFixed(3)}`),
    });
    r?.end?.('dream');
    await writePng(res.image, opts.out);
    const reread = await decodeImage(opts.out);
    const [p] = await model.probabilities([reread]);
    const settings = { model: target, steps, lr: opts.lr ?? 0.05, tv: opts.tv ?? 0.2, l2: opts.l2 ?? 0, jitter: opts.jitter ?? 8, seed: opts.seed ?? 0, size: model.spec.size };
    const json = join(dirname(opts.out), `${basename(opts.out, extname(opts.out))}.json`);
    const result: DreamTaskResult = {
      png: opts.out,
      json,
      class: { index, name: model.classes[index]! },
      probability: p![index]!,
      probabilityFloat: res.probability,
      totalVariation: res.totalVariation,
      steps,
      seconds: res.seconds,
      settings,
    };
    await writeJsonAtomic(json, { ...result, history: res.history.filter((h) => h.step % 10 === 0 || h.step === steps) });
    return result;
  } finally {
    await model.dispose();
  }
}
