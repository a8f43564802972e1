/** The state the TF.js graph translation shares between op handlers, and the building blocks they use. */
import { OnnxBuilder } from '../onnx-builder.js';
import { fail } from '../fail.js';
import { broadcastShape, foldConstants, NCHW_OF_NHWC, TO_NCHW, TO_NHWC, transposeData } from '../layout.js';
import type { TfjsConst } from '../tfjs-weights.js';
import { NodeAttrs } from './attrs.js';
import { dataInputs, ref, where } from './graph-order.js';
import type { GraphNode } from './model-json.js';

/**
 * A tensor of the graph being built. `shape` is in TF order (NHWC for rank 4), null where unknown; rank is always
 * known. A rank-4 tensor with an ONNX `name` is NCHW. Constants are kept as values (`konst`) and written as
 * initializers only where they are used as data, in the layout the use needs.
 */
export interface T {
  name?: string;
  shape: (number | null)[];
  konst?: TfjsConst;
  /** For a constant: the Const node's name (its initializer's name). */
  cname?: string;
  /** Derived from a global pooling with only reshaping since (the feature vector). */
  pooled?: boolean;
}

/** Names graft gives its outputs; no tensor of the graph may take them. */
const RESERVED = new Set(['input', 'features', 'logits', 'output']);

export class GraphCtx extends NodeAttrs {
  readonly b = new OnnxBuilder();
  /** Translated tensors by TF name (`node` or `node:index`). */
  readonly values = new Map<string, T>();
  /** The graph's image input, once its Placeholder is translated. */
  inputT: { node: GraphNode; dims: (number | string)[] } | undefined;
  /** The last global pooling seen (the feature vector). */
  pooled: T | undefined;
  /** Softmax output name → its input (the logits). */
  readonly softmaxInput = new Map<string, T>();
  private readonly used = new Set<string>(['input']);
  private readonly materialised = new Map<TfjsConst, Map<string, string>>();

  constructor(
    file: string,
    readonly byName: Map<string, GraphNode>,
    readonly weights: Map<string, TfjsConst>,
  ) {
    super(file);
  }

  fail(n: GraphNode, msg: string): never {
    fail(this.file, `${where(n)}: ${msg}`);
  }

  /** `base` itself the first time (TF names are unique), a fresh variant after; never a name graft gives outputs. */
  uniq(base: string): string {
    const name = this.used.has(base) || RESERVED.has(base) || /^output_\d+$/.test(base) ? this.b.fresh(base) : base;
    this.used.add(name);
    return name;
  }

  /** An initializer for constant `c` in layout `how` (written once per layout). */
  initializer(c: TfjsConst, hint: string, how: string, dims: number[], values: () => Float32Array): string {
    const m = this.materialised.get(c) ?? new Map<string, string>();
    this.materialised.set(c, m);
    const hit = m.get(how);
    if (hit) return hit;
    const name = this.b.floats(this.uniq(hint), dims, values());
    m.set(how, name);
    return name;
  }

  /** An ONNX name for `t` as a data input: constants become float initializers, 4-D ones NCHW. */
  data(t: T, hint: string): string {
    if (t.name) return t.name;
    const c = t.konst!;
    const four = c.shape.length === 4;
    return this.initializer(c, t.cname ?? hint, 'data', four ? TO_NCHW.map((p) => c.shape[p]!) : c.shape, () => (four ? transposeData(c.data, c.shape, TO_NCHW) : c.data));
  }

  input(n: GraphNode, i: number): T {
    const s = dataInputs(n)[i] ?? this.fail(n, `input ${i} missing`);
    const r = ref(s);
    const t = this.values.get(r.index ? `${r.node}:${r.index}` : r.node);
    if (!t) this.fail(n, `input '${s}' is not computed (only output 0 of ${this.byName.get(r.node)?.op ?? 'that node'} is supported)`);
    return t;
  }

  constOf(n: GraphNode, i: number, what: string): TfjsConst {
    return this.input(n, i).konst ?? this.fail(n, `the ${what} must be a constant`);
  }

  floats(v: number[] | Float32Array, dims?: number[]): string {
    return this.b.floats(this.b.fresh('c'), dims ?? [v.length], Float32Array.from(v));
  }

  clip(x: string, lo: number, hi: number, out: string): string {
    return this.b.node('Clip', [x, this.floats([lo], []), this.floats([hi], [])], out);
  }

  /** `t` broadcast against a 4-D NCHW tensor: constants re-laid out, other lower-rank tensors unsqueezed + transposed. */
  as4d(t: T, hint: string): string {
    const r = t.shape.length;
    if (r === 4 || r === 0) return this.data(t, hint);
    if (t.konst) {
      const c = t.konst;
      const s4 = [...new Array<number>(4 - r).fill(1), ...c.shape];
      return this.initializer(c, t.cname ?? hint, 'nchw', TO_NCHW.map((p) => s4[p]!), () => transposeData(c.data, s4, TO_NCHW));
    }
    const u = this.b.node('Unsqueeze', [t.name!, this.b.ints(this.b.fresh('axes'), [...Array(4 - r).keys()])], this.b.fresh(`${hint}_4d`));
    return this.b.node('Transpose', [u], this.b.fresh(`${hint}_nchw`), { perm: TO_NCHW });
  }

  /** An elementwise op on TF-broadcast inputs (folded when all inputs are constants and `fold` is given). */
  elementwise(n: GraphNode, op: string, ins: T[], out: string, fold?: (...v: number[]) => number): T {
    const shape = broadcastShape(ins.map((t) => t.shape));
    if (fold && ins.every((t) => t.konst)) {
      const d = foldConstants(ins.map((t) => t.konst!), shape as number[], fold);
      if (d) return { shape, konst: { shape: shape as number[], data: d, dtype: 'float32' } };
    }
    const names = shape.length === 4 ? ins.map((t, i) => this.as4d(t, `${n.name}/in${i}`)) : ins.map((t, i) => this.data(t, `${n.name}/in${i}`));
    return { name: this.b.node(op, names, out), shape };
  }

  toNhwc(t: T, hint: string): string {
    return t.shape.length === 4 ? this.b.node('Transpose', [this.data(t, hint)], this.b.fresh(`${hint}_nhwc`), { perm: TO_NHWC }) : this.data(t, hint);
  }

  toNchw(x: string, rank: number, out: string): string {
    return rank === 4 ? this.b.node('Transpose', [x], out, { perm: TO_NCHW }) : this.b.node('Identity', [x], out);
  }

  /**
   * Remove TF axes `axes` of a 4-D NCHW tensor with `op` (a reduction, or Squeeze), keeping TF's order of the
   * remaining dimensions; with `keep` the result is 4-D (NCHW).
   */
  dropAxes4d(x: T, axes: number[], keep: boolean, out: string, op: (x: string, nchwAxes: number[], keep: boolean, out: string) => string): string {
    const nchwAxes = axes.map((a) => NCHW_OF_NHWC[a]!).sort((p, q) => p - q);
    if (keep) return op(x.name!, nchwAxes, true, out);
    const remaining = [0, 1, 2, 3].filter((a) => !axes.includes(a)).map((a) => NCHW_OF_NHWC[a]!);
    const sorted = [...remaining].sort((p, q) => p - q);
    if (remaining.every((v, i) => v === sorted[i])) return op(x.name!, nchwAxes, false, out);
    const reduced = op(x.name!, nchwAxes, false, this.b.fresh(`${out}_nchw`));
    return this.b.node('Transpose', [reduced], out, { perm: remaining.map((v) => sorted.indexOf(v)) });
  }

  normAxes(axes: number[], rank: number, n: GraphNode): number[] {
    const out = [...new Set(axes.map((a) => (a < 0 ? a + rank : a)))];
    if (!out.every((a) => a >= 0 && a < rank)) this.fail(n, `axis out of range for a ${rank}-D tensor`);
    return out.sort((p, q) => p - q);
  }

  /** An activation (standalone, or fused into a conv / matmul as `kind`). */
  activation(n: GraphNode, kind: string, x: T, out: string, alpha?: T): T {
    const b = this.b;
    const xn = this.data(x, `${n.name}/x`);
    switch (kind) {
      case 'Relu':
        return { ...x, name: b.node('Relu', [xn], out) };
      case 'Relu6':
        return { ...x, name: this.clip(xn, 0, 6, out) };
      case 'Elu':
        return { ...x, name: b.node('Elu', [xn], out, { alpha: { f: 1 } }) };
      case 'LeakyRelu':
        return { ...x, name: b.node('LeakyRelu', [xn], out, { alpha: { f: this.flt(n, n.op === 'LeakyRelu' ? 'alpha' : 'leakyrelu_alpha', 0.2) } }) };
      case 'Sigmoid':
        return { ...x, name: b.node('Sigmoid', [xn], out) };
      case 'Tanh':
        return { ...x, name: b.node('Tanh', [xn], out) };
      case 'Prelu': {
        if (!alpha) this.fail(n, 'Prelu without its alpha');
        return this.elementwise(n, 'PRelu', [{ ...x, name: xn }, alpha], out);
      }
      default:
        this.fail(n, `fused activation ${kind} not supported`);
    }
  }
}

