/** Writing ONNX protos: attributes, value infos and initializers with their values in raw little-endian bytes. */
import { type LoadedOnnx, parseOnnx } from '../models/onnx-file.js';
import { type AttributeProto, DT, onnx, type TensorProto } from './proto.js';

/** An attribute value: a whole number is INT, `{ f }` FLOAT, a number[] INTS, a string STRING. */
export type Attr = number | { f: number } | number[] | string;

export function encodeAttr(name: string, v: Attr): AttributeProto {
  if (typeof v === 'number') return onnx.AttributeProto.create({ name, type: 2, i: v });
  if (typeof v === 'string') return onnx.AttributeProto.create({ name, type: 3, s: new TextEncoder().encode(v) });
  if (Array.isArray(v)) return onnx.AttributeProto.create({ name, type: 7, ints: v });
  return onnx.AttributeProto.create({ name, type: 1, f: v.f });
}

export function floatTensor(name: string, dims: number[], data: Float32Array): TensorProto {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
  return onnx.TensorProto.create({ name, dims, dataType: DT.FLOAT, rawData: bytes });
}

export function int64Tensor(name: string, dims: number[], values: ArrayLike<number | bigint>): TensorProto {
  const buf = BigInt64Array.from(Array.from(values, (v) => BigInt(v)));
  return onnx.TensorProto.create({ name, dims, dataType: DT.INT64, rawData: new Uint8Array(buf.buffer) });
}

/** A tensor's value info; a string dim is symbolic (e.g. the batch). Without `dims` the shape is left unknown. */
export function valueInfo(name: string, dims?: (number | string)[], elemType: number = DT.FLOAT) {
  return onnx.ValueInfoProto.create({
    name,
    type: onnx.TypeProto.create({
      tensorType: onnx.TypeProto.Tensor.create({
        elemType,
        ...(dims && { shape: onnx.TensorShapeProto.create({ dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) }) }),
      }),
    }),
  });
}

/**
 * A model that passes its input through unchanged as `output`: the "prefix" of a graph cut at its own input (so
 * code that runs a prefix needs no special case for it).
 */
export function identityModel(input: { name: string; shape: (number | string)[] }, output: string, path: string): LoadedOnnx {
  const graph = onnx.GraphProto.create({
    name: 'identity',
    input: [valueInfo(input.name, input.shape)],
    output: [valueInfo(output, input.shape)],
    node: [onnx.NodeProto.create({ name: 'identity', opType: 'Identity', input: [input.name], output: [output] })],
  });
  const model = onnx.ModelProto.create({ irVersion: 8, producerName: 'graft', opsetImport: [{ domain: '', version: 13 }], graph });
  return parseOnnx(onnx.ModelProto.encode(model).finish(), path);
}
