/**
 * Plain Float32Array kernels for the dense heads. Measured on the project's CPU: register-blocked loops here run
 * ~4× faster than tfjs-core's CPU matMul and ~10–25× faster than its element-wise ops (which dominate a small
 * head's Adam update), and tfjs-core alone registers no gradient kernels, so the heads do their own forward/backward.
 *
 * Every output element is a sum over k in increasing order with one float64 accumulator, whatever the blocking or
 * the number of rows: results do not depend on batch composition, so predictions are bit-identical however rows
 * are chunked.
 */

/** out[i, j] = Σ_k A[i, k] · B[j, k]  (A: M × K, B: N × K, out: M × N, all row-major). */
export function gemmABt(A: Float32Array, B: Float32Array, out: Float32Array, M: number, N: number, K: number): void {
  let i = 0;
  for (; i + 3 < M; i += 4) {
    const a0 = i * K;
    const a1 = a0 + K;
    const a2 = a1 + K;
    const a3 = a2 + K;
    const o0 = i * N;
    const o1 = o0 + N;
    const o2 = o1 + N;
    const o3 = o2 + N;
    let j = 0;
    for (; j + 1 < N; j += 2) {
      const b0 = j * K;
      const b1 = b0 + K;
      let s00 = 0, s01 = 0, s10 = 0, s11 = 0, s20 = 0, s21 = 0, s30 = 0, s31 = 0;
      for (let k = 0; k < K; k++) {
        const y0 = B[b0 + k];
        const y1 = B[b1 + k];
        const x0 = A[a0 + k];
        const x1 = A[a1 + k];
        const x2 = A[a2 + k];
        const x3 = A[a3 + k];
        s00 += x0 * y0;
        s01 += x0 * y1;
        s10 += x1 * y0;
        s11 += x1 * y1;
        s20 += x2 * y0;
        s21 += x2 * y1;
        s30 += x3 * y0;
        s31 += x3 * y1;
      }
      out[o0 + j] = s00;
      out[o0 + j + 1] = s01;
      out[o1 + j] = s10;
      out[o1 + j + 1] = s11;
      out[o2 + j] = s20;
      out[o2 + j + 1] = s21;
      out[o3 + j] = s30;
      out[o3 + j + 1] = s31;
    }
    if (j < N) {
      const b0 = j * K;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let k = 0; k < K; k++) {
        const y = B[b0 + k];
        s0 += A[a0 + k] * y;
        s1 += A[a1 + k] * y;
        s2 += A[a2 + k] * y;
        s3 += A[a3 + k] * y;
      }
      out[o0 + j] = s0;
      out[o1 + j] = s1;
      out[o2 + j] = s2;
      out[o3 + j] = s3;
    }
  }
  for (; i < M; i++) {
    const a0 = i * K;
    const o0 = i * N;
    let j = 0;
    for (; j + 1 < N; j += 2) {
      const b0 = j * K;
      const b1 = b0 + K;
      let s0 = 0, s1 = 0;
      for (let k = 0; k < K; k++) {
        const x = A[a0 + k];
        s0 += x * B[b0 + k];
        s1 += x * B[b1 + k];
      }
      out[o0 + j] = s0;
      out[o0 + j + 1] = s1;
    }
    if (j < N) {
      const b0 = j * K;
      let s = 0;
      for (let k = 0; k < K; k++) s += A[a0 + k] * B[b0 + k];
      out[o0 + j] = s;
    }
  }
}

/** dst (cols × rows) = transpose of src (rows × cols). */
export function transpose(src: Float32Array, rows: number, cols: number, dst: Float32Array): void {
  for (let i = 0; i < rows; i++) {
    const o = i * cols;
    for (let j = 0; j < cols; j++) dst[j * rows + i] = src[o + j];
  }
}

/** Add `bias` (length N) to each row of `x` (M × N). */
export function addRowBias(x: Float32Array, bias: Float32Array, M: number, N: number): void {
  for (let i = 0; i < M; i++) {
    const o = i * N;
    for (let j = 0; j < N; j++) x[o + j] += bias[j];
  }
}

/** out[j] = Σ_i x[i, j]  (x: M × N). */
export function sumRows(x: Float32Array, M: number, N: number, out: Float32Array): void {
  out.fill(0);
  for (let i = 0; i < M; i++) {
    const o = i * N;
    for (let j = 0; j < N; j++) out[j] += x[o + j];
  }
}

/** Row-wise softmax of logits (M × N) into `out` (may alias), computed in float64 with max subtraction. */
export function softmaxRows(logits: Float32Array, M: number, N: number, out: Float32Array): void {
  for (let i = 0; i < M; i++) {
    const o = i * N;
    let max = -Infinity;
    for (let j = 0; j < N; j++) if (logits[o + j] > max) max = logits[o + j];
    let sum = 0;
    for (let j = 0; j < N; j++) sum += Math.exp(logits[o + j] - max);
    for (let j = 0; j < N; j++) out[o + j] = Math.exp(logits[o + j] - max) / sum;
  }
}
