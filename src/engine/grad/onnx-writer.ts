/**
 * Writes the nodes and constants of a gradient graph. Names are made unique with a prefix and a counter; constants
 * with the same value are written once (the backward pass asks for the same axes and shapes many times).
 */
import onnxProto from 'onnx-proto';
import { encodeAttr, floatTensor, int64Tensor, type Attr } from '../../onnx/build.js';

const { onnx } = onnxProto;
export type NodeProto = InstanceType<typeof onnx.NodeProto>;
export type TensorProto = InstanceType<typeof onnx.TensorProto>;
export type AttributeProto = InstanceType<typeof onnx.AttributeProto>;
// The proto-writing helpers live with the rest of the ONNX graph code; the gradient rules import them from here.
export { DT } from '../../onnx/proto.js';
export { encodeAttr, floatTensor, int64Tensor, valueInfo, type Attr } from '../../onnx/build.js';

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
