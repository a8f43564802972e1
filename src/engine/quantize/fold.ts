/**
 * Fold per-channel affine ops that follow a Conv (batch norm, or batch norm exported as Mul/Add/Sub/Div by a
 * constant) into the Conv's weights and bias, before quantising.
 *
 * Why: a QDQ Conv only fuses into QLinearConv when its output goes straight to a QuantizeLinear; a Mul and an Add in
 * between would keep every block in float. The shared MobileNet (a PyTorch export of a TF model) has exactly this:
 * Conv -> Mul [1,C,1,1] -> Add [1,C,1,1] -> Relu -> Clip(0, 6) for all 27 convs. ORT's float optimiser does the same
 * fold (ConvMulFusion, ConvAddFusion), so the float model's numbers barely change; the quantiser then sees the
 * folded weights, whose per-channel ranges are what int8 must represent.
 */
import { encodeAttr } from '../../onnx/build.js';
import { dimsOf, floatInit, GraphIndex, type GraphProto, type NodeProto } from './graph.js';
import { floatAttr, intAttr, stringAttr, toNum } from '../../onnx/proto.js';

export interface FoldResult { folded: number }

/** Per-output-channel values of a constant broadcast against [N, C, ...] (scalar, [C], [1,C,1,1], [C,1,1]); else undefined. */
function perChannel(values: Float64Array, dims: number[], channels: number, rank: number): Float64Array | undefined {
  if (values.length === 1) return new Float64Array(channels).fill(values[0]!);
  if (values.length !== channels) return undefined;
  // Right-aligned broadcast: the channel axis of the activation is axis 1 of `rank` axes.
  const aligned = [...Array(Math.max(0, rank - dims.length)).fill(1), ...dims];
  if (aligned.length !== rank || aligned[1] !== channels) return undefined;
  return values;
}

/**
 * Fold every foldable chain after a Conv with constant weights, in place. A step is folded only when the Conv's output
 * (and each intermediate) has that one consumer and is not a graph output.
 */
export function foldConvAffine(graph: GraphProto): FoldResult {
  let folded = 0;
  let idx = new GraphIndex(graph);
  const removed = new Set<NodeProto>();
  for (const conv of [...(graph.node ?? [])]) {
    if (conv.opType !== 'Conv' || removed.has(conv)) continue;
    const wInit = idx.inits.get(conv.input?.[1] ?? '');
    if (!wInit || (wInit.dataType ?? 1) !== 1) continue;
    const wDims = dimsOf(wInit);
    const cout = wDims[0]!;
    const rank = wDims.length;
    const per = wDims.slice(1).reduce((a, b) => a * b, 1);
    const bName = conv.input?.[2];
    const bInit = bName ? idx.inits.get(bName) : undefined;
    if (bName && !bInit) continue;
    let w: Float64Array | undefined;
    let b: Float64Array | undefined;
    let out = conv.output![0]!;
    for (;;) {
      const cons = idx.consumersOf(out);
      if (cons.length !== 1 || idx.graphOutputs.has(out)) break;
      const n = cons[0]!;
      let scale: Float64Array | undefined;
      let shift: Float64Array | undefined;
      if (['Mul', 'Add', 'Sub', 'Div'].includes(n.opType ?? '') && n.input!.length === 2) {
        const other = n.input![0] === out ? n.input![1]! : n.input![0]!;
        // Sub and Div only fold with the Conv output on the left (x - c, x / c).
        if ((n.opType === 'Sub' || n.opType === 'Div') && n.input![0] !== out) break;
        const c = idx.constant(other);
        if (!c || (c.dataType ?? 1) !== 1) break;
        const v = perChannel(idx.constantValues(other)!, dimsOf(c), cout, rank);
        if (!v) break;
        if (n.opType === 'Mul') scale = v;
        else if (n.opType === 'Div') scale = v.map((x) => 1 / x);
        else if (n.opType === 'Add') shift = v;
        else shift = v.map((x) => -x);
      } else if (n.opType === 'BatchNormalization' && n.input![0] === out && (n.output ?? []).filter(Boolean).length === 1) {
        const [gamma, beta, mean, variance] = n.input!.slice(1).map((t) => idx.constantValues(t));
        if (!gamma || !beta || !mean || !variance || gamma.length !== cout) break;
        const eps = floatAttr(n, 'epsilon', 1e-5);
        scale = gamma.map((g, c) => g / Math.sqrt(variance[c]! + eps));
        shift = beta.map((bt, c) => bt - mean[c]! * scale![c]!);
      } else break;
      w ??= Float64Array.from(Float32Array.from(idx.constantValues(wInit.name!)!));
      b ??= bInit ? idx.constantValues(bInit.name!)! : new Float64Array(cout);
      if (scale) {
        for (let c = 0; c < cout; c++) {
          for (let k = 0; k < per; k++) w[c * per + k]! *= scale[c]!;
          b[c]! *= scale[c]!;
        }
      }
      if (shift) for (let c = 0; c < cout; c++) b[c]! += shift[c]!;
      removed.add(n);
      out = n.output![0]!;
      folded++;
    }
    if (!w) continue;
    const base = conv.name || conv.output![0]!;
    const wName = `${base}_folded_weight`;
    const bFolded = `${base}_folded_bias`;
    graph.initializer!.push(floatInit(wName, wDims, w), floatInit(bFolded, [cout], b!));
    conv.input = [conv.input![0]!, wName, bFolded];
    conv.output = [out];
    graph.node = graph.node!.filter((n) => !removed.has(n));
    idx = new GraphIndex(graph);
  }
  return { folded };
}

/**
 * Pads feeding a Conv whose amounts are computed in the graph (TF "same" padding exported from the input shape):
 * the tensors to evaluate once so that foldPadsIntoConv can use them. Pads with constant amounts need nothing.
 */
export function padsToEvaluate(graph: GraphProto): string[] {
  const idx = new GraphIndex(graph);
  const out: string[] = [];
  for (const n of graph.node ?? []) {
    if (!foldablePad(n, idx)) continue;
    const pads = n.input![1]!;
    if (!idx.constant(pads)) out.push(pads);
  }
  return out;
}

function foldablePad(n: NodeProto, idx: GraphIndex): NodeProto | undefined {
  if (n.opType !== 'Pad' || (n.input ?? []).length < 2 || stringAttr(n, 'mode', 'constant') !== 'constant') return undefined;
  const value = n.input![2] ? idx.constantValues(n.input![2]!) : undefined;
  if (n.input![2] && (!value || value[0] !== 0)) return undefined;
  if ((n.input ?? []).length > 3 && n.input![3]) return undefined; // axes input (opset 18)
  const out = n.output![0]!;
  const cons = idx.consumersOf(out);
  if (cons.length !== 1 || idx.graphOutputs.has(out)) return undefined;
  const conv = cons[0]!;
  if (conv.opType !== 'Conv' || conv.input![0] !== out || stringAttr(conv, 'auto_pad', 'NOTSET') !== 'NOTSET') return undefined;
  return conv;
}

/**
 * Fold zero Pads into the Conv that follows (its `pads` attribute), given the evaluated pad amounts of computed
 * pads. Why: on the quantised graph each Pad sits between two QLinearConvs, which ORT runs in NHWC: every Pad (in
 * NCHW) then costs a Transpose pair, 14 in the shared MobileNet. Only valid for the input size the amounts were
 * computed for, so the caller folds computed pads only when the model's input size is fixed.
 */
export function foldPadsIntoConv(graph: GraphProto, evaluated: Map<string, number[]>): number {
  const idx = new GraphIndex(graph);
  const drop = new Set<NodeProto>();
  for (const n of graph.node ?? []) {
    const conv = foldablePad(n, idx);
    if (!conv) continue;
    const padsName = n.input![1]!;
    const pads = idx.constant(padsName) ? Array.from(idx.constantValues(padsName)!) : evaluated.get(padsName);
    if (!pads || pads.length % 2 !== 0 || pads.some((p) => p < 0)) continue;
    const rank = pads.length / 2;
    if (rank < 3 || pads[0] || pads[1] || pads[rank] || pads[rank + 1]) continue;
    const spatial = rank - 2;
    const old = (conv.attribute ?? []).find((a) => a.name === 'pads')?.ints?.map(toNum) ?? new Array(2 * spatial).fill(0);
    const merged = [...pads.slice(2, rank).map((p, i) => p + old[i]!), ...pads.slice(rank + 2).map((p, i) => p + old[spatial + i]!)];
    conv.attribute = [...(conv.attribute ?? []).filter((a) => a.name !== 'pads'), encodeAttr('pads', merged)];
    conv.input = [n.input![0]!, ...conv.input!.slice(1)];
    drop.add(n);
  }
  graph.node = (graph.node ?? []).filter((n) => !drop.has(n));
  return drop.size;
}

/**
 * Flatten of an initializer becomes an initializer (PyTorch exports a classifier's weight as Flatten(param)), so that
 * the Gemm reading it has constant weights the quantiser can see.
 */
export function foldConstantFlatten(graph: GraphProto): number {
  const idx = new GraphIndex(graph);
  const drop = new Set<NodeProto>();
  for (const n of graph.node ?? []) {
    if (n.opType !== 'Flatten') continue;
    const init = idx.inits.get(n.input?.[0] ?? '');
    if (!init || (init.dataType ?? 1) !== 1 || idx.graphOutputs.has(n.output![0]!)) continue;
    const dims = dimsOf(init);
    let axis = intAttr(n, 'axis', 1);
    if (axis < 0) axis += dims.length;
    const rows = dims.slice(0, axis).reduce((a, b) => a * b, 1);
    const cols = dims.slice(axis).reduce((a, b) => a * b, 1);
    graph.initializer!.push(floatInit(n.output![0]!, [rows, cols], idx.constantValues(init.name!)!));
    drop.add(n);
  }
  graph.node = (graph.node ?? []).filter((n) => !drop.has(n));
  return drop.size;
}
