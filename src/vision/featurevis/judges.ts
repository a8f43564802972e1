/**
 * Other networks that look at an ideal image: their top-5 classes, and whether the intended class is among them
 * (by name: a network with 1001 classes and a background class still agrees on "tabby").
 */
import { basename } from 'node:path';
import { Backbone, softmaxRows, topK } from '../../engine/backbone.js';
import { GraftError } from '../../errors.js';
import type { RgbImage } from '../../image/decode.js';
import { normaliseInto } from '../../image/preprocess.js';
import { matchClass } from './objectives.js';

export interface JudgeVerdict {
  judge: string;
  top5: { index: number; label: string; probability: number }[];
  /** Rank (1-5) of the intended class in the top-5, or null when it is not there (or the judge lacks the class). */
  rank: number | null;
  /** The judge's probability of the intended class. */
  probability: number | null;
}

export interface Judge {
  name: string;
  classes: string[];
  judge(images: RgbImage[], className?: string): Promise<JudgeVerdict[]>;
  dispose(): Promise<void>;
}

export async function loadJudge(source: string, opts: { labels?: string } = {}): Promise<Judge> {
  const bb = await Backbone.load(source, { parallelism: 'intra-op', ...(opts.labels && { labelsFile: opts.labels }) });
  const logits = bb.ref.logitsTensor;
  const classes = bb.ref.labels;
  if (!logits || !classes) throw new GraftError(`${source}: not a classifier with known classes (a judge needs class scores)`);
  const spec = bb.spec;
  const name = basename(source).replace(/\.(onnx|tflite)$/, '');
  return {
    name,
    classes,
    async judge(images, className) {
      const per = 3 * spec.size[0] * spec.size[1];
      const input = new Float32Array(images.length * per);
      images.forEach((im, i) => normaliseInto(input, i * per, im.data, im.width, im.height, spec));
      const out = (await bb.runTensor(input, images.length))[logits]!.data as Float32Array;
      const p = bb.ref.logitsAreProbabilities ? out : softmaxRows(out, images.length);
      const C = classes.length;
      let want: number | undefined;
      if (className !== undefined) {
        try {
          want = matchClass(classes, className);
        } catch {
          want = undefined;
        }
      }
      return images.map((_, i) => {
        const row = p.slice(i * C, (i + 1) * C);
        const top5 = topK(row, classes, 5).map((t) => ({ index: t.index, label: t.label, probability: t.probability }));
        const r = want === undefined ? -1 : top5.findIndex((t) => t.index === want);
        return { judge: name, top5, rank: r >= 0 ? r + 1 : null, probability: want === undefined ? null : row[want]! };
      });
    },
    dispose: () => bb.dispose(),
  };
}
