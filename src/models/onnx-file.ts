import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import onnxProto from 'onnx-proto';
import { GraftError } from '../errors.js';
import { defaultOpset, toNum } from '../onnx/proto.js';

const { onnx } = onnxProto;
type ModelProto = InstanceType<typeof onnx.ModelProto>;

export type Dim = number | string;
export interface TensorInfo { name: string; elemType: number; shape: Dim[] }
export interface NodeInfo { name: string; opType: string; inputs: string[]; outputs: string[] }

/** What graft needs to know about an ONNX file without running it. */
export interface OnnxInfo {
  path: string;
  /** SHA-256 of the file's bytes: the model's identity in caches and runs. */
  sha256: string;
  opset: number;
  producer: string;
  inputs: TensorInfo[];
  outputs: TensorInfo[];
  nodes: NodeInfo[];
  metadata: Record<string, string>;
}

export interface LoadedOnnx { info: OnnxInfo; bytes: Uint8Array; proto: ModelProto }

function tensorInfo(v: InstanceType<typeof onnx.ValueInfoProto>): TensorInfo {
  const t = v.type?.tensorType;
  const shape = (t?.shape?.dim ?? []).map((d) => (d.dimParam ? d.dimParam : d.dimValue != null ? toNum(d.dimValue) : '?'));
  return { name: v.name ?? '', elemType: t?.elemType ?? 0, shape };
}

/**
 * Read and parse an ONNX file. Anything that is not a readable ONNX model is a GraftError naming the file; the
 * graph is not validated beyond what ONNX Runtime will check when it builds a session.
 */
export async function loadOnnx(path: string): Promise<LoadedOnnx> {
  let st;
  try {
    st = await stat(path);
  } catch {
    throw new GraftError(`model not found: ${path}`);
  }
  if (st.isDirectory()) throw new GraftError(`${path}: is a folder, not an ONNX model file`);
  const bytes = new Uint8Array(await readFile(path));
  return parseOnnx(bytes, path);
}

export function parseOnnx(bytes: Uint8Array, path: string): LoadedOnnx {
  if (bytes.length === 0) throw new GraftError(`${path}: empty file, not an ONNX model`);
  let proto: ModelProto;
  try {
    proto = onnx.ModelProto.decode(bytes);
  } catch (err) {
    throw new GraftError(`${path}: not an ONNX model (${(err as Error).message.split('\n')[0]})`);
  }
  const g = proto.graph;
  // Random bytes sometimes decode as a protobuf message; a real model has a graph with nodes, inputs and outputs.
  if (!g || !g.node?.length || !g.input?.length || !g.output?.length || toNum(proto.irVersion) <= 0) {
    throw new GraftError(`${path}: not an ONNX model (no graph with inputs, outputs and nodes)`);
  }
  const initNames = new Set((g.initializer ?? []).map((t) => t.name));
  const info: OnnxInfo = {
    path,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    opset: defaultOpset(proto),
    producer: [proto.producerName, proto.producerVersion].filter(Boolean).join(' '),
    // Older exporters list initializers among the inputs; only the real inputs are fed.
    inputs: g.input.filter((v) => !initNames.has(v.name ?? '')).map((v) => tensorInfo(v as InstanceType<typeof onnx.ValueInfoProto>)),
    outputs: g.output.map((v) => tensorInfo(v as InstanceType<typeof onnx.ValueInfoProto>)),
    nodes: g.node.map((n, i) => ({
      name: n.name || `${n.opType}_${i}`,
      opType: n.opType ?? '',
      inputs: n.input ?? [],
      outputs: n.output ?? [],
    })),
    metadata: Object.fromEntries((proto.metadataProps ?? []).map((p) => [p.key ?? '', p.value ?? ''])),
  };
  return { info, bytes, proto };
}

/**
 * The tensor a node-or-tensor name refers to: a graph output, a node's (first) output, or a node output tensor name.
 * Returns undefined when nothing matches.
 */
export function findTensor(info: OnnxInfo, name: string): string | undefined {
  if (info.outputs.some((o) => o.name === name)) return name;
  const byNode = info.nodes.find((n) => n.name === name);
  if (byNode) return byNode.outputs[0];
  if (info.nodes.some((n) => n.outputs.includes(name))) return name;
  return undefined;
}
