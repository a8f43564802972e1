/** Reading a TF node's attributes (`attr` of the GraphDef JSON: strings base64, numbers often as strings). */
import { fail } from '../fail.js';
import { where } from './graph-order.js';
import type { GraphNode } from './model-json.js';

export class NodeAttrs {
  constructor(readonly file: string) {}

  attr(n: GraphNode, k: string) {
    return n.attr?.[k];
  }
  str(n: GraphNode, k: string, d?: string): string {
    const v = this.attr(n, k)?.s;
    if (v === undefined) return d ?? fail(this.file, `${where(n)}: attribute ${k} missing`);
    return Buffer.from(v, 'base64').toString('utf8');
  }
  ints(n: GraphNode, k: string, d?: number[]): number[] {
    const v = this.attr(n, k)?.list?.i;
    if (!v) return d ?? fail(this.file, `${where(n)}: attribute ${k} missing`);
    return v.map(Number);
  }
  strs(n: GraphNode, k: string): string[] {
    return (this.attr(n, k)?.list?.s ?? []).map((s) => Buffer.from(s, 'base64').toString('utf8'));
  }
  flt(n: GraphNode, k: string, d: number): number {
    const v = this.attr(n, k)?.f;
    return v === undefined ? d : Number(v);
  }
  int(n: GraphNode, k: string, d: number): number {
    const v = this.attr(n, k)?.i;
    return v === undefined ? d : Number(v);
  }
  bool(n: GraphNode, k: string, d = false): boolean {
    return this.attr(n, k)?.b ?? d;
  }
  /** Refuse NCHW graphs: the translation assumes TF's default layout. */
  nhwcOnly(n: GraphNode): void {
    const f = this.str(n, 'data_format', 'NHWC');
    if (f !== 'NHWC') fail(this.file, `${where(n)}: data_format ${f} is not supported (only NHWC)`);
  }
  floatType(n: GraphNode): void {
    const t = this.attr(n, 'T')?.type ?? this.attr(n, 'dtype')?.type;
    if (t !== undefined && t !== 'DT_FLOAT') fail(this.file, `${where(n)}: type ${t} is not supported (only float)`);
  }
}
