/** Reading a .tflite flatbuffer into plain objects: the first subgraph's tensors and operators, checked. */
import { GraftError } from '../../../errors.js';
import { fail } from '../fail.js';
import { builtinOperatorName, Model, type Operator } from '../tflite-schema/index.js';

export interface Quant { scale: number[]; zeroPoint: number[]; dim: number }
export interface TensorInfo { index: number; name: string; shape: number[]; type: number; data?: Uint8Array; q?: Quant; sparse: boolean }
export interface OpInfo { index: number; code: number; name: string; inputs: number[]; outputs: number[]; raw: Operator }
export interface Parsed { tensors: TensorInfo[]; ops: OpInfo[]; inputs: number[]; outputs: number[]; description: string }

/** Read the flatbuffer into plain objects; any inconsistency in the bytes is a GraftError naming the file. */
export function parse(bytes: Uint8Array, file: string): Parsed {
  if (bytes.length < 8 || String.fromCharCode(...bytes.subarray(4, 8)) !== 'TFL3') fail(file, 'not a TFLite model (no "TFL3" file identifier at byte 4)');
  try {
    const model = Model.read(bytes);
    model.checkExtents();
    const subgraphs = model.subgraphs;
    if (!subgraphs.length) throw new Error('the model has no subgraph');
    const sg = subgraphs[0]!;
    const buffers = model.buffers;
    const codes = model.operatorCodes.map((c) => c.builtinCode);
    const tensors: TensorInfo[] = sg.tensors.map((t, index) => {
      const b = t.buffer;
      if (b >= buffers.length) throw new Error(`tensor ${index} (${t.name}) refers to buffer ${b} of ${buffers.length}`);
      const data = b > 0 ? buffers[b]!.data : undefined;
      const qp = t.quantization;
      const scale = qp?.scale ?? [];
      const q = scale.length ? { scale, zeroPoint: qp!.zeroPoint, dim: qp!.quantizedDimension } : undefined;
      return { index, name: t.name, shape: t.shape, type: t.type, data: data?.length ? data : undefined, q, sparse: t.hasSparsity };
    });
    const ops: OpInfo[] = sg.operators.map((raw, index) => {
      const ci = raw.opcodeIndex;
      if (ci >= codes.length) throw new Error(`operator ${index} refers to operator code ${ci} of ${codes.length}`);
      const code = codes[ci]!;
      const check = (list: number[]) => {
        for (const i of list) if (i < -1 || i >= tensors.length) throw new Error(`operator ${index} refers to tensor ${i} of ${tensors.length}`);
        return list;
      };
      return { index, code, name: builtinOperatorName(code), inputs: check(raw.inputs), outputs: check(raw.outputs), raw };
    });
    const io = (list: number[]) => {
      for (const i of list) if (i < 0 || i >= tensors.length) throw new Error(`subgraph input/output ${i} is not a tensor`);
      return list;
    };
    return { tensors, ops, inputs: io(sg.inputs), outputs: io(sg.outputs), description: model.description };
  } catch (err) {
    if (err instanceof GraftError) throw err;
    fail(file, `not a valid TFLite model (truncated or corrupt?): ${(err as Error).message}`);
  }
}

