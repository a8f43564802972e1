/** A tiny TFLite writer for tests: the schema's field ids, written independently of the importer's reader. */
import { Builder } from 'flatbuffers';
import { TensorType } from '../../src/models/importers/tflite-schema/index.js';


export interface TTensor { name: string; shape: number[]; type?: number; data?: Uint8Array; q?: { scale: number[]; zeroPoint: number[]; dim?: number } }
export interface TOp { code: number; inputs: number[]; outputs: number[]; options?: { type: number; fields: [id: number, kind: 'i8' | 'i32' | 'f32' | 'i32s', value: number | number[]][] } }
export interface TModel { tensors: TTensor[]; ops: TOp[]; inputs: number[]; outputs: number[] }

export function writeTflite(m: TModel): Uint8Array {
  const fb = new Builder(1024);
  fb.forceDefaults(true);
  const ints = (v: number[]) => {
    fb.startVector(4, v.length, 4);
    for (let i = v.length - 1; i >= 0; i--) fb.addInt32(v[i]!);
    return fb.endVector();
  };
  const floats = (v: number[]) => {
    fb.startVector(4, v.length, 4);
    for (let i = v.length - 1; i >= 0; i--) fb.addFloat32(v[i]!);
    return fb.endVector();
  };
  const longs = (v: number[]) => {
    fb.startVector(8, v.length, 8);
    for (let i = v.length - 1; i >= 0; i--) fb.addInt64(BigInt(v[i]!));
    return fb.endVector();
  };
  const offsets = (v: number[]) => {
    fb.startVector(4, v.length, 4);
    for (let i = v.length - 1; i >= 0; i--) fb.addOffset(v[i]!);
    return fb.endVector();
  };
  const bytes = (v: Uint8Array) => {
    fb.startVector(1, v.length, 16);
    for (let i = v.length - 1; i >= 0; i--) fb.addInt8(v[i]!);
    return fb.endVector();
  };
  // Buffers: 0 is the empty sentinel; each constant tensor gets its own.
  const bufferData: (Uint8Array | undefined)[] = [undefined];
  const bufferOf = m.tensors.map((t) => (t.data ? bufferData.push(t.data) - 1 : 0));
  const buffers = bufferData.map((d) => {
    const data = d ? bytes(d) : 0;
    fb.startObject(3);
    if (d) fb.addFieldOffset(0, data, 0);
    return fb.endObject();
  });
  const tensors = m.tensors.map((t, i) => {
    const name = fb.createString(t.name);
    const shape = ints(t.shape);
    let quant = 0;
    if (t.q) {
      const scale = floats(t.q.scale);
      const zp = longs(t.q.zeroPoint);
      fb.startObject(7);
      fb.addFieldOffset(2, scale, 0);
      fb.addFieldOffset(3, zp, 0);
      fb.addFieldInt32(6, t.q.dim ?? 0, 0);
      quant = fb.endObject();
    }
    fb.startObject(8);
    fb.addFieldOffset(0, shape, 0);
    fb.addFieldInt8(1, t.type ?? TensorType.FLOAT32, 0);
    fb.addFieldInt32(2, bufferOf[i]!, 0);
    fb.addFieldOffset(3, name, 0);
    if (quant) fb.addFieldOffset(4, quant, 0);
    return fb.endObject();
  });
  const codes = [...new Set(m.ops.map((o) => o.code))];
  const opcodes = codes.map((c) => {
    fb.startObject(4);
    fb.addFieldInt8(0, Math.min(c, 127), 0);
    fb.addFieldInt32(2, 1, 1);
    fb.addFieldInt32(3, c, 0);
    return fb.endObject();
  });
  const ops = m.ops.map((o) => {
    let opts = 0;
    if (o.options) {
      const vecs = o.options.fields.map(([, kind, v]) => (kind === 'i32s' ? ints(v as number[]) : 0));
      fb.startObject(8);
      o.options.fields.forEach(([id, kind, v], k) => {
        if (kind === 'i8') fb.addFieldInt8(id, v as number, -1);
        else if (kind === 'i32') fb.addFieldInt32(id, v as number, -1);
        else if (kind === 'f32') fb.addFieldFloat32(id, v as number, -1);
        else fb.addFieldOffset(id, vecs[k]!, 0);
      });
      opts = fb.endObject();
    }
    const ins = ints(o.inputs);
    const outs = ints(o.outputs);
    fb.startObject(9);
    fb.addFieldInt32(0, codes.indexOf(o.code), 0);
    fb.addFieldOffset(1, ins, 0);
    fb.addFieldOffset(2, outs, 0);
    if (o.options) {
      fb.addFieldInt8(3, o.options.type, 0);
      fb.addFieldOffset(4, opts, 0);
    }
    return fb.endObject();
  });
  const tv = offsets(tensors);
  const iv = ints(m.inputs);
  const ov = ints(m.outputs);
  const opv = offsets(ops);
  fb.startObject(5);
  fb.addFieldOffset(0, tv, 0);
  fb.addFieldOffset(1, iv, 0);
  fb.addFieldOffset(2, ov, 0);
  fb.addFieldOffset(3, opv, 0);
  const sg = fb.endObject();
  const sgv = offsets([sg]);
  const cv = offsets(opcodes);
  const bv = offsets(buffers);
  const desc = fb.createString('built by graft tests');
  fb.startObject(5);
  fb.addFieldInt32(0, 3, 0);
  fb.addFieldOffset(1, cv, 0);
  fb.addFieldOffset(2, sgv, 0);
  fb.addFieldOffset(3, desc, 0);
  fb.addFieldOffset(4, bv, 0);
  fb.finish(fb.endObject(), 'TFL3');
  return fb.asUint8Array().slice();
}
