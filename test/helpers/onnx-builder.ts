/**
 * Build small ONNX models in memory for tests: inputs, float initializers, nodes with typed attributes.
 */
import onnxProto from 'onnx-proto';
import { type LoadedOnnx, parseOnnx } from '../../src/models/onnx-file.js';

const { onnx } = onnxProto;

export type AttrSpec =
  | { i: number }
  | { f: number }
  | { s: string }
  | { ints: number[] }
  | { floats: number[] }
  | { t: TensorSpec };

export interface TensorSpec {
  dims: number[];
  values: ArrayLike<number>;
  /** ONNX element type: 1 float (default), 7 int64, 6 int32, 9 bool. */
  dataType?: number;
}

export interface NodeSpec {
  op: string;
  inputs: string[];
  outputs: string[];
  name?: string;
  domain?: string;
  attrs?: Record<string, AttrSpec>;
}

export interface GraphSpec {
  inputs: { name: string; shape: (number | string)[] }[];
  outputs: string[];
  initializers?: ({ name: string } & TensorSpec)[];
  nodes: NodeSpec[];
  opset?: number;
}

function tensorProto(name: string, t: TensorSpec) {
  const dt = t.dataType ?? 1;
  const base = { name, dims: t.dims, dataType: dt };
  const vals = Array.from(t.values);
  if (dt === 1) return onnx.TensorProto.create({ ...base, floatData: vals });
  if (dt === 7) return onnx.TensorProto.create({ ...base, int64Data: vals });
  if (dt === 11) return onnx.TensorProto.create({ ...base, doubleData: vals });
  return onnx.TensorProto.create({ ...base, int32Data: vals });
}

function attribute(name: string, a: AttrSpec) {
  if ('i' in a) return onnx.AttributeProto.create({ name, type: 2, i: a.i });
  if ('f' in a) return onnx.AttributeProto.create({ name, type: 1, f: a.f });
  if ('s' in a) return onnx.AttributeProto.create({ name, type: 3, s: new TextEncoder().encode(a.s) });
  if ('ints' in a) return onnx.AttributeProto.create({ name, type: 7, ints: a.ints });
  if ('floats' in a) return onnx.AttributeProto.create({ name, type: 6, floats: a.floats });
  return onnx.AttributeProto.create({ name, type: 4, t: tensorProto('', a.t) });
}

function valueInfo(name: string, shape?: (number | string)[]) {
  return onnx.ValueInfoProto.create({
    name,
    type: onnx.TypeProto.create({
      tensorType: onnx.TypeProto.Tensor.create({
        elemType: 1,
        ...(shape ? { shape: onnx.TensorShapeProto.create({ dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) }) } : {}),
      }),
    }),
  });
}

/** The ONNX bytes of a graph. */
export function buildOnnx(spec: GraphSpec): Uint8Array {
  const graph = onnx.GraphProto.create({
    name: 'built',
    input: spec.inputs.map((i) => valueInfo(i.name, i.shape)),
    output: spec.outputs.map((o) => valueInfo(o)),
    initializer: (spec.initializers ?? []).map((t) => tensorProto(t.name, t)),
    node: spec.nodes.map((n, k) =>
      onnx.NodeProto.create({
        name: n.name ?? `${n.op}_${k}`,
        opType: n.op,
        domain: n.domain ?? '',
        input: n.inputs,
        output: n.outputs,
        attribute: Object.entries(n.attrs ?? {}).map(([name, a]) => attribute(name, a)),
      }),
    ),
  });
  const model = onnx.ModelProto.create({ irVersion: 8, producerName: 'graft-builder', opsetImport: [{ domain: '', version: spec.opset ?? 13 }], graph });
  return onnx.ModelProto.encode(model).finish();
}

/** A built graph as if read by `loadOnnx` (path only names it in messages). */
export function buildLoaded(spec: GraphSpec, path = 'built.onnx'): LoadedOnnx {
  return parseOnnx(buildOnnx(spec), path);
}
