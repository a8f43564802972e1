/**
 * Layouts of runtime tensors. Every runtime value has a logical shape (the ONNX one, e.g. NCHW) and a permutation
 * `perm`: the tensor actually held is transpose(logical, perm), i.e. its axis i is logical axis perm[i]. Convolutions
 * and pools want NHWC, so their outputs carry perm [0,2,3,1]; element-wise ops keep whatever layout they get,
 * axis-taking ops (Concat, Softmax, reductions, Slice, Pad, Gather) map their axes, and a Transpose node only
 * changes the recorded perm. Data moves only where an op needs another layout.
 */

export const NHWC = [0, 2, 3, 1];

export function identity(r: number): number[] {
  return Array.from({ length: r }, (_, i) => i);
}

export function isIdentity(perm: readonly number[]): boolean {
  return perm.every((p, i) => p === i);
}

export function samePerm(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Shape of the tensor held for a value of logical `shape` in layout `perm`. */
export function physShape(shape: readonly number[], perm: readonly number[]): number[] {
  return perm.map((a) => shape[a]!);
}

/** The transpose taking data in layout `from` to layout `to` (same logical tensor). */
export function relayoutPerm(from: readonly number[], to: readonly number[]): number[] {
  return to.map((a) => from.indexOf(a));
}

/**
 * Whether transposing data of shape `shape` by `q` only moves size-1 axes (then a reshape does the same, for free).
 */
export function isTrivialTranspose(shape: readonly number[], q: readonly number[]): boolean {
  let last = -1;
  for (const a of q) {
    if (shape[a] === 1) continue;
    if (a < last) return false;
    last = a;
  }
  return true;
}

/** Physical axis holding logical axis `a`. */
export function physAxis(perm: readonly number[], a: number): number {
  return perm.indexOf(a);
}

/**
 * Layout of the result when logical axes `removed` are dropped from a value in layout `perm` (axes renumbered).
 */
export function dropAxes(perm: readonly number[], removed: readonly number[]): number[] {
  const kept = perm.filter((a) => !removed.includes(a));
  return kept.map((a) => a - removed.filter((r) => r < a).length);
}

export function normAxis(a: number, r: number): number {
  const x = a < 0 ? a + r : a;
  if (x < 0 || x >= r) throw new Error(`axis ${a} out of range for rank ${r}`);
  return x;
}
