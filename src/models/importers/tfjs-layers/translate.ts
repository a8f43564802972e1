/** Keras layers → ONNX bytes: the input layer, every layer through its handler, then graft's outputs. */
import { sep } from 'node:path';
import { fail } from '../fail.js';
import type { TfjsConst } from '../tfjs-weights.js';
import { LayersCtx, type T } from './context.js';
import { LAYER_HANDLERS } from './layers/index.js';
import { inboundNames, type KerasLayer } from './model-json.js';

export function translate(layers: KerasLayer[], sequential: boolean, weights: Map<string, TfjsConst>, file: string): Uint8Array {
  // Refuse what cannot be translated before building anything.
  for (const layer of layers) {
    if (layer.class_name !== 'InputLayer' && !LAYER_HANDLERS.has(layer.class_name)) {
      fail(file, `layer ${layer.config.name ?? layer.name}: Keras layer type ${layer.class_name} is not supported by the TF.js importer`);
    }
  }
  const ctx = new LayersCtx(file, weights);
  const b = ctx.b;
  const tensors = new Map<string, T>();
  let last: T | undefined;
  let inputDims: number[] | undefined;

  for (let li = 0; li < layers.length; li++) {
    const layer = layers[li]!;
    const c = layer.config;
    const name = c.name ?? layer.name;
    const ins = sequential ? (li === 0 ? [] : [layers[li - 1]!.config.name]) : inboundNames(layer);
    const inputs = ins.map((n) => tensors.get(n) ?? fail(file, `layer ${name}: unknown input layer '${n}'`));
    const cls = layer.class_name;
    // The input: an InputLayer, or the input shape a Sequential model's first layer carries.
    if (cls === 'InputLayer' || (sequential && li === 0 && !inputs[0])) {
      const shape = (c.batch_input_shape ?? c.batch_shape) as (number | null)[];
      if (!shape || shape.length !== 4) fail(file, `layer ${name}: only image inputs [batch, H, W, C] are supported`);
      inputDims = shape.slice(1).map(Number);
      const [h, wd, ch] = inputDims as [number, number, number];
      const y: T = { name: b.input('input', ['batch', ch, h, wd]), rank: 4, channels: ch };
      tensors.set(name, y);
      if (cls === 'InputLayer') {
        last = y;
        continue;
      }
      inputs.push(y);
    }
    const y = LAYER_HANDLERS.get(cls)!({ cls, name, c, inputs, x: inputs[0] ?? last! }, ctx);
    tensors.set(name, y);
    last = y;
  }
  if (!last || !inputDims) fail(file, 'model has no input layer');
  writeOutputs(ctx, last);
  return b.build({ producer: 'graft tfjs-layers importer', graphName: file.split(sep).slice(-2, -1)[0] ?? 'model' });
}

/** `features` (the global pooling), `logits` (a final softmax's input) and the model's own last output. */
function writeOutputs(ctx: LayersCtx, last: T): void {
  const { b, features, logits } = ctx;
  const named = (t: T, as: string) => b.node('Identity', [t.name], as);
  if (features) {
    named(features, 'features');
    b.output('features', ['batch', features.channels ?? '?']);
  }
  if (logits) {
    named(logits, 'logits');
    b.output('logits', ['batch', logits.channels ?? '?']);
  }
  if (last.rank === 2 && last !== features && last !== logits) {
    named(last, 'output');
    b.output('output', ['batch', last.channels ?? '?']);
  }
  if (!features && !logits && last.rank !== 2) {
    named(last, 'output');
    b.output('output', ['batch', ...(last.rank === 4 ? [last.channels ?? '?', '?', '?'] : [])]);
  }
}
