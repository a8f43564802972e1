/**
 * The one ONNX graph module (src/onnx/) and the session factory, on tiny graphs built here: producers, consumers,
 * ancestors, int64 values, cutting at a tensor (prefix and suffix), pruning, initializers.
 */
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import Long from 'long';
import * as ort from 'onnxruntime-node';
import { createSession, executionProviders, sessionOptionsFor } from '../src/engine/ort.js';
import { GraftError } from '../src/errors.js';
import { identityModel } from '../src/onnx/build.js';
import { addOutputs, pruneGraph, replaceInitializers, suffixModel, withOutputs } from '../src/onnx/cut.js';
import { defaultOpset, DT, intAttr, intsAttr, onnx, tensorValues, toNum } from '../src/onnx/proto.js';
import { ancestors, consumerIndex, producerIndex, protoNodes, readsOf } from '../src/onnx/walk.js';
import { buildLoaded, buildOnnx, type GraphSpec } from './helpers/onnx-builder.js';

/**
 * x [N,2] → a = Relu(x) → b = Add(a, a) → y = Mul(b, w)       (the main branch)
 *             a ────────→ side = Neg(a) → z = Sub(side, k)    (a branch only z needs, with its own constant)
 */
function twoBranches(): GraphSpec {
  return {
    inputs: [{ name: 'x', shape: ['N', 2] }],
    outputs: ['y', 'z'],
    initializers: [
      { name: 'w', dims: [2], values: [3, -1] },
      { name: 'k', dims: [1], values: [10] },
    ],
    nodes: [
      { op: 'Relu', name: 'relu', inputs: ['x'], outputs: ['a'] },
      { op: 'Add', name: 'add', inputs: ['a', 'a'], outputs: ['b'] },
      { op: 'Mul', name: 'mul', inputs: ['b', 'w'], outputs: ['y'] },
      { op: 'Neg', name: 'neg', inputs: ['a'], outputs: ['side'] },
      { op: 'Sub', name: 'sub', inputs: ['side', 'k'], outputs: ['z'] },
    ],
  };
}

async function run(bytes: Uint8Array, feeds: Record<string, { data: Float32Array; dims: number[] }>): Promise<Record<string, ort.Tensor>> {
  const s = await createSession(bytes, { where: 'test.onnx', threads: 1 });
  try {
    return await s.run(Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, new ort.Tensor('float32', v.data, v.dims)])));
  } finally {
    await s.release();
  }
}

const X = { data: Float32Array.from([1, -2, 0.5, 4]), dims: [2, 2] };

describe('onnx/proto: int64 values and attributes', () => {
  test('toNum reads Long objects (as protobufjs decodes int64), bigints, numbers and absent values', () => {
    assert.equal(toNum(Long.fromNumber(2 ** 40 + 3)), 2 ** 40 + 3);
    assert.equal(toNum(Long.fromNumber(-7)), -7);
    assert.equal(toNum(123n), 123);
    assert.equal(toNum(5), 5);
    assert.equal(toNum('12'), 12);
    assert.equal(toNum(undefined), 0);
    assert.equal(toNum(null), 0);
  });

  test('attributes and opset decoded from bytes come back as plain numbers', () => {
    const bytes = buildOnnx({
      inputs: [{ name: 'x', shape: [1, 2, 3] }],
      outputs: ['t'],
      opset: 11,
      nodes: [{ op: 'Transpose', name: 'tr', inputs: ['x'], outputs: ['t'], attrs: { perm: { ints: [2, 0, 1] } } }],
    });
    const proto = onnx.ModelProto.decode(bytes);
    const node = proto.graph!.node![0]!;
    // The decoded values really are Longs: what toNum is for.
    assert.equal(typeof node.attribute![0]!.ints![0], 'object');
    assert.deepEqual(intsAttr(node, 'perm'), [2, 0, 1]);
    assert.equal(intsAttr(node, 'axes'), undefined);
    assert.equal(intAttr(node, 'axis', 4), 4);
    assert.equal(intAttr(node, 'axis'), undefined);
    assert.equal(defaultOpset(proto), 11);
  });

  test('tensorValues reads typed fields and raw bytes alike', () => {
    assert.deepEqual([...tensorValues(onnx.TensorProto.create({ dataType: DT.FLOAT, dims: [2], floatData: [1.5, -2] }))], [1.5, -2]);
    assert.deepEqual([...tensorValues(onnx.TensorProto.create({ dataType: DT.INT64, dims: [2], int64Data: [Long.fromNumber(2 ** 35), Long.fromNumber(-1)] }))], [2 ** 35, -1]);
    const raw = new Uint8Array(new BigInt64Array([9n, -4n]).buffer);
    assert.deepEqual([...tensorValues(onnx.TensorProto.create({ dataType: DT.INT64, dims: [2], rawData: raw }))], [9, -4]);
    assert.throws(() => tensorValues(onnx.TensorProto.create({ name: 'h', dataType: 10, dims: [1], rawData: new Uint8Array(2) })), /'h' has element type 10/);
  });
});

describe('onnx/walk: producers, consumers, ancestors', () => {
  const m = buildLoaded(twoBranches());
  const nodes = m.info.nodes;
  const names = (ix: Iterable<number>) => [...ix].map((i) => nodes[i]!.name).sort();

  test('producers map each computed tensor to its node; inputs and initializers have none', () => {
    const p = producerIndex(nodes);
    assert.equal(nodes[p.get('a')!]!.name, 'relu');
    assert.equal(nodes[p.get('z')!]!.name, 'sub');
    assert.equal(p.has('x'), false);
    assert.equal(p.has('w'), false);
    assert.equal(p.size, 5);
  });

  test('consumers list each reading node once, in graph order', () => {
    const c = consumerIndex(nodes);
    assert.deepEqual(names(c.get('a')!), ['add', 'neg']);
    assert.deepEqual(c.get('a'), [1, 3], 'Add(a, a) is one consumer, not two');
    assert.deepEqual(names(c.get('w')!), ['mul']);
    assert.equal(c.has('y'), false);
  });

  test('ancestors of a tensor are the nodes it depends on, and not the other branch', () => {
    const y = ancestors(nodes, ['y']);
    assert.deepEqual(names(y.nodes), ['add', 'mul', 'relu']);
    assert.deepEqual([...y.leaves].sort(), ['w', 'x']);
    assert.ok(!y.tensors.has('side') && !y.tensors.has('k'));
    const z = ancestors(nodes, ['z']);
    assert.deepEqual(names(z.nodes), ['neg', 'relu', 'sub']);
  });

  test('a walk stops at a cut: the cut tensor is reached, its producer is not', () => {
    const y = ancestors(nodes, ['y'], { stopAt: new Set(['a']) });
    assert.deepEqual(names(y.nodes), ['add', 'mul']);
    assert.ok(y.tensors.has('a'));
    assert.deepEqual([...y.leaves], ['w'], 'the cut is not a leaf');
  });

  test('a subgraph reads outer tensors without listing them as inputs; readsOf finds them', () => {
    const body = onnx.GraphProto.create({
      name: 'then',
      output: [onnx.ValueInfoProto.create({ name: 'inner' })],
      node: [onnx.NodeProto.create({ opType: 'Neg', input: ['outer'], output: ['inner'] }), onnx.NodeProto.create({ opType: 'Abs', input: ['inner'], output: ['inner2'] })],
    });
    const ifNode = onnx.NodeProto.create({ opType: 'If', input: ['cond'], output: ['r'], attribute: [onnx.AttributeProto.create({ name: 'then_branch', type: 5, g: body })] });
    assert.deepEqual(readsOf(ifNode), ['cond', 'outer'], "the body's own 'inner' is not a read of the If");
    const producer = onnx.NodeProto.create({ opType: 'Relu', input: ['x'], output: ['outer'] });
    const deps = ancestors(protoNodes([producer, ifNode]), ['r']);
    assert.deepEqual([...deps.nodes].sort(), [0, 1], 'the If depends on the node making what its branch reads');
  });
});

describe('onnx/cut: prefix, suffix, pruning, initializers', () => {
  test('withOutputs cuts the prefix at an inner tensor; untyped outputs let ORT infer int64 ones', async () => {
    const m = buildLoaded(twoBranches());
    const out = await run(withOutputs(m.bytes, ['b', 'b']), { x: X });
    assert.deepEqual(Object.keys(out), ['b']);
    assert.deepEqual([...(out.b!.data as Float32Array)], [2, 0, 1, 8]);
    const withShape = buildLoaded({ ...twoBranches(), nodes: [...twoBranches().nodes, { op: 'Shape', name: 'shape', inputs: ['a'], outputs: ['s'] }] });
    const s = await run(withOutputs(withShape.bytes, ['s']), { x: X });
    assert.equal(s.s!.type, 'int64');
    assert.deepEqual(Array.from(s.s!.data as BigInt64Array, Number), [2, 2]);
    const typed = onnx.ModelProto.decode(withOutputs(m.bytes, ['b', 'y'], DT.FLOAT)).graph!.output!;
    assert.deepEqual(typed.map((o) => [o.name, o.type?.tensorType?.elemType]), [['b', DT.FLOAT], ['y', DT.FLOAT]]);
  });

  test('addOutputs keeps the outputs a graph has and adds inner tensors after them', async () => {
    const m = buildLoaded(twoBranches());
    assert.equal(addOutputs(m.bytes, []), m.bytes, 'nothing to add: the same bytes');
    const bytes = addOutputs(m.bytes, ['side', 'y'], DT.FLOAT);
    assert.deepEqual(onnx.ModelProto.decode(bytes).graph!.output!.map((o) => o.name), ['y', 'z', 'side']);
    const out = await run(bytes, { x: X });
    assert.deepEqual(Array.from(out.side!.data as Float32Array, (v) => v + 0), [-1, 0, -0.5, -4], '-0 read as 0');
  });

  test('suffixModel starts the graph at the cut and computes what the full graph computes from there', async () => {
    const m = buildLoaded(twoBranches(), 'two.onnx');
    const suffix = suffixModel(m, 'a', [2], ['y']);
    assert.equal(suffix.info.path, 'two.onnx#from:a');
    assert.deepEqual(suffix.info.inputs.map((i) => [i.name, i.shape]), [['a', ['batch', 2]]]);
    assert.deepEqual(suffix.info.nodes.map((n) => n.name), ['add', 'mul']);
    assert.deepEqual(suffix.proto.graph!.initializer!.map((t) => t.name), ['w'], 'k belongs to the other branch');
    const a = { data: Float32Array.from([1, 0, 0.5, 4]), dims: [2, 2] };
    const [full, part] = [await run(m.bytes, { x: X }), await run(suffix.bytes, { a })];
    assert.deepEqual([...(part.y!.data as Float32Array)], [...(full.y!.data as Float32Array)]);
  });

  test('suffixModel refuses a cut that a skip connection crosses, naming the file', () => {
    const spec = twoBranches();
    spec.nodes.push({ op: 'Add', name: 'skip', inputs: ['y', 'x'], outputs: ['y2'] });
    const m = buildLoaded(spec, 'skip.onnx');
    assert.throws(() => suffixModel(m, 'a', [2], ['y2']), (e: unknown) => e instanceof GraftError && /^skip\.onnx: cannot cut at 'a'.*skip connection/.test((e as Error).message));
  });

  test('pruneGraph keeps only what the targets need, initializers included', () => {
    const m = buildLoaded(twoBranches());
    const g = onnx.ModelProto.decode(m.bytes).graph!;
    const kept = pruneGraph(g, ['z']);
    assert.deepEqual(g.node!.map((n) => n.name), ['relu', 'neg', 'sub']);
    assert.deepEqual(g.initializer!.map((t) => t.name), ['k']);
    assert.deepEqual(g.input!.map((v) => v.name), ['x']);
    assert.equal(kept.nodes.size, 3);
  });

  test('replaceInitializers changes the weights the graph computes with; a wrong size names the file', async () => {
    const m = buildLoaded(twoBranches(), 'w.onnx');
    const out = await run(replaceInitializers(m, { w: Float32Array.from([1, 1]) }), { x: X });
    assert.deepEqual([...(out.y!.data as Float32Array)], [2, 0, 1, 8]);
    assert.throws(() => replaceInitializers(m, { w: new Float32Array(3) }), /w\.onnx: initializer 'w': 3 values for 2 elements$/);
    assert.throws(() => replaceInitializers(m, { nope: new Float32Array(1) }), /no initializers named nope in w\.onnx/);
  });

  test('identityModel passes its input through (the prefix of a graph cut at its own input)', async () => {
    const id = identityModel({ name: 'img', shape: ['N', 2] }, 'out', 'model.onnx');
    assert.equal(id.info.path, 'model.onnx');
    const out = await run(id.bytes, { img: X });
    assert.deepEqual([...(out.out!.data as Float32Array)], [...X.data]);
  });
});

describe('session factory', () => {
  test("sessions get the project's options: threads within the cores, no spinning, memory patterns off", () => {
    const o = sessionOptionsFor({ threads: 999 });
    assert.equal(o.intraOpNumThreads, availableParallelism());
    assert.equal(o.interOpNumThreads, 1);
    assert.equal(o.graphOptimizationLevel, 'all');
    assert.equal(o.enableMemPattern, false);
    assert.deepEqual(o.executionProviders, executionProviders());
    assert.deepEqual(o.extra, { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } });
    const p = sessionOptionsFor({ threads: 1, spinning: true, optimization: 'disabled', memPattern: true });
    assert.equal(p.intraOpNumThreads, 1);
    assert.equal(p.graphOptimizationLevel, 'disabled');
    assert.equal(p.enableMemPattern, true);
    assert.equal((p.extra as { session: { intra_op: { allow_spinning: string } } }).session.intra_op.allow_spinning, '1');
    assert.equal(sessionOptionsFor({}).intraOpNumThreads, availableParallelism(), 'default: all cores');
  });

  test('a model ONNX Runtime cannot load is a GraftError naming it and what it is', async () => {
    const bad = buildOnnx({ inputs: [{ name: 'x', shape: [1] }], outputs: ['y'], nodes: [{ op: 'NoSuchOp', inputs: ['x'], outputs: ['y'] }] });
    await assert.rejects(createSession(bad, { where: 'bad.onnx', what: 'the gradient graph', threads: 1 }), (e: unknown) => e instanceof GraftError && /^bad\.onnx: ONNX Runtime cannot load the gradient graph: /.test((e as Error).message));
  });

  test('no code in src/ makes an ONNX Runtime session other than through createSession', async () => {
    const files = (await readdir('src', { recursive: true })).filter((f) => f.endsWith('.ts'));
    const offenders: string[] = [];
    for (const f of files) {
      const text = await readFile(join('src', f), 'utf8');
      if (/InferenceSession\.create\(/.test(text) && f !== join('engine', 'ort.ts')) offenders.push(f);
    }
    assert.deepEqual(offenders, []);
  });
});
