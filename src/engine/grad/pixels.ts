/**
 * A model that takes pixels: the preprocessing (channel order, mean/std, layout) written into the ONNX graph in
 * front of the model's input, so that a gradient program differentiates with respect to [N, H, W, 3] pixels in
 * [0, 1], the space in which dreams and attacks live.
 */
import onnxProto from 'onnx-proto';
import { GraftError } from '../../errors.js';
import type { PreprocessSpec } from '../../image/spec.js';
import { encodeAttr, floatTensor, int64Tensor, valueInfo } from './onnx-writer.js';

const { onnx } = onnxProto;

export const PIXELS = 'pixels';

export interface PixelModelOptions {
  /** A final tensor to expose as `logits`; when it holds probabilities (a Softmax), its log is used instead. */
  logits?: { tensor: string; probabilities: boolean };
}

export const PIXEL_LOGITS = 'pixel_logits';

export function withPixelInput(modelBytes: Uint8Array, spec: PreprocessSpec, opts: PixelModelOptions = {}, where = 'model'): Uint8Array {
  const model = onnx.ModelProto.decode(modelBytes);
  const g = model.graph!;
  const inits = new Set((g.initializer ?? []).map((t) => t.name));
  const inputs = (g.input ?? []).filter((v) => !inits.has(v.name));
  if (inputs.length !== 1) throw new GraftError(`${where}: expected one image input, found ${inputs.length}`);
  const original = inputs[0]!.name!;
  const [h, w] = spec.size;
  const nodes: InstanceType<typeof onnx.NodeProto>[] = [];
  const node = (opType: string, input: string[], output: string, attrs: Record<string, number | number[]> = {}) =>
    nodes.push(onnx.NodeProto.create({ name: output, opType, input, output: [output], attribute: Object.entries(attrs).map(([k, v]) => encodeAttr(k, v)) }));
  const consts = [
    floatTensor('pixels/mean', [3], Float32Array.from(spec.mean)),
    floatTensor('pixels/std', [3], Float32Array.from(spec.std)),
  ];
  let x = PIXELS;
  if (spec.channelOrder === 'BGR') {
    consts.push(int64Tensor('pixels/rev_starts', [1], [-1]), int64Tensor('pixels/rev_ends', [1], [-(2 ** 53)]), int64Tensor('pixels/rev_axes', [1], [3]), int64Tensor('pixels/rev_steps', [1], [-1]));
    node('Slice', [x, 'pixels/rev_starts', 'pixels/rev_ends', 'pixels/rev_axes', 'pixels/rev_steps'], 'pixels/bgr');
    x = 'pixels/bgr';
  }
  node('Sub', [x, 'pixels/mean'], 'pixels/centred');
  node('Div', ['pixels/centred', 'pixels/std'], spec.layout === 'NCHW' ? 'pixels/scaled' : original);
  if (spec.layout === 'NCHW') node('Transpose', ['pixels/scaled'], original, { perm: [0, 3, 1, 2] });
  const tail: InstanceType<typeof onnx.NodeProto>[] = [];
  const outputs = [...(g.output ?? [])];
  if (opts.logits) {
    const src = opts.logits.tensor;
    if (opts.logits.probabilities) {
      // A graph ending in Softmax gives probabilities: their log is a fine stand-in for logits.
      consts.push(floatTensor('pixels/tiny', [], Float32Array.of(1e-12)));
      tail.push(onnx.NodeProto.create({ name: 'pixels/p_eps', opType: 'Add', input: [src, 'pixels/tiny'], output: ['pixels/p_eps'] }));
      tail.push(onnx.NodeProto.create({ name: PIXEL_LOGITS, opType: 'Log', input: ['pixels/p_eps'], output: [PIXEL_LOGITS] }));
    } else {
      tail.push(onnx.NodeProto.create({ name: PIXEL_LOGITS, opType: 'Identity', input: [src], output: [PIXEL_LOGITS] }));
    }
    outputs.push(valueInfo(PIXEL_LOGITS));
  }
  const pixelInput = valueInfo(PIXELS, ['N', h, w, 3]);
  g.input = [pixelInput, ...(g.input ?? []).filter((v) => v.name !== original)];
  g.node = [...nodes, ...(g.node ?? []), ...tail];
  g.initializer = [...(g.initializer ?? []), ...consts];
  g.output = outputs;
  return onnx.ModelProto.encode(model).finish();
}
