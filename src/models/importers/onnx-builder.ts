import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
const FLOAT = 1;
const INT64 = 7;

/** An attribute value: a whole number is an INT, `{ f }` a FLOAT, an array INTS, `{ floats }` FLOATS. */
export type Attr = number | { f: number } | number[] | string | { floats: number[] };

/**
 * A small helper to write ONNX graphs (opset 13): float initializers, int64 constants, nodes with attributes, and
 * graph inputs/outputs. Names are made unique with a counter so importers need not invent them.
 */
export class OnnxBuilder {
  private nodes: InstanceType<typeof onnx.NodeProto>[] = [];
  private inits: InstanceType<typeof onnx.TensorProto>[] = [];
  private inputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  private outputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  private counter = 0;

  fresh(base: string): string {
    return `${base}__${this.counter++}`;
  }

  input(name: string, dims: (number | string)[]): string {
    this.inputs.push(valueInfo(name, dims));
    return name;
  }

  output(name: string, dims: (number | string)[]): void {
    this.outputs.push(valueInfo(name, dims));
  }

  floats(name: string, dims: number[], data: Float32Array): string {
    this.inits.push(
      onnx.TensorProto.create({ name, dims, dataType: FLOAT, rawData: new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)) }),
    );
    return name;
  }

  ints(name: string, values: number[]): string {
    const buf = new BigInt64Array(values.map((v) => BigInt(v)));
    this.inits.push(onnx.TensorProto.create({ name, dims: [values.length], dataType: INT64, rawData: new Uint8Array(buf.buffer) }));
    return name;
  }

  /** An initializer of any element type (ONNX TensorProto.DataType code, e.g. 2 uint8, 3 int8) from raw little-endian bytes. */
  raw(name: string, dataType: number, dims: number[], rawData: Uint8Array): string {
    this.inits.push(onnx.TensorProto.create({ name, dims, dataType, rawData: rawData.slice() }));
    return name;
  }

  node(opType: string, inputs: string[], output: string, attrs: Record<string, Attr> = {}, name?: string): string {
    const attribute = Object.entries(attrs).map(([k, v]) => {
      if (typeof v === 'number') return { name: k, type: 2, i: v };
      if (typeof v === 'object' && 'f' in v) return { name: k, type: 1, f: v.f };
      if (typeof v === 'string') return { name: k, type: 3, s: new TextEncoder().encode(v) };
      if (Array.isArray(v)) return { name: k, type: 7, ints: v };
      return { name: k, type: 6, floats: v.floats };
    });
    this.nodes.push(onnx.NodeProto.create({ name: name ?? output, opType, input: inputs, output: [output], attribute }));
    return output;
  }

  /** What has been built so far, for splicing into an existing graph instead of writing a whole model. */
  parts() {
    return { nodes: [...this.nodes], initializers: [...this.inits], inputs: [...this.inputs], outputs: [...this.outputs] };
  }

  build(meta: { producer: string; graphName: string; metadata?: Record<string, string> }): Uint8Array {
    const graph = onnx.GraphProto.create({ name: meta.graphName, node: this.nodes, initializer: this.inits, input: this.inputs, output: this.outputs });
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: meta.producer,
      opsetImport: [{ domain: '', version: 13 }],
      graph,
      metadataProps: Object.entries(meta.metadata ?? {}).map(([key, value]) => ({ key, value })),
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

function valueInfo(name: string, dims: (number | string)[]) {
  return onnx.ValueInfoProto.create({
    name,
    type: onnx.TypeProto.create({
      tensorType: onnx.TypeProto.Tensor.create({
        elemType: FLOAT,
        shape: onnx.TensorShapeProto.create({ dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) }),
      }),
    }),
  });
}
