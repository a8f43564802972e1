import { open, readFile } from 'node:fs/promises';
import { fail } from './fail.js';
import { OP_HANDLERS } from './tflite/ops/index.js';
import { parse } from './tflite/parse.js';
import { translate } from './tflite/translate.js';

/**
 * TFLite flatbuffers (.tflite) → ONNX (opset 13), for ONNX Runtime. The file is read with the hand-written reader
 * in ./tflite-schema (on the `flatbuffers` runtime); each operator is translated by its handler (./tflite/ops/*.ts).
 *
 * - Float and quantised (uint8/int8, per-tensor or per-channel scale and zero point) models. Every weight is
 *   dequantised, (q − z)·s, to float32 (int32 biases with their own scale, or input scale × weight scale when the file
 *   has none), and the whole graph is float arithmetic.
 * - Quantised activations: a quantised TFLite kernel rounds its result to the output tensor's grid and saturates it
 *   to the type's range. TOCO-converted models rely on the saturation for their ReLUs (no fused activation left) and
 *   quantisation-aware-trained ones on the rounding, so by default (`quantisedActivations: 'emulate'`) each quantised
 *   activation goes through QuantizeLinear → DequantizeLinear, and quantised weights are stored as their integers
 *   behind a DequantizeLinear (the same float values), so that ONNX Runtime can fuse the ops into its integer kernels
 *   on the file's own weights rather than re-quantising float weights its own way. `quantisedActivations: 'float'`
 *   keeps only the saturation (a Clip) and float initializers.
 * - The graph is NCHW: the input is `input` [N, 3, H, W] and every 4-D tensor stays NCHW. TFLite is NHWC, so conv
 *   weights are transposed (OHWI → OIHW; depthwise 1HW(C·M) → (C·M)1HW with group = C) and the ops whose meaning
 *   depends on the layout (reshape, squeeze, fully connected on 4-D input, concat/mean/pad/softmax axes, broadcasting
 *   of constants) are translated. TFLite SAME padding is ONNX auto_pad SAME_UPPER. The batch dimension is left free.
 * - Outputs: `features` (the last global average pool or spatial mean, flattened to [N, C]), `logits` (the input of
 *   the final Softmax, flattened to [N, classes]) and the model's own outputs (`output`, `output_1`, …; 4-D ones NCHW).
 * - The input preprocessing is written as Windows ML image metadata (Rgb8, Image.NominalPixelRange), which graft
 *   reads. A quantised input (scale s, zero point z) means the network sees (q − z)·s for pixel values q in [0, 255];
 *   the nominal range nearest to that is reported and, when it is not exact, an affine node at the input maps the
 *   nominal-range value to exactly (q − z)·s (e.g. s = 1/128, z = 128: Normalized_1_1, x·255/256 − 1/256). Float
 *   inputs are taken to be in [-1, 1] (MobileNets and most TF-slim image models; TFLite metadata is not read).
 * - An operator without a handler is a GraftError naming it and its index, before anything is built.
 */

/** The ops this importer translates: those with a handler. */
export const SUPPORTED_TFLITE_OPS: readonly string[] = [...OP_HANDLERS.keys()];

export interface TfliteImportOptions {
  /**
   * Quantised models: `emulate` (default) rounds and saturates every quantised activation as the TFLite kernels do
   * (QuantizeLinear → DequantizeLinear, still float arithmetic); `float` only saturates (Clip), a little faster and
   * a little further from what the TFLite runtime computes.
   */
  quantisedActivations?: 'emulate' | 'float';
}

/** Import a .tflite file as ONNX bytes. */
export async function importTflite(path: string, opts: TfliteImportOptions = {}): Promise<Uint8Array> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') fail(path, 'not found');
    fail(path, `cannot read (${(err as Error).message})`);
  }
  return importTfliteBytes(bytes, path, opts);
}

/** Import TFLite flatbuffer bytes as ONNX bytes; `file` names the model in errors. */
export function importTfliteBytes(bytes: Uint8Array, file = 'model.tflite', opts: TfliteImportOptions = {}): Uint8Array {
  return translate(parse(bytes, file), file, (opts.quantisedActivations ?? 'emulate') === 'emulate');
}

/** Whether `path` is a TFLite flatbuffer (file identifier "TFL3" at bytes 4..8). */
export async function isTfliteModel(path: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, 'r');
    const buf = Buffer.alloc(8);
    const { bytesRead } = await fh.read(buf, 0, 8, 0);
    return bytesRead === 8 && buf.subarray(4, 8).toString('latin1') === 'TFL3';
  } catch {
    return false;
  } finally {
    await fh?.close();
  }
}
