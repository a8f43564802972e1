/**
 * The onnx-proto types graft works with, and reading their fields: int64 values (protobufjs gives them as Long
 * objects), attributes, the default-domain opset and the numbers of a tensor.
 */
import onnxProto from 'onnx-proto';

export const { onnx } = onnxProto;
export type ModelProto = InstanceType<typeof onnx.ModelProto>;
export type GraphProto = InstanceType<typeof onnx.GraphProto>;
export type NodeProto = InstanceType<typeof onnx.NodeProto>;
export type TensorProto = InstanceType<typeof onnx.TensorProto>;
export type AttributeProto = InstanceType<typeof onnx.AttributeProto>;
export type ValueInfoProto = InstanceType<typeof onnx.ValueInfoProto>;

/** ONNX TensorProto.DataType codes graft uses. */
export const DT = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7, BOOL: 9, DOUBLE: 11 } as const;

/**
 * A protobuf int64 (dims, attribute ints, irVersion, opset versions) as a number. protobufjs decodes them as Long
 * objects when the long library is loaded and as numbers otherwise; ORT hands back bigints. Absent is 0.
 */
export function toNum(v: unknown): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (v && typeof (v as { toNumber?: () => number }).toNumber === 'function') return (v as { toNumber(): number }).toNumber();
  return Number(v ?? 0);
}

/** The version of the default (ai.onnx) operator set a model imports, 0 when it lists none. */
export function defaultOpset(model: onnxProto.onnx.IModelProto): number {
  const o = (model.opsetImport ?? []).find((x) => !x.domain || x.domain === 'ai.onnx');
  return toNum(o?.version);
}

function attribute(n: onnxProto.onnx.INodeProto, name: string) {
  return (n.attribute ?? []).find((a) => a.name === name);
}

/** An INT attribute of a node (`dflt` when absent). */
export function intAttr(n: onnxProto.onnx.INodeProto, name: string, dflt: number): number;
export function intAttr(n: onnxProto.onnx.INodeProto, name: string): number | undefined;
export function intAttr(n: onnxProto.onnx.INodeProto, name: string, dflt?: number): number | undefined {
  const a = attribute(n, name);
  return a ? toNum(a.i) : dflt;
}

/** An INTS attribute of a node (undefined when absent). */
export function intsAttr(n: onnxProto.onnx.INodeProto, name: string): number[] | undefined {
  const a = attribute(n, name);
  return a ? (a.ints ?? []).map(toNum) : undefined;
}

export function floatAttr(n: onnxProto.onnx.INodeProto, name: string, dflt: number): number {
  return attribute(n, name)?.f ?? dflt;
}

export function stringAttr(n: onnxProto.onnx.INodeProto, name: string, dflt: string): string {
  const s = attribute(n, name)?.s;
  return s?.length ? new TextDecoder().decode(s) : dflt;
}

/**
 * The numbers of a tensor proto (float, double, int8/32/64, uint8, bool), from its raw bytes or its typed fields.
 * Float64 holds every float32 and int32 exactly, and int64 up to 2^53 (shapes, axes, pads).
 */
export function tensorValues(t: onnxProto.onnx.ITensorProto): Float64Array {
  const dt = t.dataType ?? DT.FLOAT;
  const raw = t.rawData && t.rawData.length ? t.rawData : undefined;
  if (raw) {
    const buf = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
    switch (dt) {
      case DT.FLOAT: return Float64Array.from(new Float32Array(buf));
      case DT.DOUBLE: return new Float64Array(buf);
      case DT.INT32: return Float64Array.from(new Int32Array(buf));
      case DT.INT64: return Float64Array.from(new BigInt64Array(buf), Number);
      case DT.UINT8: case DT.BOOL: return Float64Array.from(new Uint8Array(buf));
      case DT.INT8: return Float64Array.from(new Int8Array(buf));
      default: throw new Error(`tensor '${t.name}' has element type ${dt}, which graft does not read`);
    }
  }
  if (dt === DT.FLOAT) return Float64Array.from(t.floatData ?? []);
  if (dt === DT.DOUBLE) return Float64Array.from(t.doubleData ?? []);
  if (dt === DT.INT64) return Float64Array.from((t.int64Data ?? []).map(toNum));
  return Float64Array.from((t.int32Data ?? []).map(toNum));
}
