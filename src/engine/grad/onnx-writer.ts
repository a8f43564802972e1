/**
 * Writes the nodes and constants of a gradient graph. Names are made unique with a prefix and a counter; constants
 * with the same value are written once (the backward pass asks for the same axes and shapes many times).
 */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
export type NodeProto = InstanceType<typeof onnx.NodeProto>;
export type TensorProto = InstanceType<typeof onnx.TensorProto>;
export type AttributeProto = InstanceType<typeof onnx.AttributeProto>;

/** ONNX TensorProto.DataType codes used here. */
export const DT = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7, BOOL: 9, DOUBLE: 11 } as const;

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

/** A float tensor's value info; a string dim is symbolic (e.g. the batch). */
export function valueInfo(name: string, dims: (number | string)[], elemType: number = DT.FLOAT) {
  return onnx.ValueInfoProto.create({
    name,
    type: onnx.TypeProto.create({
      tensorType: onnx.TypeProto.Tensor.create({
        elemType,
        shape: onnx.TensorShapeProto.create({ dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) }),
      }),
    }),
  });
}

export class GraphWriter {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  private counter = 0;
  private consts = new Map<string, string>();

  constructor(private readonly prefix: string) {}

  fresh(base: string): string {
    return `${this.prefix}${base}_${this.counter++}`;
  }

  /** One node with one output (named after `base`); returns the output name. */
  op(opType: string, inputs: string[], attrs: Record<string, Attr> = {}, base = opType): string {
    return this.opN(opType, inputs, 1, attrs, base)[0]!;
  }

  opN(opType: string, inputs: string[], outputs: number, attrs: Record<string, Attr> = {}, base = opType): string[] {
    const outs = Array.from({ length: outputs }, () => this.fresh(base));
    const attribute = Object.entries(attrs).map(([k, v]) => encodeAttr(k, v));
    this.nodes.push(onnx.NodeProto.create({ name: outs[0], opType, input: inputs, output: outs, attribute }));
    return outs;
  }

  /** An int64 vector constant (axes, shapes, pads, starts…). */
  ints(values: number[]): string {
    return this.constant(`i:${values.join(',')}`, () => int64Tensor('', [values.length], values));
  }

  /** A float constant; scalars are rank 0. */
  floats(dims: number[], data: Float32Array | number[], key?: string): string {
    const arr = data instanceof Float32Array ? data : Float32Array.from(data);
    const k = key ?? (arr.length <= 64 ? `f:${dims.join('x')}:${Array.from(arr).join(',')}` : undefined);
    return this.constant(k, () => floatTensor('', dims, arr));
  }

  scalar(v: number): string {
    return this.floats([], [v]);
  }

  private constant(key: string | undefined, make: () => TensorProto): string {
    const hit = key === undefined ? undefined : this.consts.get(key);
    if (hit) return hit;
    const name = this.fresh('c');
    const t = make();
    t.name = name;
    this.initializers.push(t);
    if (key !== undefined) this.consts.set(key, name);
    return name;
  }
}
