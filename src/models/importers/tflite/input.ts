/** The model's image input and the preprocessing it implies, written as Windows ML image metadata. */
import { basename } from 'node:path';
import { fail } from '../fail.js';
import { TENSOR_TYPE_NAMES, TensorType } from '../tflite-schema/index.js';
import type { TfliteCtx } from './context.js';
import type { Parsed } from './parse.js';

/**
 * Declare the ONNX input `input` [N, 3, H, W] and set the value of the model's input tensor (after the affine map of
 * a quantised input); returns the metadata to write.
 */
export function translateInput(c: TfliteCtx, m: Parsed): Record<string, string> {
  const { T, b, file } = c;
  const graphInputs = m.inputs.filter((i) => !T[i]!.data);
  if (graphInputs.length !== 1) fail(file, `the model has ${graphInputs.length} inputs; only single-image models are supported`);
  const inT = T[graphInputs[0]!]!;
  if (inT.shape.length !== 4 || inT.shape[3] !== 3) fail(file, `input ${inT.name} has shape [${inT.shape}]; an image input [batch, height, width, 3] is required`);
  const [, H, W] = inT.shape as [number, number, number, number];
  b.input('input', ['batch', 3, H, W]);
  const metadata: Record<string, string> = { 'Image.BitmapPixelFormat': 'Rgb8', 'Image.ColorSpaceGamma': 'SRGB', 'tflite.source': basename(file) };
  if (m.description) metadata['tflite.description'] = m.description;
  let inputName = 'input';
  if (inT.type === TensorType.FLOAT32) {
    metadata['Image.NominalPixelRange'] = 'Normalized_1_1';
  } else if (inT.type === TensorType.UINT8 || inT.type === TensorType.INT8) {
    if (!inT.q || inT.q.scale.length !== 1) fail(file, `input ${inT.name} is ${TENSOR_TYPE_NAMES[inT.type]} without a (per-tensor) scale`);
    const s = inT.q.scale[0]!;
    // The runtime is fed q = pixel (uint8) or pixel − 128 (int8); the network sees (q − z)·s.
    const z = (inT.q.zeroPoint[0] ?? 0) + (inT.type === TensorType.INT8 ? -128 : 0);
    const lo = (0 - z) * s;
    const hi = (255 - z) * s;
    // Nominal ranges as x = pixel·k + m.
    const ranges = [
      { key: 'Normalized_1_1', k: 2 / 255, m: -1 },
      { key: 'Normalized_0_1', k: 1 / 255, m: 0 },
      { key: 'NominalRange_0_255', k: 1, m: 0 },
    ];
    const best = ranges.map((r) => ({ ...r, err: Math.abs(r.m - lo) + Math.abs(255 * r.k + r.m - hi) })).sort((a, d) => a.err - d.err)[0]!;
    metadata['Image.NominalPixelRange'] = best.key;
    metadata['tflite.input_quantization'] = `scale=${s} zero_point=${inT.q.zeroPoint[0] ?? 0} (${TENSOR_TYPE_NAMES[inT.type]}); pixels [0, 255] -> [${lo}, ${hi}]`;
    // real = (pixel − z)·s with pixel = (x − m)/k  →  real = x·(s/k) + (−m/k − z)·s
    const mul = s / best.k;
    const add = (-best.m / best.k - z) * s;
    if (Math.abs(mul - 1) > 1e-6 || Math.abs(add) > 1e-6) {
      const scaled = b.node('Mul', ['input', c.scalar(mul)], b.fresh('input_scale'));
      inputName = b.node('Add', [scaled, c.scalar(add)], b.fresh('input_dequantised'));
    }
    // The runtime is fed whole numbers: round to the input's grid too.
    if (c.emulate) inputName = c.roundToGrid({ name: inputName, shape: inT.shape }, inT).name;
  } else {
    fail(file, `input ${inT.name} has type ${TENSOR_TYPE_NAMES[inT.type] ?? inT.type}; float32, uint8 or int8 is required`);
  }
  c.values.set(inT.index, { name: inputName, shape: inT.shape });
  return metadata;
}
