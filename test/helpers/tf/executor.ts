/**
 * A differentiable executor for ONNX image models on TF.js: the graph is run with TF.js ops, so `tf.grad`,
 * `tf.valueAndGrad` and `tf.variableGrads` give gradients with respect to the input and to weights (initializers
 * turned into tf.Variables with the `trainable` option).
 *
 * How it works. For each input shape a plan is built (and cached): values that do not depend on the input data
 * (initializers, Constant nodes, Shape of anything, and all arithmetic on those — PyTorch exports compute pads and
 * reshape targets this way) are evaluated on the host when the plan is built; the rest becomes a list of float32
 * TF.js steps. Convolutions run in NHWC (TF.js's layout): the input is transposed once and data moves between
 * layouts only where an op needs it (see layout.ts). Zero Pad nodes, per-channel Mul/Add (decomposed batch norm)
 * and Relu/Clip are folded into the convolutions (weights, bias, fused activation) when their weights are constants.
 * Convolutions, Gemm with constant weights, Relu/Clip and QuantizeLinear have hand-written gradients (tf.customGrad)
 * that avoid slow kernels on wasm; everything else uses TF.js's registered gradients.
 *
 *   const ex = await TfExecutor.load('model.onnx', { outputs: ['logits'], trainable: 'all' });
 *   const { value, grad } = tf.valueAndGrad((x) => tf.sum(ex.run(x).logits))(input);   // d/d input
 *   const { grads } = tf.variableGrads(() => loss(ex.run(input).logits));             // d/d weights
 *   // grads are keyed by variable name: ex.variables[initializerName].name
 *
 * Batch norm: BatchNormalization nodes run in inference mode (running statistics). With the running mean/var held as
 * non-trainable variables (option `statistics`), `run(x, { training: true })` runs those nodes in training mode
 * (PyTorch's convention: batch mean and biased variance, differentiated through) and records the running-statistic
 * updates, applied by `applyBatchNormUpdates()` after the optimiser step (momentum rule, unbiased variance).
 *
 * Notes: prefer tf.valueAndGrad to tf.grad (in tfjs 4.22 tf.grad keeps the value of f alive: one tensor leaked per
 * call). Constants live on the backend active at load; running under another backend works but copies them over.
 */
import * as tf from '@tensorflow/tfjs-core';
import onnxProto from 'onnx-proto';
import { GraftError } from '../../../src/errors.js';
import { findTensor, loadOnnx, type LoadedOnnx } from '../../../src/models/onnx-file.js';
import { ensureBackend, type TfBackendName } from './backend.js';
import { type Attrs, DT, dtypeName, evalHost, HOST_OPS, type HostVal, isFloatType, readAttributes, readTensorProto, SHAPE_OPS } from './host.js';
import { BUILDERS, type NodeCtx } from './ops.js';
import { compile, type CompiledPlan, ConstCache, optimize, Planner, type RtVal, type Val } from './plan.js';

type TensorProto = InstanceType<typeof onnxProto.onnx.TensorProto>;

export interface TfExecutorOptions {
  /** Tensors (or node names: their first output) to compute; the graph is cut there. Default: the graph outputs. */
  outputs?: string[];
  /**
   * Initializers to hold as trainable tf.Variables (by name), or 'all': every float initializer that feeds the
   * computation as data (not shape arithmetic), except batch-norm running mean and variance. Others are constants.
   */
  trainable?: string[] | 'all';
  /** TF.js backend to use (made active when loading). Default: the active one, else GRAFT_TF_BACKEND, else wasm. */
  backend?: TfBackendName;
  /** Fold pads, per-channel affine ops and activations into convolutions (default true). */
  optimize?: boolean;
  /**
   * Running means and variances (inputs 3 and 4 of BatchNormalization nodes, by initializer name) to hold as
   * non-trainable tf.Variables (`statistics`). A node whose mean and variance are both listed runs in training mode
   * in `run(x, { training: true })`: batch statistics, running-statistic updates recorded (see
   * `applyBatchNormUpdates`). In inference mode (the default) it uses the variables' current values.
   */
  statistics?: string[];
}

export interface RunOptions {
  /**
   * Training mode: BatchNormalization nodes whose running statistics are held as `statistics` normalise with the
   * batch's mean and (biased) variance, differentiably, and the batch mean and unbiased variance are recorded for
   * `applyBatchNormUpdates` (PyTorch's conventions). Other nodes are unaffected. Default false (inference mode).
   */
  training?: boolean;
}

/** A batch-norm node's statistics in a training-mode plan: slots of the batch mean and unbiased variance. */
interface BnStat { mean: string; variance: string; meanSlot: number; varSlot: number; momentum: number }

interface PendingBnUpdate { mean: tf.Variable; variance: tf.Variable; bm: tf.Tensor; bv: tf.Tensor; momentum: number }

interface GNode { index: number; name: string; op: string; domain: string; inputs: string[]; outputs: string[]; attrs: Attrs }

interface Plan {
  compiled: CompiledPlan;
  outputs: { name: string; slot: number }[];
  owned: tf.Tensor[];
  checked: boolean;
  /** Training-mode plans: the batch statistics to record after each run. */
  bnStats: BnStat[];
}

export interface StepTiming { label: string; nodes: string[]; ms: number }

const MAX_PLANS = 8;
const DEBUG = process.env.GRAFT_TF_DEBUG === '1';

function describe(v: Val | undefined): string {
  if (!v) return '-';
  if (v.kind === 'rt') return `rt[${v.shape}]@${v.perm}`;
  return `host(${dtypeName(v.dtype)})[${v.shape}]${v.data.length <= 8 ? `=${Array.from(v.data).join(',')}` : ''}`;
}
let executorCount = 0;

function graphError(path: string, node: GNode, err: unknown): GraftError {
  if (err instanceof GraftError) return err;
  const msg = String((err as Error)?.message ?? err).split('\n')[0];
  return new GraftError(`${path}: node '${node.name}' (${node.op}): ${msg}`);
}

/** Needed nodes in a valid execution order (producers before consumers), from the requested tensors back. */
function orderNodes(nodes: GNode[], targets: string[], available: Set<string>): GNode[] {
  const producer = new Map<string, GNode>();
  for (const n of nodes) for (const o of n.outputs) if (o) producer.set(o, n);
  const state = new Map<GNode, 1 | 2>();
  const order: GNode[] = [];
  for (const t of targets) {
    const root = producer.get(t);
    if (!root) continue;
    const stack: [GNode, number][] = [[root, 0]];
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      const [n, i] = top;
      if (i === 0) {
        if (state.get(n) === 2) {
          stack.pop();
          continue;
        }
        state.set(n, 1);
      }
      if (i < n.inputs.length) {
        top[1]++;
        const name = n.inputs[i]!;
        if (!name || available.has(name)) continue;
        const p = producer.get(name);
        if (!p) continue; // reported when planning
        const st = state.get(p);
        if (st === 1) throw new GraftError(`graph has a cycle through node '${p.name}'`);
        if (st !== 2) stack.push([p, 0]);
        continue;
      }
      state.set(n, 2);
      order.push(n);
      stack.pop();
    }
  }
  return order;
}

export class TfExecutor {
  /** Name of the graph input fed by `run`. */
  readonly inputName: string;
  /** Its declared shape (symbolic dims as strings). */
  readonly inputShape: (number | string)[];
  /** Output names, as asked for (keys of `run`'s result). */
  readonly outputs: string[];
  /** The trainable weights, by initializer name (ONNX layout and shape). */
  readonly variables: Record<string, tf.Variable> = {};
  /** Batch-norm running statistics held as non-trainable variables (option `statistics`), by initializer name. */
  readonly statistics: Record<string, tf.Variable> = {};
  readonly opset: number;

  private readonly path: string;
  private readonly nodes: GNode[];
  private readonly outputTensors: string[];
  private readonly initializers = new Map<string, TensorProto>();
  private readonly initCache = new Map<string, HostVal>();
  private readonly cache = new ConstCache();
  private readonly plans = new Map<string, Plan>();
  private readonly optimizeOn: boolean;
  private disposed = false;
  private pending: PendingBnUpdate[] = [];

  private constructor(model: LoadedOnnx, opts: TfExecutorOptions, readonly backend: TfBackendName) {
    const { info, proto } = model;
    this.path = info.path;
    this.opset = info.opset || 13;
    this.optimizeOn = opts.optimize ?? true;
    const g = proto.graph!;
    for (const t of g.initializer ?? []) this.initializers.set(t.name ?? '', t as TensorProto);
    if (info.inputs.length === 0) throw new GraftError(`${this.path}: the graph has no input`);
    this.nodes = (g.node ?? []).map((n, i) => ({
      index: i,
      name: n.name || `${n.opType}_${i}`,
      op: n.opType ?? '',
      domain: n.domain ?? '',
      inputs: n.input ?? [],
      outputs: n.output ?? [],
      attrs: {},
    }));

    // Outputs.
    const asked = opts.outputs && opts.outputs.length ? opts.outputs : info.outputs.map((o) => o.name);
    this.outputs = [...asked];
    this.outputTensors = asked.map((name) => {
      const t = findTensor(info, name) ?? (info.inputs.some((i) => i.name === name) ? name : undefined);
      if (!t) throw new GraftError(`${this.path}: no tensor or node named '${name}'`);
      return t;
    });

    // The nodes needed, in order; which graph inputs they read.
    const inputNames = new Set(info.inputs.map((i) => i.name));
    const available = new Set([...inputNames, ...this.initializers.keys()]);
    let order: GNode[];
    try {
      order = orderNodes(this.nodes, this.outputTensors, available);
    } catch (err) {
      throw err instanceof GraftError ? new GraftError(`${this.path}: ${err.message}`) : err;
    }
    const used = new Set<string>(this.outputTensors);
    for (const n of order) for (const i of n.inputs) used.add(i);
    const fed = info.inputs.filter((i) => used.has(i.name));
    if (fed.length > 1) throw new GraftError(`${this.path}: the outputs depend on ${fed.length} graph inputs (${fed.map((i) => i.name).join(', ')}); only one is supported`);
    const input = fed[0] ?? info.inputs[0]!;
    this.inputName = input.name;
    this.inputShape = input.shape;
    if (input.elemType !== DT.FLOAT) throw new GraftError(`${this.path}: input '${input.name}' is ${dtypeName(input.elemType)}; only float inputs are supported`);

    // Every op must be supported: fail now, naming the node.
    for (const n of order) {
      const domainOk = n.domain === '' || n.domain === 'ai.onnx';
      if (!domainOk || (!BUILDERS[n.op] && !HOST_OPS.has(n.op))) {
        throw new GraftError(`${this.path}: unsupported ONNX operator '${domainOk ? n.op : `${n.domain}.${n.op}`}' in node '${n.name}'`);
      }
      n.attrs = readAttributes((g.node![n.index]!.attribute ?? []) as never);
    }
    this.order = order;

    // Trainable weights.
    const names = this.trainableNames(opts.trainable);
    const id = ++executorCount;
    for (const name of names) {
      const h = this.initializer(name)!;
      this.variables[name] = tf.variable(tf.tensor(h.data as Float32Array, h.shape, 'float32'), true, `graft${id}/${name}`);
    }
    for (const name of new Set(opts.statistics ?? [])) {
      const isStat = order.some((n) => n.op === 'BatchNormalization' && (n.inputs[3] === name || n.inputs[4] === name));
      if (!isStat) throw new GraftError(`${this.path}: '${name}' is not the running mean or variance of a BatchNormalization node`);
      if (this.variables[name]) throw new GraftError(`${this.path}: '${name}' cannot be both trainable and a running statistic`);
      const h = this.initializer(name);
      if (!h || !isFloatType(h.dtype)) throw new GraftError(`${this.path}: running statistic '${name}' is not a float initializer`);
      this.statistics[name] = tf.variable(tf.tensor(Float32Array.from(h.data as Float32Array), h.shape, 'float32'), false, `graft${id}/stat/${name}`);
    }

    // Build the plan for the declared shape now, so that problems show at load time.
    this.planFor(this.defaultShape());
  }

  private order: GNode[];

  /**
   * Load an ONNX model (a path, or one already read with `loadOnnx`). Unsupported operators and graphs that cannot
   * be planned fail here with a GraftError naming the node.
   */
  static async load(src: string | LoadedOnnx, opts: TfExecutorOptions = {}): Promise<TfExecutor> {
    const backend = await ensureBackend(opts.backend);
    const model = typeof src === 'string' ? await loadOnnx(src) : src;
    return new TfExecutor(model, opts, backend);
  }

  /** Names of the variables (trainable initializers). */
  get trainable(): string[] {
    return Object.keys(this.variables);
  }

  private defaultShape(): number[] {
    return this.inputShape.map((d) => (typeof d === 'number' && d > 0 ? d : 1));
  }

  private initializer(name: string): HostVal | undefined {
    let h = this.initCache.get(name);
    if (!h) {
      const t = this.initializers.get(name);
      if (!t) return undefined;
      try {
        h = readTensorProto(t, `init:${name}`);
      } catch (err) {
        throw new GraftError(`${this.path}: initializer '${name}': ${(err as Error).message}`);
      }
      this.initCache.set(name, h);
    }
    return h;
  }

  private trainableNames(t: TfExecutorOptions['trainable']): string[] {
    if (!t) return [];
    if (t === 'all') {
      // Plan once without variables, noting the float initializers consumed as data by run-time ops.
      const weights = new Set<string>();
      this.buildPlan(this.defaultShape(), weights).owned.forEach((x) => x.dispose());
      return [...weights];
    }
    for (const name of t) {
      const h = this.initializers.get(name);
      if (!h) throw new GraftError(`${this.path}: no initializer named '${name}' to train`);
      if (h.dataType !== DT.FLOAT) throw new GraftError(`${this.path}: initializer '${name}' is ${dtypeName(h.dataType ?? 0)}; only float weights can be trained`);
    }
    return [...new Set(t)];
  }

  private planFor(shape: readonly number[], training = false): Plan {
    const key = shape.join('x') + (training ? '|train' : '');
    let plan = this.plans.get(key);
    if (plan) {
      // Most recently used last.
      this.plans.delete(key);
      this.plans.set(key, plan);
      return plan;
    }
    plan = this.buildPlan([...shape], undefined, training);
    if (this.plans.size >= MAX_PLANS) {
      const [oldKey, old] = this.plans.entries().next().value as [string, Plan];
      this.plans.delete(oldKey);
      old.owned.forEach((x) => x.dispose());
    }
    this.plans.set(key, plan);
    return plan;
  }

  /**
   * Build the plan for an input of `shape`. With `weights` given (the 'all' probe): no variables, and the names of
   * float initializers consumed as run-time data are collected into it.
   */
  private buildPlan(shape: number[], weights?: Set<string>, training = false): Plan {
    const owned: tf.Tensor[] = [];
    const p = new Planner(this.cache, owned);
    const vals = new Map<string, Val>();
    const bnStats: BnStat[] = [];
    vals.set(this.inputName, p.input(shape));
    // Which initializers each host value derives from (for the 'all' probe).
    const sources = new Map<HostVal, Set<string>>();
    const lookup = (name: string, node: GNode): Val => {
      const v = vals.get(name);
      if (v) return v;
      const variable = weights ? undefined : (this.variables[name] ?? this.statistics[name]);
      if (variable) {
        const rt = p.source(name, () => variable, [...variable.shape]);
        vals.set(name, rt);
        return rt;
      }
      const h = this.initializer(name);
      if (h) {
        vals.set(name, h);
        if (weights && isFloatType(h.dtype)) sources.set(h, new Set([name]));
        return h;
      }
      throw new GraftError(`${this.path}: node '${node.name}' (${node.op}) reads '${name}', which no node produces`);
    };
    try {
      for (const node of this.order) {
        const inputs = node.inputs.map((n) => (n ? lookup(n, node) : undefined));
        let outs: (Val | undefined)[];
        try {
          outs = this.evalNode(p, node, inputs, weights ? { sources, weights } : undefined, training ? bnStats : undefined);
        } catch (err) {
          throw graphError(this.path, node, err);
        }
        node.outputs.forEach((o, i) => {
          const v = outs[i];
          if (o && v) vals.set(o, v);
        });
        if (DEBUG) process.stderr.write(`[tf-plan] ${node.name} ${node.op} -> ${outs.map(describe).join(' ')}\n`);
      }
      const outputs = this.outputTensors.map((t, i) => {
        const v = vals.get(t);
        if (!v) throw new GraftError(`${this.path}: output '${this.outputs[i]}' was not computed`);
        const rt = v.kind === 'rt' ? p.toIdentity(v) : p.constRt(v);
        return { name: this.outputs[i]!, slot: rt.slot };
      });
      const keep = new Set(outputs.map((o) => o.slot));
      for (const b of bnStats) keep.add(b.meanSlot).add(b.varSlot);
      const steps = this.optimizeOn ? optimize(p.steps, keep) : p.steps;
      const compiled = compile(p, steps, keep);
      return { compiled, outputs, owned, checked: false, bnStats };
    } catch (err) {
      owned.forEach((x) => x.dispose());
      throw err;
    }
  }

  private evalNode(
    p: Planner,
    node: GNode,
    inputs: (Val | undefined)[],
    probe?: { sources: Map<HostVal, Set<string>>; weights: Set<string> },
    bnStats?: BnStat[],
  ): (Val | undefined)[] {
    const { op } = node;
    const allHost = inputs.every((v) => !v || v.kind === 'host');
    const keyed = inputs.every((v) => !v || (v.kind === 'host' && v.key !== undefined));
    const withKeys = (outs: HostVal[]): HostVal[] =>
      outs.map((h, i) => {
        const o = { ...h };
        if (keyed) o.key = `n${node.index}:${i}`;
        else delete o.key;
        if (probe) {
          const from = new Set<string>();
          for (const v of inputs) if (v && v.kind === 'host') for (const s of probe.sources.get(v) ?? []) from.add(s);
          if (from.size && isFloatType(o.dtype)) probe.sources.set(o, from);
        }
        return o;
      });
    const hostCtx = { op, opset: this.opset, attrs: node.attrs, inputs, nOutputs: node.outputs.length };
    if (SHAPE_OPS.has(op) && inputs[0]) return withKeys(evalHost(hostCtx));
    if (allHost && HOST_OPS.has(op)) return withKeys(evalHost(hostCtx));
    const build = BUILDERS[op];
    if (!build) {
      const i = inputs.findIndex((v) => v && v.kind === 'rt');
      throw new Error(`input '${node.inputs[i]}' depends on the input data, which ${op} cannot take here`);
    }
    if (allHost) return withKeys(this.foldWithTf(node, inputs));
    const ctx: NodeCtx = { p, name: node.name, op, opset: this.opset, attrs: node.attrs, inputs, nOutputs: node.outputs.length };
    const [meanName, varName] = [node.inputs[3], node.inputs[4]];
    if (bnStats && op === 'BatchNormalization' && meanName && varName && this.statistics[meanName] && this.statistics[varName]) {
      ctx.bnTrain = (m, v, momentum) => bnStats.push({ mean: meanName, variance: varName, meanSlot: m.slot, varSlot: v.slot, momentum });
    }
    if (probe) {
      // Inputs a builder reads as host values (shapes, pads, axes...) are not weights; the others are.
      const asHost = new Set<number>();
      const outs = withHostTracking(ctx, asHost, () => build(ctx));
      inputs.forEach((v, i) => {
        if (!v || v.kind !== 'host' || asHost.has(i) || !isFloatType(v.dtype)) return;
        if (op === 'BatchNormalization' && (i === 3 || i === 4)) return;
        for (const s of probe.sources.get(v) ?? []) probe.weights.add(s);
      });
      return outs;
    }
    return build(ctx);
  }

  /** Constant-fold a node with a builder but no host evaluation (e.g. a Conv of constants) by running it once. */
  private foldWithTf(node: GNode, inputs: (Val | undefined)[]): HostVal[] {
    const cache = new ConstCache();
    const owned: tf.Tensor[] = [];
    let result: HostVal[] = [];
    try {
      tf.tidy(() => {
        const sub = new Planner(cache, owned);
        const ctx: NodeCtx = { p: sub, name: node.name, op: node.op, opset: this.opset, attrs: node.attrs, inputs, nOutputs: node.outputs.length };
        const outs = BUILDERS[node.op]!(ctx);
        const rts = outs.map((v) => (v && v.kind === 'rt' ? sub.toIdentity(v) : v));
        const keep = new Set(rts.filter((v): v is RtVal => !!v && v.kind === 'rt').map((v) => v.slot));
        const compiled = compile(sub, sub.steps, keep);
        const vals = execute(compiled, undefined, false);
        result = rts.map((v) => {
          if (!v || v.kind === 'host') return v as HostVal;
          const t = vals[v.slot]!;
          const dtype = t.dtype === 'int32' ? DT.INT64 : t.dtype === 'bool' ? DT.BOOL : DT.FLOAT;
          const data = t.dtype === 'float32' ? Float32Array.from(t.dataSync() as Float32Array) : Float64Array.from(t.dataSync() as Int32Array);
          return { kind: 'host', dtype, shape: [...t.shape], data } satisfies HostVal;
        });
      });
      return result;
    } finally {
      owned.forEach((x) => x.dispose());
      cache.dispose();
    }
  }

  private checkInput(input: tf.Tensor): void {
    if (this.disposed) throw new GraftError('TfExecutor used after dispose()');
    const want = this.inputShape;
    const got = input.shape;
    const bad = got.length !== want.length || want.some((d, i) => typeof d === 'number' && d > 0 && d !== got[i]);
    if (bad) throw new GraftError(`${this.path}: input of shape [${got.join(',')}] does not fit '${this.inputName}' [${want.join(',')}]`);
    if (input.dtype !== 'float32') throw new GraftError(`${this.path}: input must be float32, got ${input.dtype}`);
  }

  /**
   * Run the model on `input` (NCHW like the ONNX graph). Returns the requested outputs (in ONNX layout); callable
   * inside tf.grad / tf.variableGrads / tf.tidy. The caller owns (and disposes) the returned tensors.
   */
  run(input: tf.Tensor, opts: RunOptions = {}): Record<string, tf.Tensor> {
    this.checkInput(input);
    const training = !!opts.training && Object.keys(this.statistics).length > 0;
    const plan = this.planFor(input.shape, training);
    return tf.tidy(() => {
      const vals = execute(plan.compiled, input, !plan.checked);
      plan.checked = true;
      for (const b of plan.bnStats) {
        this.pending.push({
          mean: this.statistics[b.mean]!,
          variance: this.statistics[b.variance]!,
          bm: tf.keep(vals[b.meanSlot]!),
          bv: tf.keep(vals[b.varSlot]!),
          momentum: b.momentum,
        });
      }
      const out: Record<string, tf.Tensor> = {};
      for (const o of plan.outputs) {
        const t = vals[o.slot]!;
        out[o.name] = plan.compiled.persistent[o.slot] ? tf.clone(t) : t;
      }
      return out;
    });
  }

  /** Number of running-statistic updates recorded by training-mode runs and not yet applied. */
  get pendingBatchNormUpdates(): number {
    return this.pending.length;
  }

  /**
   * Apply the running-statistic updates recorded by training-mode runs, in order (ONNX/PyTorch momentum rule:
   * running = momentum · running + (1 − momentum) · batch, the variance with the unbiased batch variance). Call it
   * outside any gradient tape, after the optimiser step. Returns the number of updates applied.
   */
  applyBatchNormUpdates(): number {
    const n = this.pending.length;
    for (const u of this.pending) {
      tf.tidy(() => {
        u.mean.assign(tf.add(tf.mul(u.mean, u.momentum), tf.mul(u.bm, 1 - u.momentum)));
        u.variance.assign(tf.add(tf.mul(u.variance, u.momentum), tf.mul(u.bv, 1 - u.momentum)));
      });
    }
    this.discardBatchNormUpdates();
    return n;
  }

  /** Drop the recorded running-statistic updates (e.g. after a step whose loss was not finite). */
  discardBatchNormUpdates(): void {
    for (const u of this.pending) {
      u.bm.dispose();
      u.bv.dispose();
    }
    this.pending = [];
  }

  /** Run once, timing every step (TF.js on cpu and wasm runs kernels synchronously). For benchmarks. */
  timeSteps(input: tf.Tensor): StepTiming[] {
    this.checkInput(input);
    const plan = this.planFor(input.shape);
    const times: StepTiming[] = [];
    tf.tidy(() => {
      execute(plan.compiled, input, false, (label, nodes, ms) => times.push({ label, nodes, ms }));
    });
    return times;
  }

  /** Number of TF.js steps the plan for `shape` runs (after folding). */
  stepCount(shape: number[] = this.defaultShape()): number {
    return this.planFor(shape).compiled.steps.length;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const p of this.plans.values()) p.owned.forEach((x) => x.dispose());
    this.plans.clear();
    this.cache.dispose();
    this.discardBatchNormUpdates();
    for (const v of Object.values(this.variables)) v.dispose();
    for (const v of Object.values(this.statistics)) v.dispose();
  }
}

/** Run a compiled plan. Returns the slot values still alive (outputs). */
function execute(
  plan: CompiledPlan,
  input: tf.Tensor | undefined,
  check: boolean,
  timer?: (label: string, nodes: string[], ms: number) => void,
): (tf.Tensor | undefined)[] {
  const vals: (tf.Tensor | undefined)[] = new Array(plan.nslots);
  if (input) vals[0] = input;
  for (const st of plan.steps) {
    const xs = st.ins.map((i) => vals[i]!);
    const t0 = timer ? performance.now() : 0;
    const r = st.run(xs);
    // wasm and cpu kernels run synchronously: the wall time of the call is the step's time.
    if (timer) timer(st.label, st.nodes, performance.now() - t0);
    const outs = Array.isArray(r) ? r : [r];
    outs.forEach((t, i) => {
      // Never let two slots hold the same tensor object (freeing one would free the other).
      const o = xs.includes(t) ? tf.clone(t) : t;
      const slot = st.outs[i]!;
      if (check) {
        const want = plan.phys[slot]!;
        if (o.shape.length !== want.length || o.shape.some((d, k) => d !== want[k])) {
          throw new Error(`internal: step ${st.label} made [${o.shape}] where [${want}] was planned`);
        }
      }
      vals[slot] = o;
    });
    for (const f of st.frees) {
      const t = vals[f];
      vals[f] = undefined;
      if (t && t !== input) t.dispose();
    }
  }
  return vals;
}

/** Call `f` with `ctx`'s host-input reads recorded into `asHost` (see ops.ts `host`). */
function withHostTracking<T>(ctx: NodeCtx, asHost: Set<number>, f: () => T): T {
  ctx.hostReads = asHost;
  try {
    return f();
  } finally {
    delete ctx.hostReads;
  }
}

