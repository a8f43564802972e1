/**
 * Evaluate int64 tensors that depend only on the input's shape (pad amounts computed from Shape nodes), by one ONNX
 * Runtime run on a zero input. Only for models whose input size is fixed: the values hold for that size only.
 */
import * as ort from 'onnxruntime-node';
import type { LoadedOnnx } from '../../models/onnx-file.js';
import { withOutputs } from '../../onnx/cut.js';
import { DT } from '../../onnx/proto.js';
import { createSession } from '../ort.js';

/** The fixed input shape (batch taken as 1), or undefined when a non-batch dimension is symbolic. */
export function fixedInputShape(model: LoadedOnnx): number[] | undefined {
  const s = model.info.inputs[0]?.shape;
  if (!s || s.length < 2) return undefined;
  const rest = s.slice(1);
  if (!rest.every((d) => typeof d === 'number' && d > 0)) return undefined;
  return [1, ...(rest as number[])];
}

export async function evaluateShapeTensors(model: LoadedOnnx, names: string[]): Promise<Map<string, number[]> | undefined> {
  const shape = fixedInputShape(model);
  if (!shape || names.length === 0) return undefined;
  const session = await createSession(withOutputs(model.bytes, names, DT.INT64), { where: model.info.path, threads: 1 });
  try {
    const n = shape.reduce((a, b) => a * b, 1);
    const res = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', new Float32Array(n), shape) }, names);
    return new Map(names.map((t) => [t, Array.from(res[t]!.data as BigInt64Array, Number)]));
  } finally {
    await session.release();
  }
}
