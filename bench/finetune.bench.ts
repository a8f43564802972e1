/**
 * Fine-tuning on the shared Cats vs Dogs (2000 train / 1000 validation) with the shared MobileNet v1 0.75:
 *   node --import tsx bench/finetune.bench.ts [blocks=1] [epochs=8] [out=/tmp/graft-ft-bench]
 * Env: FT_LR (head lr), FT_BB (backbone lr factor), FT_DROPOUT.
 * Prints validation accuracy (best epoch), seconds per epoch and training images per second.
 */
import { join } from 'node:path';
import { finetuneRun } from '../src/tasks/finetune.js';

const shared = process.env.GRAFT_SHARED ?? join(import.meta.dirname, '..', '..', 'shared');
const blocks = process.argv[2] === 'all' ? 'all' : Number(process.argv[2] ?? 1);
const epochs = Number(process.argv[3] ?? 8);
const out = process.argv[4] ?? `/tmp/graft-ft-bench-${blocks}`;
const t0 = performance.now();
const res = await finetuneRun({
  data: join(shared, 'data/cats_vs_dogs/train'),
  val: join(shared, 'data/cats_vs_dogs/validation'),
  model: join(shared, 'models/mobilenet_v1_0.75_224.onnx'),
  out,
  blocks,
  finetune: {
    epochs,
    ...(process.env.FT_LR && { lr: Number(process.env.FT_LR) }),
    ...(process.env.FT_BB && { backboneLrFactor: Number(process.env.FT_BB) }),
    ...(process.env.FT_DROPOUT && { dropout: Number(process.env.FT_DROPOUT) }),
    ...(process.env.FT_LS && { labelSmoothing: Number(process.env.FT_LS) }),
    onInitial: (e) => console.log(`before fine-tuning: val loss ${e.valLoss.toFixed(4)} acc ${e.valAcc.toFixed(4)}`),
    onEpoch: (e) => console.log(`epoch ${e.epoch}: train loss ${e.trainLoss.toFixed(4)} acc ${e.trainAcc.toFixed(4)} | val loss ${e.valLoss?.toFixed(4)} acc ${e.valAcc?.toFixed(4)} | lr ${e.lr.toExponential(2)} | ${((performance.now() - t0) / 1000).toFixed(0)} s`),
  },
});
const per = res.seconds.perEpoch;
const mean = per.reduce((a, b) => a + b, 0) / Math.max(1, per.length);
console.log(JSON.stringify({
  blocks,
  cut: res.cut.tensor,
  cutShape: res.cut.shape,
  train: res.counts.train,
  val: res.counts.val,
  valAccuracy: res.validation.accuracy,
  initial: res.initial,
  bestEpoch: res.bestEpoch,
  epochsRun: res.history.length,
  stoppedEarly: res.stoppedEarly,
  prefixSeconds: res.seconds.prefix,
  secondsPerEpoch: mean,
  trainImgPerSec: res.counts.train / mean,
  totalSeconds: (performance.now() - t0) / 1000,
}, null, 2));
