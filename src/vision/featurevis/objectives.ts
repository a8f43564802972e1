/**
 * Objectives as values (Lucid's `objectives`): what an image should make a network do, as a weighted sum of terms.
 * Each term reads one tensor of the network for each image of a batch:
 *
 * - class `logit`:    z_c                                   (a class score before softmax: Lucid's "labels" channel)
 * - class `logprob`:  log softmax(z)_c                      (the probability's log: same maximiser as the
 *                     probability, with a gradient that does not vanish while p is small; it also pushes the other
 *                     classes down, which the logit does not)
 * - `channel`:        mean over positions of A[c, y, x]     (a channel of any layer)
 * - `neuron`:         A[c, y0, x0] at one position (default the centre)
 * - `direction`:      mean over positions of Σ_c v_c·A[c, y, x]   (a direction in a layer's channel space)
 * - `diversity`:      −(1/N) Σ_{i≠j} ⟨Ĝ_i, Ĝ_j⟩, Ĝ_i the L2-normalised Gram matrix (channels × channels) of
 *                     image i's activations: rewards a batch whose images differ in style (Lucid's `diversity`).
 *
 * All but diversity and logprob are linear in the tensor: their gradient with respect to the pixels is Jᵀ·w for a
 * fixed weight tensor w, which the gradient engine's `dot` loss computes in one pass (loss = Σ w·T). logprob is the
 * engine's cross-entropy loss. Diversity is not linear: a first pass gives the activations A, its gradient
 * ∂D/∂A is computed here, and a second pass feeds it as the dot weights (the chain rule with ∂D/∂A held fixed).
 *
 * The gradient program minimises, so an objective O is fed as the loss −O: dot weights −w, cross-entropy targets
 * weight·onehot (−log p = cross-entropy).
 */
import { GradientProgram } from '../../engine/grad/program.js';
import { PIXEL_LOGITS, PIXELS } from '../../engine/grad/pixels.js';
import { GraftError, UsageError } from '../../errors.js';
import { findTensor, parseOnnx } from '../../models/onnx-file.js';
import { addOutputs } from '../../onnx/cut.js';
import { DT } from '../../onnx/proto.js';
import type { DiffClassifier } from '../classifier.js';
import { resolveClass } from '../classifier.js';
import { tensorLayout } from '../featuremaps.js';


export type ClassTerm = { kind: 'logit' | 'logprob'; class: string | number; weight: number };
export type LayerTermSpec =
  | { kind: 'channel'; layer: string; channel: number; weight: number }
  | { kind: 'neuron'; layer: string; channel: number; y?: number; x?: number; weight: number }
  | { kind: 'direction'; layer: string; vector: number[]; weight: number }
  | { kind: 'diversity'; layer: string; weight: number };
export type Term = ClassTerm | LayerTermSpec;

export interface Objective {
  terms: Term[];
}

export const classLogit = (c: string | number, weight = 1): Objective => ({ terms: [{ kind: 'logit', class: c, weight }] });
export const classLogProb = (c: string | number, weight = 1): Objective => ({ terms: [{ kind: 'logprob', class: c, weight }] });
export const channel = (layer: string, c: number, weight = 1): Objective => ({ terms: [{ kind: 'channel', layer, channel: c, weight }] });
export const neuron = (layer: string, c: number, at?: { y: number; x: number }, weight = 1): Objective => ({ terms: [{ kind: 'neuron', layer, channel: c, ...at, weight }] });
export const direction = (layer: string, vector: number[], weight = 1): Objective => ({ terms: [{ kind: 'direction', layer, vector, weight }] });
export const diversity = (layer: string, weight = 1): Objective => ({ terms: [{ kind: 'diversity', layer, weight }] });
export const sum = (...objs: Objective[]): Objective => ({ terms: objs.flatMap((o) => o.terms) });
export const scale = (o: Objective, w: number): Objective => ({ terms: o.terms.map((t) => ({ ...t, weight: t.weight * w })) });

export function describe(o: Objective): string {
  return o.terms
    .map((t) => {
      const w = t.weight === 1 ? '' : `${t.weight}*`;
      if ('class' in t) return `${w}${t.kind === 'logit' ? 'logit' : 'prob'}:${t.class}`;
      if (t.kind === 'channel') return `${w}${t.layer}:${t.channel}`;
      if (t.kind === 'neuron') return `${w}neuron:${t.layer}:${t.channel}${t.y !== undefined ? `@${t.y},${t.x}` : ''}`;
      if (t.kind === 'direction') return `${w}direction:${t.layer}:[${t.vector.length}]`;
      return `${w}diversity:${t.layer}`;
    })
    .join(' + ');
}

/**
 * An objective from text: terms joined by '+', each optionally `<weight>*`:
 *   `tabby` or `class:tabby` (default class score), `logit:tabby`, `prob:tabby`, `<layer>:<channel>` or
 *   `channel:<layer>:<channel>`, `neuron:<layer>:<channel>[@y,x]`, `direction:<layer>:<v0,v1,…>`,
 *   `diversity:<layer>`. Layers are node or tensor names (graft layers lists them).
 */
export function parseObjective(text: string, defaultClassScore: 'logit' | 'logprob' = 'logit'): Objective {
  const terms: Term[] = [];
  for (const raw of text.split(/\s*\+\s*/)) {
    let s = raw.trim();
    if (!s) continue;
    let weight = 1;
    const wm = /^(-?[0-9.]+(?:e-?\d+)?)\s*\*\s*(.+)$/i.exec(s);
    if (wm) {
      weight = Number(wm[1]);
      s = wm[2]!;
      if (!Number.isFinite(weight)) throw new UsageError(`--objective: bad weight in '${raw}'`);
    }
    const head = /^(class|logit|prob|logprob|channel|neuron|direction|diversity):(.+)$/i.exec(s);
    const kind = head?.[1]!.toLowerCase();
    const rest = head?.[2] ?? s;
    const lastColon = (v: string): [string, string] => {
      const i = v.lastIndexOf(':');
      if (i <= 0) throw new UsageError(`--objective: '${raw}' needs <layer>:<channel>`);
      return [v.slice(0, i), v.slice(i + 1)];
    };
    const int = (v: string) => {
      if (!/^\d+$/.test(v)) throw new UsageError(`--objective: '${v}' in '${raw}' is not a channel number`);
      return Number(v);
    };
    if (kind === 'class' || kind === 'logit' || kind === 'prob' || kind === 'logprob') {
      terms.push({ kind: kind === 'class' ? defaultClassScore : kind === 'logit' ? 'logit' : 'logprob', class: rest, weight });
    } else if (kind === 'neuron') {
      const [spec, at] = rest.split('@');
      const [layer, c] = lastColon(spec!);
      const pos = at?.split(',').map(int);
      terms.push({ kind: 'neuron', layer, channel: int(c), ...(pos && { y: pos[0], x: pos[1] }), weight });
    } else if (kind === 'direction') {
      const [layer, v] = lastColon(rest);
      const vector = v.split(',').map(Number);
      if (vector.some((x) => !Number.isFinite(x))) throw new UsageError(`--objective: bad direction vector in '${raw}'`);
      terms.push({ kind: 'direction', layer, vector, weight });
    } else if (kind === 'diversity') {
      terms.push({ kind: 'diversity', layer: rest, weight });
    } else if (kind === 'channel' || /:\d+$/.test(s)) {
      const [layer, c] = lastColon(rest);
      terms.push({ kind: 'channel', layer, channel: int(c), weight });
    } else {
      terms.push({ kind: defaultClassScore, class: s, weight });
    }
  }
  if (!terms.length) throw new UsageError('--objective: empty');
  return { terms };
}

/** A class of this model by name: exact (resolveClass), else one of a label's comma-separated synonyms. */
export function matchClass(classes: string[], wanted: string | number): number {
  if (typeof wanted === 'number') {
    if (wanted >= 0 && wanted < classes.length) return wanted;
    throw new UsageError(`class ${wanted} is out of range (0-${classes.length - 1})`);
  }
  const norm = (s: string) => s.toLowerCase().replace(/[\s_-]+/g, ' ').trim();
  const w = norm(wanted);
  const bySynonym = classes.findIndex((c) => norm(c) === w || c.split(',').some((p) => norm(p) === w) || (w.includes(',') && norm(c.split(',')[0]!) === norm(w.split(',')[0]!)));
  if (bySynonym >= 0) return bySynonym;
  return resolveClass(classes, wanted);
}

/** One objective on one model for a batch of `n` images: loss = −objective and its gradient w.r.t. the pixels. */
export interface ObjectiveModel {
  readonly model: DiffClassifier;
  readonly n: number;
  /** Model input size [h, w]. */
  readonly size: readonly [number, number];
  /** Class indices the class terms resolved to (for reporting). */
  readonly classIndices: number[];
  evaluate(pixels: Float32Array): Promise<{ loss: number; grad: Float32Array; logits: Float32Array }>;
  release(): Promise<void>;
}

interface LayerTerm { term: LayerTermSpec; tensor: string }

const WEIGHTS = (i: number) => `fv/w${i}`;
const TARGETS = 'fv/targets';
const LOGIT_W = 'fv/logit_w';

export async function objectiveModel(model: DiffClassifier, objective: Objective, n: number, opts: { threads?: number } = {}): Promise<ObjectiveModel> {
  const C = model.classes.length;
  const size = model.spec.size;
  const classTerms = objective.terms.filter((t): t is ClassTerm => t.kind === 'logit' || t.kind === 'logprob');
  const classIndices = classTerms.map((t) => matchClass(model.classes, t.class));
  const layerTerms = objective.terms.filter((t): t is LayerTermSpec => t.kind !== 'logit' && t.kind !== 'logprob');
  const targets = new Float32Array(n * C);
  const logitW = new Float32Array(n * C);
  classTerms.forEach((t, i) => {
    for (let b = 0; b < n; b++) {
      if (t.kind === 'logprob') targets[b * C + classIndices[i]!]! += t.weight;
      else logitW[b * C + classIndices[i]!]! -= t.weight;
    }
  });
  const hasCe = classTerms.some((t) => t.kind === 'logprob');
  const hasLogit = classTerms.some((t) => t.kind === 'logit');

  // A classifier without its graphs (not from loadClassifier) can still serve class log-probabilities.
  if (!model.graph) {
    if (layerTerms.length || hasLogit) throw new GraftError('this classifier offers only class probabilities as objectives');
    return {
      model, n, size, classIndices,
      async evaluate(pixels) {
        const r = await model.crossEntropy(pixels, n, targets);
        return { loss: r.loss, grad: r.grad, logits: r.logits };
      },
      async release() {},
    };
  }

  const source = parseOnnx(model.graph.onnx, model.graph.where);
  const layers: LayerTerm[] = layerTerms.map((term) => {
    const tensor = findTensor(source.info, term.layer);
    if (!tensor) throw new UsageError(`objective: no layer or tensor '${term.layer}' in ${model.graph!.where} (graft layers lists them)`);
    return { term, tensor };
  });
  const tensors = [...new Set(layers.map((l) => l.tensor))];
  const layouts = new Map(tensors.map((t) => [t, tensorLayout(source, t, model.spec.layout) ?? model.spec.layout]));
  const divTensors = [...new Set(layers.filter((l) => l.term.kind === 'diversity').map((l) => l.tensor))];
  const loss = [
    ...(hasCe ? [{ kind: 'cross-entropy' as const, logits: PIXEL_LOGITS, targets: TARGETS }] : []),
    ...(hasLogit || !(hasCe || tensors.length) ? [{ kind: 'dot' as const, output: PIXEL_LOGITS, weights: LOGIT_W }] : []),
    ...tensors.map((t, i) => ({ kind: 'dot' as const, output: t, weights: WEIGHTS(i) })),
  ];
  const bytes = addOutputs(model.graph.pixels, divTensors, DT.FLOAT);
  const prog = await GradientProgram.create(bytes, { batch: n, wrt: [PIXELS], loss, outputs: [PIXEL_LOGITS, ...divTensors] }, { threads: opts.threads, where: model.graph.where });
  const dimsOf = (name: string) => prog.graph.inputs.find((i) => i.name === name)!.dims;

  // Fixed weight tensors of the linear layer terms.
  const weights = tensors.map((t, i) => {
    const dims = dimsOf(WEIGHTS(i));
    const w = new Float32Array(dims.reduce((a, b) => a * b, 1));
    const geo = geometry(dims, layouts.get(t)!);
    for (const l of layers) {
      if (l.tensor !== t) continue;
      const term = l.term;
      if (term.kind === 'diversity') continue;
      const chans = term.kind === 'direction' ? term.vector : undefined;
      if (chans && chans.length !== geo.c) throw new UsageError(`objective: direction on '${term.layer}' has ${chans.length} values; the layer has ${geo.c} channels`);
      if (term.kind !== 'direction' && (term.channel < 0 || term.channel >= geo.c)) throw new UsageError(`objective: channel ${term.channel} of '${term.layer}' is out of range (0-${geo.c - 1})`);
      for (let b = 0; b < n; b++) {
        if (term.kind === 'neuron') {
          const y = term.y ?? Math.floor(geo.h / 2);
          const x = term.x ?? Math.floor(geo.w / 2);
          if (y >= geo.h || x >= geo.w) throw new UsageError(`objective: neuron position ${y},${x} is outside '${term.layer}' (${geo.h}x${geo.w})`);
          w[geo.index(b, term.channel, y, x)]! -= term.weight;
          continue;
        }
        const hw = geo.h * geo.w;
        for (let y = 0; y < geo.h; y++)
          for (let x = 0; x < geo.w; x++) {
            if (term.kind === 'channel') w[geo.index(b, term.channel, y, x)]! -= term.weight / hw;
            else for (let c = 0; c < geo.c; c++) w[geo.index(b, c, y, x)]! -= (term.weight * chans![c]!) / hw;
          }
      }
    }
    return w;
  });

  const feeds = (pixels: Float32Array, extra?: Map<number, Float32Array>) => {
    const f: Record<string, Float32Array> = { [PIXELS]: pixels };
    if (hasCe) f[TARGETS] = targets;
    if (loss.some((l) => l.kind === 'dot' && l.output === PIXEL_LOGITS)) f[LOGIT_W] = logitW;
    tensors.forEach((_, i) => (f[WEIGHTS(i)] = extra?.get(i) ?? weights[i]!));
    return f;
  };

  return {
    model, n, size, classIndices,
    async evaluate(pixels) {
      const r = await prog.run(feeds(pixels));
      if (!divTensors.length) return { loss: r.loss, grad: r.grads[PIXELS]!, logits: r.outputs[PIXEL_LOGITS]!.data };
      // Diversity: its gradient with respect to the activations of the first pass, fed as extra dot weights.
      let loss = r.loss;
      const extra = new Map<number, Float32Array>();
      for (const l of layers) {
        if (l.term.kind !== 'diversity') continue;
        const i = tensors.indexOf(l.tensor);
        const out = r.outputs[l.tensor]!;
        const d = diversityGrad(out.data, geometry(out.dims, layouts.get(l.tensor)!), n);
        loss -= l.term.weight * d.value;
        const w = extra.get(i) ?? weights[i]!.slice();
        for (let k = 0; k < w.length; k++) w[k]! -= l.term.weight * d.grad[k]!;
        extra.set(i, w);
      }
      const r2 = await prog.run(feeds(pixels, extra));
      return { loss, grad: r2.grads[PIXELS]!, logits: r.outputs[PIXEL_LOGITS]!.data };
    },
    release: () => prog.release(),
  };
}

/** Index arithmetic of a [N, C, H, W] or [N, H, W, C] tensor (2-D [N, C]: one position). */
export function geometry(dims: number[], layout: 'NCHW' | 'NHWC'): { c: number; h: number; w: number; index(b: number, c: number, y: number, x: number): number } {
  if (dims.length === 2) return { c: dims[1]!, h: 1, w: 1, index: (b, c) => b * dims[1]! + c };
  if (dims.length !== 4) throw new GraftError(`objective: a layer of shape [${dims.join(', ')}] is not supported (give a 4-D feature map or a 2-D vector)`);
  if (layout === 'NCHW') {
    const [, c, h, w] = dims as [number, number, number, number];
    return { c, h, w, index: (b, k, y, x) => ((b * c + k) * h + y) * w + x };
  }
  const [, h, w, c] = dims as [number, number, number, number];
  return { c, h, w, index: (b, k, y, x) => ((b * h + y) * w + x) * c + k };
}

/**
 * Lucid's diversity D = −(1/N) Σ_{i≠j} ⟨Ĝ_i, Ĝ_j⟩ of a batch's activations and ∂D/∂A.
 * G_i = A_iᵀA_i (A_i: positions × channels), Ĝ = G/‖G‖. Backward: ∂D/∂Ĝ_i = −(2/N) Σ_{j≠i} Ĝ_j;
 * through the normalisation ∂/∂G = (V − Ĝ⟨Ĝ, V⟩)/‖G‖; through the Gram matrix ∂/∂A = A(V + Vᵀ).
 */
export function diversityGrad(data: Float32Array, geo: ReturnType<typeof geometry>, n: number): { value: number; grad: Float32Array } {
  const { c: C, h, w } = geo;
  const P = h * w;
  // Each image's activations as a dense [P, C] matrix.
  const mats = Array.from({ length: n }, (_, b) => {
    const A = new Float64Array(P * C);
    for (let k = 0; k < C; k++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) A[(y * w + x) * C + k] = data[geo.index(b, k, y, x)]!;
    return A;
  });
  const grams: Float64Array[] = [];
  const norms: number[] = [];
  for (const A of mats) {
    const G = new Float64Array(C * C);
    for (let p = 0; p < P; p++) {
      const row = p * C;
      for (let i = 0; i < C; i++) {
        const a = A[row + i]!;
        if (a === 0) continue;
        const gi = i * C;
        for (let j = 0; j < C; j++) G[gi + j]! += a * A[row + j]!;
      }
    }
    let s = 0;
    for (const v of G) s += v * v;
    const norm = Math.max(Math.sqrt(s), 1e-10);
    for (let k = 0; k < G.length; k++) G[k]! /= norm;
    grams.push(G);
    norms.push(norm);
  }
  let value = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (i !== j) for (let k = 0; k < C * C; k++) value -= (grams[i]![k]! * grams[j]![k]!) / n;
  const grad = new Float32Array(data.length);
  for (let b = 0; b < n; b++) {
    const V = new Float64Array(C * C);
    for (let j = 0; j < n; j++) if (j !== b) for (let k = 0; k < C * C; k++) V[k]! -= (2 / n) * grams[j]![k]!;
    let dot = 0;
    for (let k = 0; k < C * C; k++) dot += V[k]! * grams[b]![k]!;
    // S = V + Vᵀ of the normalisation's backward: (V − Ĝ⟨Ĝ, V⟩)/‖G‖
    const S = new Float64Array(C * C);
    for (let i = 0; i < C; i++)
      for (let j = 0; j < C; j++) {
        const vij = (V[i * C + j]! - grams[b]![i * C + j]! * dot) / norms[b]!;
        S[i * C + j]! += vij;
        S[j * C + i]! += vij;
      }
    // ∂/∂A[p, i] = Σ_j A[p, j]·S[j, i]  (S is symmetric)
    const A = mats[b]!;
    const out = new Float64Array(C);
    for (let p = 0; p < P; p++) {
      out.fill(0);
      const row = p * C;
      for (let j = 0; j < C; j++) {
        const a = A[row + j]!;
        if (a === 0) continue;
        const sj = j * C;
        for (let i = 0; i < C; i++) out[i]! += a * S[sj + i]!;
      }
      for (let i = 0; i < C; i++) grad[geo.index(b, i, Math.floor(p / w), p % w)] = out[i]!;
    }
  }
  return { value, grad };
}
