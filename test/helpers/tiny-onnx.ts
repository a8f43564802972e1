import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
const FLOAT = 1;

function valueInfo(name: string, dims: (number | string)[]) {
  return onnx.ValueInfoProto.create({
    name,
    type: onnx.TypeProto.create({
      tensorType: onnx.TypeProto.Tensor.create({
        elemType: FLOAT,
        shape: onnx.TensorShapeProto.create({
          dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })),
        }),
      }),
    }),
  });
}

function tensor(name: string, dims: number[], values: number[]) {
  return onnx.TensorProto.create({ name, dims, dataType: FLOAT, floatData: values });
}

/**
 * A tiny image classifier built in the test: input [N,3,S,S] -> 1x1 Conv (3->C channels, fixed weights) -> Relu ->
 * GlobalAveragePool -> Flatten = `features` [N,C] -> Gemm = `logits` [N,K]. Small enough to reason about, real
 * enough that ONNX Runtime runs it like any exported CNN.
 */
export function tinyClassifier(opts: { size?: number; channels?: number; classes?: number; metadata?: Record<string, string> } = {}): Uint8Array {
  const s = opts.size ?? 8;
  const c = opts.channels ?? 4;
  const k = opts.classes ?? 3;
  // Feature j mixes the colour channels with fixed weights so colours map to distinct feature vectors.
  const convW: number[] = [];
  for (let j = 0; j < c; j++) for (let ch = 0; ch < 3; ch++) convW.push(Math.sin(1 + j * 3 + ch));
  const gemmW: number[] = [];
  for (let j = 0; j < c; j++) for (let q = 0; q < k; q++) gemmW.push(Math.cos(j * k + q));
  const graph = onnx.GraphProto.create({
    name: 'tiny',
    input: [valueInfo('input', ['batch', 3, s, s])],
    output: [valueInfo('features', ['batch', c]), valueInfo('logits', ['batch', k])],
    initializer: [tensor('conv_w', [c, 3, 1, 1], convW), tensor('conv_b', [c], new Array(c).fill(0.1)), tensor('fc_w', [c, k], gemmW), tensor('fc_b', [k], new Array(k).fill(0))],
    node: [
      onnx.NodeProto.create({ name: 'conv', opType: 'Conv', input: ['input', 'conv_w', 'conv_b'], output: ['conv_out'] }),
      onnx.NodeProto.create({ name: 'relu', opType: 'Relu', input: ['conv_out'], output: ['relu_out'] }),
      onnx.NodeProto.create({ name: 'pool', opType: 'GlobalAveragePool', input: ['relu_out'], output: ['pool_out'] }),
      onnx.NodeProto.create({ name: 'flatten', opType: 'Flatten', input: ['pool_out'], output: ['features'] }),
      onnx.NodeProto.create({ name: 'fc', opType: 'Gemm', input: ['features', 'fc_w', 'fc_b'], output: ['logits'] }),
    ],
  });
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'graft-test',
    opsetImport: [{ domain: '', version: 13 }],
    graph,
    metadataProps: Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value })),
  });
  return onnx.ModelProto.encode(model).finish();
}
