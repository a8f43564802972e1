/**
 * The forward part of a gradient graph: the model's nodes that depend on its data inputs or on trainable weights,
 * for one batch size, with every tensor's shape known and every other tensor folded into a constant.
 *
 * Exporters write shape arithmetic into the graph (TF-style "same" padding: Shape → Gather → Sub → … → Pad), and
 * backward rules need plain numbers (pads, axes, shapes). Instead of re-implementing shape inference, ONNX Runtime
 * runs the model once at batch 1 and once at batch 2 with every intermediate tensor as an output: that gives every
 * tensor's shape and the value of every tensor that depends on shapes and constants only. A quantity that differs
 * between the two runs is taken as affine in the batch size (a reshape to [N, 768], a shape [N, C, H, W]); the
 * session that finally runs the gradient graph checks every shape again.
 *
 * Nodes are also brought to opset 17 form (attributes that later opsets take as inputs become constant inputs), so
 * that one set of backward rules, written for opset 17, serves models exported at opset 7 as well.
 */
import * as ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import { GraftError } from '../../errors.js';
import { withOutputs } from '../../onnx/cut.js';
import { tensorValues } from '../../onnx/proto.js';
import { createSession } from '../ort.js';
import { decomposeTrainingBn } from './bn-train.js';
import { attrFloat, attrInt, attrInts, toNum, type ForwardGraph, type FwdNode } from './forward-graph.js';
import { simplifyForward } from './simplify.js';
import { DT, encodeAttr, floatTensor, int64Tensor, type AttributeProto, type NodeProto, type TensorProto } from './onnx-writer.js';

const { onnx } = onnxProto;

export const TARGET_OPSET = 17;

// The graph's types and attribute readers live in forward-graph.ts (bn-train and simplify need them, and this file
// needs those two): re-exported so that rules and callers keep importing them from here.
export { attrFloat, attrInt, attrInts, attrString, type ForwardGraph, type FwdNode } from './forward-graph.js';

const ORT_TYPE: Record<string, number> = { float32: DT.FLOAT, uint8: DT.UINT8, int8: DT.INT8, int32: DT.INT32, int64: DT.INT64, bool: DT.BOOL, float64: DT.DOUBLE };

interface Probe { dims: Map<string, number[]>; types: Map<string, number>; values: Map<string, ort.Tensor> }

async function probe(modelBytes: Uint8Array, feeds: Record<string, number[]>, names: string[], where: string): Promise<Probe> {
  // Every tensor is an output, read as the graph itself computes it: no ORT graph rewrites (fusions, folding).
  const session = await createSession(withOutputs(modelBytes, names), { where, threads: 1, optimization: 'disabled' });
  try {
    const input: Record<string, ort.Tensor> = {};
    for (const [name, dims] of Object.entries(feeds)) input[name] = new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)), dims);
    const out = await session.run(input);
    const p: Probe = { dims: new Map(), types: new Map(), values: new Map() };
    for (const [name, t] of Object.entries(out)) {
      p.dims.set(name, [...t.dims]);
      p.types.set(name, ORT_TYPE[t.type] ?? 0);
      p.values.set(name, t);
    }
    return p;
  } finally {
    await session.release();
  }
}

function tensorNumbers(t: ort.Tensor): number[] {
  return Array.from(t.data as ArrayLike<number | bigint>, (v) => Number(v));
}

/** Element-wise affine extrapolation from batch 1 and 2 to batch n (exact for quantities linear in the batch). */
function extrapolate(a: number[], b: number[], n: number): number[] {
  return a.map((v, i) => v + (b[i]! - v) * (n - 1));
}

function staticTensor(name: string, type: number, dims: number[], values: number[] | ort.Tensor): TensorProto {
  if (Array.isArray(values)) {
    if (type === DT.INT64) return int64Tensor(name, dims, values);
    if (type === DT.FLOAT) return floatTensor(name, dims, Float32Array.from(values));
    throw new Error(`internal: cannot write a batch-dependent constant of type ${type}`);
  }
  const data = (values as ort.Tensor).data as ArrayBufferView;
  return onnx.TensorProto.create({ name, dims, dataType: type, rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice() });
}

export interface PrepareOptions {
  /** Batch size the graph is made for. */
  batch: number;
  /** Initializers to treat as trainable (graph inputs of the gradient graph). */
  params?: string[];
  /** Fold Pad into Conv and Relu into Clip (default true; simplify.ts). */
  simplify?: boolean;
  /** Running-mean initializers of BatchNormalization nodes to run in training mode (bn-train.ts). */
  bnTraining?: string[];
}

/**
 * Prepare a model's forward graph for differentiation. Data inputs keep their non-batch dims from the model
 * (symbolic dims other than the batch are an error: the caller must fix the input size first).
 */
export async function prepareForward(modelBytes: Uint8Array, opts: PrepareOptions, where = 'model'): Promise<ForwardGraph> {
  const model = onnx.ModelProto.decode(modelBytes);
  const g = model.graph!;
  const domainOpset = (model.opsetImport ?? []).find((o) => !o.domain || o.domain === 'ai.onnx');
  const opset = toNum(domainOpset?.version ?? 1);
  for (const o of model.opsetImport ?? []) {
    if (o.domain && o.domain !== 'ai.onnx') throw new GraftError(`${where}: gradients need standard ONNX operators; the model uses the '${o.domain}' domain`);
  }
  const inits = new Map<string, TensorProto>((g.initializer ?? []).map((t) => [t.name!, t as TensorProto]));
  const paramNames = new Set(opts.params ?? []);
  for (const p of paramNames) if (!inits.has(p)) throw new GraftError(`${where}: no weight named '${p}' to train`);

  const dataInputs = (g.input ?? []).filter((v) => !inits.has(v.name!));
  const inputDims = (batch: number) =>
    Object.fromEntries(
      dataInputs.map((v) => {
        const dims = (v.type?.tensorType?.shape?.dim ?? []).map((d, i) => {
          if (d.dimValue != null && toNum(d.dimValue) > 0) return i === 0 ? batch : toNum(d.dimValue);
          if (i === 0) return batch;
          throw new GraftError(`${where}: input '${v.name}' has a free size at axis ${i}; fix the input size first`);
        });
        return [v.name!, dims];
      }),
    );
  const fixedBatch = dataInputs.map((v) => v.type?.tensorType?.shape?.dim?.[0]).find((d) => d?.dimValue != null && toNum(d.dimValue) > 0);
  if (fixedBatch && toNum(fixedBatch.dimValue) !== opts.batch) {
    throw new GraftError(`${where}: the model's batch size is fixed at ${toNum(fixedBatch.dimValue)}; cannot make a graph for batch ${opts.batch}`);
  }

  // Which tensors depend on data or on trainable weights (dynamic), and which are constants once shapes are fixed.
  const dynamic = new Set<string>([...dataInputs.map((v) => v.name!), ...paramNames]);
  const nodes = g.node ?? [];
  for (const n of nodes) {
    if (n.opType === 'Shape' || n.opType === 'Size') continue;
    if ((n.input ?? []).some((i) => dynamic.has(i))) for (const o of n.output ?? []) dynamic.add(o);
  }
  const allNames = [...new Set(nodes.flatMap((n) => n.output ?? []).filter(Boolean))];
  // A model with a fixed batch size is probed at that size (nothing to extrapolate).
  const p1 = await probe(modelBytes, inputDims(fixedBatch ? opts.batch : 1), allNames, where);
  const p2 = fixedBatch ? p1 : await probe(modelBytes, inputDims(2), allNames, where);
  const n = opts.batch;

  const dims = new Map<string, number[]>();
  const types = new Map<string, number>();
  for (const [name, d1] of p1.dims) {
    dims.set(name, n === 1 || fixedBatch ? d1 : extrapolate(d1, p2.dims.get(name) ?? d1, n));
    types.set(name, p1.types.get(name)!);
  }
  for (const [name, t] of inits) {
    dims.set(name, (t.dims ?? []).map(toNum));
    types.set(name, t.dataType ?? DT.FLOAT);
  }
  for (const [name, d] of Object.entries(inputDims(n))) {
    dims.set(name, d);
    types.set(name, DT.FLOAT);
  }

  // Constants that dynamic nodes read: original initializers as they are, computed ones from the probes.
  const initializers: TensorProto[] = [];
  const values = new Map<string, number[]>();
  const written = new Set<string>();
  const dynNodes = (nodes as NodeProto[]).filter((nd) => (nd.output ?? []).some((o) => dynamic.has(o)));
  for (const nd of dynNodes) {
    for (const name of nd.input ?? []) {
      if (!name || dynamic.has(name) || written.has(name)) continue;
      written.add(name);
      const init = inits.get(name);
      if (init) {
        initializers.push(init);
        const size = (init.dims ?? []).map(toNum).reduce((a, b) => a * b, 1);
        if (size <= 4096) values.set(name, initNumbers(init));
        continue;
      }
      const t1 = p1.values.get(name);
      if (!t1) throw new GraftError(`${where}: node '${nd.name}' reads '${name}', which nothing produces`);
      const type = p1.types.get(name)!;
      const v1 = t1.data.length <= 4096 ? tensorNumbers(t1) : undefined;
      const t2 = p2.values.get(name)!;
      const v2 = v1 && t2.data.length === t1.data.length ? tensorNumbers(t2) : undefined;
      const batchDependent = v1 !== undefined && (v2 === undefined || v1.some((v, i) => v !== v2[i]));
      if (batchDependent) {
        if (!v2) throw new GraftError(`${where}: the constant '${name}' changes size with the batch; not supported`);
        const v = fixedBatch ? v1! : extrapolate(v1!, v2, n);
        initializers.push(staticTensor(name, type, dims.get(name)!, v));
        values.set(name, v);
      } else {
        initializers.push(staticTensor(name, type, [...t1.dims], t1));
        if (v1) values.set(name, v1);
      }
    }
  }

  const params = [...paramNames].map((name) => {
    const t = inits.get(name)!;
    if ((t.dataType ?? DT.FLOAT) !== DT.FLOAT) throw new GraftError(`${where}: weight '${name}' is not float32 and cannot be trained`);
    return { name, dims: dims.get(name)!, value: Float32Array.from(initNumbers(t)) };
  });
  // Trainable weights become graph inputs, not initializers.
  const kept = initializers.filter((t) => !paramNames.has(t.name!));

  const fwd: ForwardGraph = {
    inputs: dataInputs.map((v) => ({ name: v.name!, dims: dims.get(v.name!)! })),
    params,
    outputs: (g.output ?? []).map((o) => o.name!),
    nodes: [],
    initializers: kept,
    dims,
    types,
    values,
    batch: n,
    opset,
    bnStats: [],
  };
  for (const nd of dynNodes) upgradeNode(fwd, nd, opset, where);
  if (opts.bnTraining?.length) fwd.bnStats = decomposeTrainingBn(fwd, new Set(opts.bnTraining));
  return opts.simplify === false ? fwd : simplifyForward(fwd);
}

/** The numbers of an initializer (float, double, int32, int64, uint8, int8), from raw or typed fields. */
export function initNumbers(t: TensorProto): number[] {
  return Array.from(tensorValues(t));
}

// ---------------------------------------------------------------------------------------------------------------
// Opset 17 form. Each handler rewrites one node whose older form differs; everything else passes unchanged.

type Upgrade = (fwd: ForwardGraph, n: FwdNode, version: number) => FwdNode[];

let constCounter = 0;
function constInput(fwd: ForwardGraph, t: TensorProto, values: number[]): string {
  const name = `__opset17_${constCounter++}`;
  t.name = name;
  fwd.initializers.push(t);
  fwd.values.set(name, values);
  fwd.dims.set(name, (t.dims ?? []).map(toNum));
  fwd.types.set(name, t.dataType ?? DT.FLOAT);
  return name;
}

function dropAttrs(n: FwdNode, ...names: string[]): FwdNode {
  for (const a of names) n.attrs.delete(a);
  return n;
}

/** attribute `axes`/`split`/`pads` → a constant int64 input at position `at` (opset 11/13 form). */
function attrToInput(fwd: ForwardGraph, n: FwdNode, attr: string, at: number): FwdNode {
  const v = attrInts(n, attr);
  n.attrs.delete(attr);
  if (v === undefined) return n;
  while (n.inputs.length < at) n.inputs.push('');
  n.inputs[at] = constInput(fwd, int64Tensor('', [v.length], v), v);
  return n;
}

const UPGRADES: Record<string, Upgrade> = {
  Pad: (fwd, n, v) => {
    if (v >= 11) return [n];
    const pads = attrInts(n, 'pads') ?? attrInts(n, 'paddings') ?? [];
    const value = attrFloat(n, 'value', 0);
    n.attrs.delete('pads');
    n.attrs.delete('paddings');
    n.attrs.delete('value');
    n.inputs = [n.inputs[0]!, constInput(fwd, int64Tensor('', [pads.length], pads), pads), constInput(fwd, floatTensor('', [], Float32Array.of(value)), [value])];
    return [n];
  },
  Clip: (fwd, n, v) => {
    if (v >= 11) return [n];
    const lo = attrFloat(n, 'min', -3.4028234663852886e38);
    const hi = attrFloat(n, 'max', 3.4028234663852886e38);
    dropAttrs(n, 'min', 'max', 'consumed_inputs');
    n.inputs = [n.inputs[0]!, constInput(fwd, floatTensor('', [], Float32Array.of(lo)), [lo]), constInput(fwd, floatTensor('', [], Float32Array.of(hi)), [hi])];
    return [n];
  },
  Squeeze: (fwd, n, v) => [v >= 13 ? n : attrToInput(fwd, n, 'axes', 1)],
  Unsqueeze: (fwd, n, v) => [v >= 13 ? n : attrToInput(fwd, n, 'axes', 1)],
  ReduceSum: (fwd, n, v) => [v >= 13 ? n : attrToInput(fwd, n, 'axes', 1)],
  Split: (fwd, n, v) => [v >= 13 ? n : attrToInput(fwd, n, 'split', 1)],
  Softmax: (fwd, n, v) => softmaxUpgrade(fwd, n, v),
  LogSoftmax: (fwd, n, v) => softmaxUpgrade(fwd, n, v),
  BatchNormalization: (_f, n) => [dropAttrs(n, 'spatial', 'consumed_inputs', 'is_test')],
  Dropout: (_f, n) => {
    n.opType = 'Identity';
    n.attrs.clear();
    n.inputs = [n.inputs[0]!];
    n.outputs = [n.outputs[0]!];
    return [n];
  },
  Gemm: (_f, n) => [dropAttrs(n, 'broadcast')],
};
for (const op of ['Conv', 'Relu', 'Add', 'Sub', 'Mul', 'Div', 'Sum', 'Sigmoid', 'LeakyRelu', 'Concat', 'Reshape']) {
  UPGRADES[op] ??= (_f, n) => [dropAttrs(n, 'consumed_inputs', 'broadcast')];
}

/** Softmax before opset 13 flattens to 2D at `axis` (default 1); opset 13 works along one axis (default -1). */
function softmaxUpgrade(fwd: ForwardGraph, n: FwdNode, v: number): FwdNode[] {
  if (v >= 13) return [n];
  const rank = fwd.dims.get(n.inputs[0]!)!.length;
  const axis = (attrInt(n, 'axis', 1) + rank) % rank;
  if (axis === rank - 1) {
    n.attrs.set('axis', encodeAttr('axis', -1));
    return [n];
  }
  // Flatten → softmax on the last axis → back to the original shape.
  const d = fwd.dims.get(n.inputs[0]!)!;
  const flat = `${n.outputs[0]}__flat`;
  const soft = `${n.outputs[0]}__soft`;
  const outer = d.slice(0, axis).reduce((a, b) => a * b, 1);
  fwd.dims.set(flat, [outer, d.slice(axis).reduce((a, b) => a * b, 1)]);
  fwd.dims.set(soft, fwd.dims.get(flat)!);
  fwd.types.set(flat, DT.FLOAT);
  fwd.types.set(soft, DT.FLOAT);
  const shape = constInput(fwd, int64Tensor('', [d.length], d), d);
  return [
    { name: `${n.name}__flatten`, opType: 'Flatten', inputs: [n.inputs[0]!], outputs: [flat], attrs: new Map([['axis', encodeAttr('axis', axis)]]) },
    { name: n.name, opType: n.opType, inputs: [flat], outputs: [soft], attrs: new Map([['axis', encodeAttr('axis', -1)]]) },
    { name: `${n.name}__reshape`, opType: 'Reshape', inputs: [soft, shape], outputs: [n.outputs[0]!], attrs: new Map() },
  ];
}

function upgradeNode(fwd: ForwardGraph, nd: NodeProto, version: number, where: string): void {
  if (nd.domain && nd.domain !== 'ai.onnx') throw new GraftError(`${where}: node '${nd.name}' uses the '${nd.domain}' domain (${nd.opType}); gradients need standard ONNX operators`);
  const n: FwdNode = {
    name: nd.name || nd.output![0]!,
    opType: nd.opType!,
    inputs: [...(nd.input ?? [])],
    outputs: [...(nd.output ?? [])],
    attrs: new Map((nd.attribute ?? []).map((a) => [a.name!, a as AttributeProto])),
  };
  const up = UPGRADES[n.opType];
  fwd.nodes.push(...(up ? up(fwd, n, version) : [n]));
}

/** The forward nodes as NodeProtos (for writing the gradient graph). */
export function nodeProto(n: FwdNode): NodeProto {
  return onnx.NodeProto.create({ name: n.name, opType: n.opType, input: n.inputs, output: n.outputs, attribute: [...n.attrs.values()] });
}
