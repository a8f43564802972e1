/**
 * Class activation maps behind one interface (pytorch-grad-cam's methods): each turns a layer's activations A[K,h,w]
 * (and, for the gradient methods, dScore/dA) into one map over the layer's grid, brighter where the evidence for
 * the class lies. Score-CAM needs forward passes and lives in explain.ts; these are the pure ones.
 */
export type CamMethod = 'gradcam' | 'gradcam++' | 'scorecam' | 'eigencam';
export const CAM_METHODS: readonly CamMethod[] = ['gradcam', 'gradcam++', 'scorecam', 'eigencam'];

/** Activations (and their gradient) of one image, channels first: value of channel k at cell i = data[k * hw + i]. */
export interface LayerMaps {
  k: number;
  h: number;
  w: number;
  activations: Float32Array;
  gradient?: Float32Array;
}

/** Σ_k weights[k]·A_k, then ReLU (only evidence for the class counts). */
export function weightedSum(m: LayerMaps, weights: Float64Array | Float32Array): Float32Array {
  const hw = m.h * m.w;
  const out = new Float32Array(hw);
  for (let k = 0; k < m.k; k++) {
    const wk = weights[k]!;
    if (wk === 0) continue;
    const a = m.activations.subarray(k * hw, (k + 1) * hw);
    for (let i = 0; i < hw; i++) out[i]! += wk * a[i]!;
  }
  for (let i = 0; i < hw; i++) if (!(out[i]! > 0)) out[i] = 0;
  return out;
}

function needGradient(m: LayerMaps, method: string): Float32Array {
  if (!m.gradient) throw new Error(`internal: ${method} needs the gradient`);
  return m.gradient;
}

/** Grad-CAM (Selvaraju et al.): channel weights = the spatial mean of the gradient. */
export function gradCam(m: LayerMaps): Float32Array {
  const g = needGradient(m, 'gradcam');
  const hw = m.h * m.w;
  const weights = new Float64Array(m.k);
  for (let k = 0; k < m.k; k++) {
    let s = 0;
    for (let i = 0; i < hw; i++) s += g[k * hw + i]!;
    weights[k] = s / hw;
  }
  return weightedSum(m, weights);
}

/**
 * Grad-CAM++ (Chattopadhyay et al.), in the closed form pytorch-grad-cam uses: with the score's exponential, the
 * second and third derivatives are powers of the first, α = g² / (2g² + Σ_ij A · g³), weights = Σ_ij α·ReLU(g).
 */
export function gradCamPlusPlus(m: LayerMaps): Float32Array {
  const g = needGradient(m, 'gradcam++');
  const hw = m.h * m.w;
  const weights = new Float64Array(m.k);
  for (let k = 0; k < m.k; k++) {
    let sumA = 0;
    for (let i = 0; i < hw; i++) sumA += m.activations[k * hw + i]!;
    let wk = 0;
    for (let i = 0; i < hw; i++) {
      const gi = g[k * hw + i]!;
      if (gi === 0) continue;
      const g2 = gi * gi;
      const alpha = g2 / (2 * g2 + sumA * g2 * gi + 1e-7);
      if (gi > 0) wk += alpha * gi;
    }
    weights[k] = wk;
  }
  return weightedSum(m, weights);
}

/**
 * EigenCAM (Muhammad & Yeasin): the first principal component of the activations (cells as samples, channels as
 * features), no gradient and no class. Computed on the small hw x hw Gram matrix by power iteration; its sign is
 * chosen to agree with the mean activation, and negative cells are cut like the others.
 */
export function eigenCam(m: LayerMaps): Float32Array {
  const hw = m.h * m.w;
  const mean = new Float64Array(m.k);
  for (let k = 0; k < m.k; k++) {
    let s = 0;
    for (let i = 0; i < hw; i++) s += m.activations[k * hw + i]!;
    mean[k] = s / hw;
  }
  // Centred X[i, k]; G = X Xᵀ (hw x hw).
  const G = new Float64Array(hw * hw);
  for (let k = 0; k < m.k; k++) {
    const a = m.activations.subarray(k * hw, (k + 1) * hw);
    const mk = mean[k]!;
    for (let i = 0; i < hw; i++) {
      const xi = a[i]! - mk;
      if (xi === 0) continue;
      for (let j = i; j < hw; j++) G[i * hw + j]! += xi * (a[j]! - mk);
    }
  }
  for (let i = 0; i < hw; i++) for (let j = 0; j < i; j++) G[i * hw + j] = G[j * hw + i]!;
  // A fixed but uneven start: the uniform vector is often orthogonal to every centred component (the power
  // iteration would then stall at zero).
  let u = Float64Array.from({ length: hw }, (_, i) => 1 + ((i * 7919) % 13) / 13);
  for (let it = 0; it < 200; it++) {
    const v = new Float64Array(hw);
    for (let i = 0; i < hw; i++) {
      let s = 0;
      for (let j = 0; j < hw; j++) s += G[i * hw + j]! * u[j]!;
      v[i] = s;
    }
    const norm = Math.hypot(...v);
    if (norm === 0) return new Float32Array(hw);
    let diff = 0;
    for (let i = 0; i < hw; i++) {
      v[i]! /= norm;
      diff = Math.max(diff, Math.abs(v[i]! - u[i]!));
    }
    u = v;
    if (diff < 1e-10) break;
  }
  // The component's sign is arbitrary: orient it like the cells' total activation.
  let agree = 0;
  for (let i = 0; i < hw; i++) {
    let total = 0;
    for (let k = 0; k < m.k; k++) total += m.activations[k * hw + i]!;
    agree += u[i]! * total;
  }
  const out = new Float32Array(hw);
  for (let i = 0; i < hw; i++) out[i] = Math.max(0, (agree < 0 ? -1 : 1) * u[i]!);
  return out;
}

/** Scale to [0, 1] by the maximum (all zeros stay zeros). */
export function normaliseMap(map: Float32Array): Float32Array {
  let max = 0;
  for (const v of map) if (v > max) max = v;
  return max > 0 ? map.map((v) => v / max) : map.slice();
}
