/**
 * A ResNet with the catalog ResNet-50's architecture (v1.5 bottlenecks: 7×7/2 stem, BatchNormalization, 3×3/2 max
 * pool, stages of [3, 4, 6, 3] bottleneck blocks with projection shortcuts, global average pool, Gemm), seeded random
 * weights. Full size for the gradient benchmark; `stages`/`width` shrink it for unit tests.
 */
import { OnnxBuilder } from '../../src/models/importers/onnx-builder.js';
import { gaussian, mulberry32 } from '../../src/util/random.js';

export interface ResNetOptions {
  stages?: number[];
  /** Channels of the stem and of the first stage's bottleneck (64 in ResNet-50). */
  width?: number;
  size?: number;
  classes?: number;
  seed?: number;
}

export function resnetOnnx(o: ResNetOptions = {}): Uint8Array {
  const stages = o.stages ?? [3, 4, 6, 3];
  const width = o.width ?? 64;
  const size = o.size ?? 224;
  const classes = o.classes ?? 1000;
  const rng = mulberry32(o.seed ?? 1);
  const normal = () => gaussian(rng);
  const b = new OnnxBuilder();
  b.input('input', ['N', 3, size, size]);
  const conv = (x: string, cin: number, cout: number, k: number, stride: number): string => {
    // He initialisation keeps activations at a sensible scale through the depth.
    const std = Math.sqrt(2 / (cin * k * k));
    const w = b.floats(b.fresh('w'), [cout, cin, k, k], Float32Array.from({ length: cout * cin * k * k }, () => normal() * std));
    const p = Math.floor(k / 2);
    return b.node('Conv', [x, w], b.fresh('conv'), { strides: [stride, stride], pads: [p, p, p, p] });
  };
  const bn = (x: string, c: number, scale = 1): string => {
    const v = (f: () => number) => b.floats(b.fresh('bn'), [c], Float32Array.from({ length: c }, f));
    return b.node('BatchNormalization', [x, v(() => scale * (1 + 0.1 * normal())), v(() => 0.1 * normal()), v(() => 0.1 * normal()), v(() => 1 + 0.2 * rng())], b.fresh('bn'), { epsilon: { f: 1e-5 } });
  };
  const relu = (x: string) => b.node('Relu', [x], b.fresh('relu'));
  let x = relu(bn(conv('input', 3, width, 7, 2), width));
  x = b.node('MaxPool', [x], b.fresh('pool'), { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] });
  let cin = width;
  stages.forEach((blocks, s) => {
    const mid = width * 2 ** s;
    const cout = mid * 4;
    for (let i = 0; i < blocks; i++) {
      const stride = i === 0 && s > 0 ? 2 : 1;
      let y = relu(bn(conv(x, cin, mid, 1, 1), mid));
      y = relu(bn(conv(y, mid, mid, 3, stride), mid));
      y = bn(conv(y, mid, cout, 1, 1), cout, 0.2);
      const shortcut = i === 0 ? bn(conv(x, cin, cout, 1, stride), cout) : x;
      x = relu(b.node('Add', [y, shortcut], b.fresh('add')));
      cin = cout;
    }
  });
  const pooled = b.node('GlobalAveragePool', [x], 'pooled');
  const features = b.node('Flatten', [pooled], 'features', { axis: 1 });
  const fcw = b.floats('fc_w', [classes, cin], Float32Array.from({ length: classes * cin }, () => normal() * Math.sqrt(1 / cin)));
  const fcb = b.floats('fc_b', [classes], new Float32Array(classes));
  b.node('Gemm', [features, fcw, fcb], 'logits', { transB: 1 });
  b.output('features', ['N', cin]);
  b.output('logits', ['N', classes]);
  return b.build({ producer: 'graft-test', graphName: 'resnet' });
}
