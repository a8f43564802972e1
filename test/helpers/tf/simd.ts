/**
 * A tiny hand-assembled WebAssembly SIMD routine that runs on the TF.js wasm backend's own heap (it imports the
 * backend's memory), for the one gradient kernel no composition of TF.js wasm kernels does well: the depthwise
 * filter gradient (see wasm-kernels.ts). No toolchain: the module's bytes are written out below.
 *
 * madRows(acc, x, g, n, cb, xstep): for every 4-channel group i (byte offsets 0, 16, .. < cb):
 *   acc[i..i+3] += sum_{k<n} x[k*xstep + i..] * g[k*cb + i..]        (f32x4; pointers and strides in bytes)
 * i.e. along one output row, one filter tap: the per-channel products of the input row (stride xstep) and of the
 * output gradient row, accumulated into the tap's channels. Requires n >= 1, cb a positive multiple of 16.
 */

// Opcodes used.
const LOCAL_GET = 0x20;
const LOCAL_SET = 0x21;
const LOCAL_TEE = 0x22;
const I32_CONST = 0x41;
const I32_ADD = 0x6a;
const I32_SUB = 0x6b;
const I32_LT_U = 0x49;
const LOOP = 0x03;
const BR_IF = 0x0d;
const END = 0x0b;
const VOID = 0x40;
const SIMD = 0xfd;
const V128_LOAD = [SIMD, 0x00, 0x00, 0x00]; // memarg: align 2^0, offset 0
const V128_STORE = [SIMD, 0x0b, 0x00, 0x00];
const F32X4_ADD = [SIMD, 0xe4, 0x01];
const F32X4_MUL = [SIMD, 0xe6, 0x01];
const I32 = 0x7f;
const V128 = 0x7b;

function str(s: string): number[] {
  return [s.length, ...Buffer.from(s, 'latin1')];
}

function section(id: number, body: number[]): number[] {
  return [id, ...leb(body.length), ...body];
}

function leb(v: number): number[] {
  const out: number[] = [];
  do {
    let b = v & 0x7f;
    v >>>= 7;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return out;
}

function moduleBytes(): Uint8Array<ArrayBuffer> {
  // Locals: 0 acc, 1 x, 2 g, 3 n, 4 cb, 5 xstep (params); 6 i, 7 xp, 8 gp, 9 k (i32); 10 a (v128).
  const get = (i: number) => [LOCAL_GET, i];
  const set = (i: number) => [LOCAL_SET, i];
  const code = [
    I32_CONST, 0, ...set(6),
    LOOP, VOID, // over channel groups
    ...get(0), ...get(6), I32_ADD, ...V128_LOAD, ...set(10),
    ...get(1), ...get(6), I32_ADD, ...set(7),
    ...get(2), ...get(6), I32_ADD, ...set(8),
    ...get(3), ...set(9),
    LOOP, VOID, // along the row
    ...get(10), ...get(7), ...V128_LOAD, ...get(8), ...V128_LOAD, ...F32X4_MUL, ...F32X4_ADD, ...set(10),
    ...get(7), ...get(5), I32_ADD, ...set(7),
    ...get(8), ...get(4), I32_ADD, ...set(8),
    ...get(9), I32_CONST, 1, I32_SUB, LOCAL_TEE, 9,
    BR_IF, 0,
    END,
    ...get(0), ...get(6), I32_ADD, ...get(10), ...V128_STORE,
    ...get(6), I32_CONST, 16, I32_ADD, LOCAL_TEE, 6,
    ...get(4), I32_LT_U,
    BR_IF, 0,
    END,
    END,
  ];
  const body = [2, 4, I32, 1, V128, ...code];
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, 0x60, 6, I32, I32, I32, I32, I32, I32, 0]),
    ...section(2, [1, ...str('env'), ...str('memory'), 0x02, 0x00, 0x00]),
    ...section(3, [1, 0]),
    ...section(7, [1, ...str('madRows'), 0x00, 0]),
    ...section(10, [1, ...leb(body.length), ...body]),
  ]);
}

export type MadRows = (acc: number, x: number, g: number, n: number, cb: number, xstep: number) => void;

const cache = new WeakMap<WebAssembly.Memory, MadRows | null>();

/** `madRows` bound to `memory` (the wasm backend's heap); undefined when the runtime lacks wasm SIMD. */
export function madRowsFor(memory: WebAssembly.Memory): MadRows | undefined {
  let f = cache.get(memory);
  if (f === undefined) {
    try {
      const inst = new WebAssembly.Instance(new WebAssembly.Module(moduleBytes()), { env: { memory } });
      f = inst.exports.madRows as MadRows;
    } catch {
      f = null;
    }
    cache.set(memory, f);
  }
  return f ?? undefined;
}
