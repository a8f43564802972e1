/**
 * Backward rules of 2-D convolution and pooling. Every gradient is itself a convolution, a matrix product or a
 * reduction, so ONNX Runtime runs it with the same MLAS kernels as the forward pass.
 */
import { GraftError } from '../../../errors.js';
import { attrInt, attrInts, attrString, type FwdNode } from '../forward.js';
import { register, reshape, size, type RuleCtx } from './registry.js';

/** Geometry of one 2-D convolution (or pooling window), with auto_pad resolved to explicit pads. */
export interface ConvGeom {
  n: number; c: number; h: number; w: number;
  m: number; oh: number; ow: number;
  kh: number; kw: number;
  group: number;
  sh: number; sw: number;
  dh: number; dw: number;
  /** top, left, bottom, right */
  pt: number; pl: number; pb: number; pr: number;
}

export function convGeom(n: FwdNode, c: RuleCtx, kernel: [number, number], outC?: number): ConvGeom {
  const xd = c.dims(n.inputs[0]!);
  const yd = c.dims(n.outputs[0]!);
  if (xd.length !== 4) throw new GraftError(`node '${n.name}' (${n.opType}): gradients are implemented for 2-D (NCHW) inputs only; this one has rank ${xd.length}`);
  const [sh, sw] = attrInts(n, 'strides') ?? [1, 1];
  const [dh, dw] = attrInts(n, 'dilations') ?? [1, 1];
  const [kh, kw] = kernel;
  let [pt, pl, pb, pr] = attrInts(n, 'pads') ?? [0, 0, 0, 0];
  const auto = attrString(n, 'auto_pad', 'NOTSET');
  const [, , oh, ow] = yd as [number, number, number, number];
  if (auto === 'SAME_UPPER' || auto === 'SAME_LOWER') {
    const total = (out: number, inp: number, s: number, k: number, d: number) => Math.max(0, (out - 1) * s + (k - 1) * d + 1 - inp);
    const th = total(oh, xd[2]!, sh!, kh, dh!);
    const tw = total(ow, xd[3]!, sw!, kw, dw!);
    const lower = auto === 'SAME_LOWER';
    pt = lower ? Math.ceil(th / 2) : Math.floor(th / 2);
    pb = th - pt;
    pl = lower ? Math.ceil(tw / 2) : Math.floor(tw / 2);
    pr = tw - pl;
  } else if (auto === 'VALID') {
    pt = pl = pb = pr = 0;
  }
  return {
    n: xd[0]!, c: xd[1]!, h: xd[2]!, w: xd[3]!, m: outC ?? yd[1]!, oh, ow, kh, kw,
    group: attrInt(n, 'group', 1), sh: sh!, sw: sw!, dh: dh!, dw: dw!, pt: pt!, pl: pl!, pb: pb!, pr: pr!,
  };
}

/** Crop (negative) or keep; returns the slice bounds along one axis and the remaining non-negative pads. */
function cropPads(len: number, before: number, after: number): { start: number; end: number; before: number; after: number } {
  const start = before < 0 ? -before : 0;
  const end = after < 0 ? len + after : len;
  return { start, end, before: Math.max(0, before), after: Math.max(0, after) };
}

/** Slice H and W of an NCHW tensor when a pad is negative. */
function cropHW(c: RuleCtx, t: string, h: number, w: number, ph: [number, number], pw: [number, number]): { t: string; pads: [number, number, number, number]; h: number; w: number } {
  const a = cropPads(h, ph[0], ph[1]);
  const b = cropPads(w, pw[0], pw[1]);
  let out = t;
  if (a.start > 0 || a.end < h || b.start > 0 || b.end < w) {
    out = c.w.op('Slice', [t, c.w.ints([a.start, b.start]), c.w.ints([a.end, b.end]), c.w.ints([2, 3])]);
  }
  return { t: out, pads: [a.before, b.before, a.after, b.after], h: a.end - a.start, w: b.end - b.start };
}

/** W [M, C/g, kh, kw] → [C, M/g, kh, kw], spatially flipped: the kernel of the input gradient as a convolution. */
function backKernel(c: RuleCtx, wName: string, g: ConvGeom): string {
  const cg = g.c / g.group;
  const mg = g.m / g.group;
  let t = wName;
  if (g.group === 1) t = c.w.op('Transpose', [t], { perm: [1, 0, 2, 3] });
  else if (!(cg === 1 || mg === 1)) {
    t = reshape(c, t, [g.group, mg, cg, g.kh, g.kw]);
    t = c.w.op('Transpose', [t], { perm: [0, 2, 1, 3, 4] });
    t = reshape(c, t, [g.c, mg, g.kh, g.kw]);
  } else if (mg !== 1) {
    // depthwise with a channel multiplier: [C·mult, 1, kh, kw] → [C, mult, kh, kw]
    t = reshape(c, t, [g.c, mg, g.kh, g.kw]);
  } else if (cg !== 1) {
    t = reshape(c, t, [g.c, 1, g.kh, g.kw]);
  }
  if (g.kh > 1 || g.kw > 1) {
    const big = -(2 ** 53);
    t = c.w.op('Slice', [t, c.w.ints([-1, -1]), c.w.ints([big, big]), c.w.ints([2, 3]), c.w.ints([-1, -1])]);
  }
  return t;
}

/** dL/dX of a convolution, given dL/dY (dy) and the weight tensor (a constant or a trained input). */
export function convInputGrad(c: RuleCtx, dy: string, wName: string, g: ConvGeom): string {
  const transpose = c.conv.inputGrad === 'conv-transpose' || (c.conv.inputGrad === 'auto' && (g.sh > 1 || g.sw > 1));
  if (transpose) {
    const baseH = g.sh * (g.oh - 1) + (g.kh - 1) * g.dh + 1 - g.pt;
    const baseW = g.sw * (g.ow - 1) + (g.kw - 1) * g.dw + 1 - g.pl;
    const pbH = Math.max(0, baseH - g.h);
    const pbW = Math.max(0, baseW - g.w);
    return c.w.op('ConvTranspose', [dy, wName], {
      strides: [g.sh, g.sw], dilations: [g.dh, g.dw], group: g.group,
      pads: [g.pt, g.pl, pbH, pbW], output_padding: [g.h - baseH + pbH, g.w - baseW + pbW],
    });
  }
  // Zero-upsample dy by the stride: [N,M,OH,OW] → [N,M,OH·sh,OW·sw] (trailing zeros are harmless: they only meet
  // kernel taps that fall outside the input).
  let u = dy;
  let uh = g.oh;
  let uw = g.ow;
  if (g.sh > 1 || g.sw > 1) {
    // A broadcast Mul with a [1,0,…] mask: 9.7 ms → measured below for MobileNet's strided convs with a 6-D Pad.
    const mask = new Float32Array(g.sh * g.sw);
    mask[0] = 1;
    u = reshape(c, u, [g.n, g.m, g.oh, 1, g.ow, 1]);
    u = c.w.op('Mul', [u, c.w.floats([1, 1, 1, g.sh, 1, g.sw], mask)]);
    uh = g.oh * g.sh;
    uw = g.ow * g.sw;
    u = reshape(c, u, [g.n, g.m, uh, uw]);
  }
  const eh = (g.kh - 1) * g.dh;
  const ew = (g.kw - 1) * g.dw;
  const left = [eh - g.pt, ew - g.pl];
  const right = [g.h - uh - left[0]! + eh, g.w - uw - left[1]! + ew];
  const cropped = cropHW(c, u, uh, uw, [left[0]!, right[0]!], [left[1]!, right[1]!]);
  const kernel = backKernel(c, wName, g);
  return c.w.op('Conv', [cropped.t, kernel], { group: g.group, dilations: [g.dh, g.dw], strides: [1, 1], pads: cropped.pads });
}

/** dL/dW [M, C/g, kh, kw] of a convolution with input x [N, C, H, W]. */
export function convWeightGrad(c: RuleCtx, dy: string, x: string, g: ConvGeom): string {
  const pointwise = g.kh === 1 && g.kw === 1 && g.sh === 1 && g.sw === 1 && g.pt + g.pl + g.pb + g.pr === 0;
  if (pointwise && g.group === 1 && c.conv.pointwiseFilterGrad === 'matmul') {
    // dW[m, c] = Σ_n Σ_p dY[n, m, p] · X[n, c, p]
    const hw = g.h * g.w;
    if (g.n > 1 && 2 * g.m * g.c > hw * (g.m + g.c)) {
      // Per-image products about as big as the images or bigger (MobileNet's 14x14 and 7x7 layers: 384x384 from
      // 196 positions, 768x768 from 49): channel-major copies and one product over K = N·H·W instead of N products
      // summed afterwards. --finetune all step, alternated in one process: 499/496 ms → 479/477 ms; a single
      // product everywhere: 490/490.
      const dt = reshape(c, c.w.op('Transpose', [reshape(c, dy, [g.n, g.m, hw])], { perm: [1, 0, 2] }), [g.m, g.n * hw]);
      const xt = reshape(c, c.w.op('Transpose', [reshape(c, x, [g.n, g.c, hw])], { perm: [1, 0, 2] }), [g.c, g.n * hw]);
      const r = c.w.op('MatMul', [dt, c.w.op('Transpose', [xt], { perm: [1, 0] })]);
      return reshape(c, r, [g.m, g.c, 1, 1]);
    }
    const d3 = reshape(c, dy, [g.n, g.m, hw]);
    const x3 = c.w.op('Transpose', [reshape(c, x, [g.n, g.c, hw])], { perm: [0, 2, 1] });
    let r = c.w.op('MatMul', [d3, x3]);
    if (g.n > 1) r = c.w.op('ReduceSum', [r, c.w.ints([0])], { keepdims: 0 });
    return reshape(c, r, [g.m, g.c, 1, 1]);
  }
  if (g.group === 1 && !pointwise && g.c * g.kh * g.kw <= 64 && c.conv.denseFilterGrad === 'unfold') return denseUnfold(c, dy, x, g);
  const depthwise = g.group === g.c && g.group > 1;
  if (depthwise && c.conv.depthwiseFilterGrad === 'taps' && g.m === g.c) return depthwiseTaps(c, dy, x, g);
  if (depthwise && c.conv.depthwiseFilterGrad === 'unfold') return depthwiseUnfold(c, dy, x, g);
  // Strided ones stay grouped convolutions: ORT's Slice with steps copies element by element (C=48 112x112 s2:
  // 78.9 ms against 30.1 for the whole program).
  if (depthwise && g.m === g.c && g.sh === 1 && g.sw === 1 && c.conv.depthwiseFilterGrad === 'shifted-matmul') return depthwiseShiftedMatmul(c, dy, x, g);
  // The batch becomes the channel axis and the gradient the kernel: a convolution with stride = dilation and
  // dilation = stride whose output is the kh × kw filter gradient. Bottom/right pads make the output exactly kh × kw.
  const ph: [number, number] = [g.pt, (g.kh - 1) * g.dh + (g.oh - 1) * g.sh + 1 - g.h - g.pt];
  const pw: [number, number] = [g.pl, (g.kw - 1) * g.dw + (g.ow - 1) * g.sw + 1 - g.w - g.pl];
  const cropped = cropHW(c, x, g.h, g.w, ph, pw);
  const kt = c.w.op('Transpose', [dy], { perm: [1, 0, 2, 3] }); // [M, N, OH, OW]
  const conv = (input: string, kernel: string, group: number) =>
    c.w.op('Conv', [input, kernel], { group, strides: [g.dh, g.dw], dilations: [g.sh, g.sw], pads: cropped.pads });
  const xt = c.w.op('Transpose', [cropped.t], { perm: [1, 0, 2, 3] }); // [C, N, H, W]
  if (g.group === 1) return c.w.op('Transpose', [conv(xt, kt, 1)], { perm: [1, 0, 2, 3] });
  if (depthwise) {
    // Channels of [1, C·N, H, W] in groups of N: group k sees channel k of every image.
    const xg = reshape(c, xt, [1, g.c * g.n, cropped.h, cropped.w]);
    const r = conv(xg, kt, g.c); // [1, M, kh, kw]
    return reshape(c, r, [g.m, 1, g.kh, g.kw]);
  }
  // Other grouped convolutions: one group at a time.
  const cg = g.c / g.group;
  const mg = g.m / g.group;
  const parts: string[] = [];
  for (let k = 0; k < g.group; k++) {
    const xs = c.w.op('Slice', [xt, c.w.ints([k * cg]), c.w.ints([(k + 1) * cg]), c.w.ints([0])]);
    const ks = c.w.op('Slice', [kt, c.w.ints([k * mg]), c.w.ints([(k + 1) * mg]), c.w.ints([0])]);
    parts.push(c.w.op('Transpose', [conv(xs, ks, 1)], { perm: [1, 0, 2, 3] }));
  }
  return c.w.op('Concat', parts, { axis: 0 });
}

/**
 * Every (channel, tap) plane of the convolution's windows over x [N, C, H, W] (strided, dilated, padded), [N,
 * C·kh·kw, OH, OW]: one Conv whose constant weights are one-hot, so MLAS writes the copies in a single call.
 */
function unfold(c: RuleCtx, x: string, channels: number, g: ConvGeom): string {
  const taps = channels * g.kh * g.kw;
  const eye = new Float32Array(taps * taps);
  for (let k = 0; k < taps; k++) eye[k * taps + k] = 1;
  return c.w.op('Conv', [x, c.w.floats([taps, channels, g.kh, g.kw], eye)], {
    strides: [g.sh, g.sw], dilations: [g.dh, g.dw], pads: [g.pt, g.pl, g.pb, g.pr],
  });
}

/**
 * Depthwise filter gradient through an unfold: one Conv with a one-hot kernel per tap writes the kh·kw shifted
 * (strided, dilated, padded) copies of every input channel, [N·C, kh·kw, OH, OW], in a single MLAS call; a batched
 * MatMul with the gradient then sums over the positions, and a ReduceSum over the batch.
 */
function depthwiseUnfold(c: RuleCtx, dy: string, x: string, g: ConvGeom): string {
  const taps = g.kh * g.kw;
  const mult = g.m / g.c;
  const hw = g.oh * g.ow;
  const unfolded = unfold(c, reshape(c, x, [g.n * g.c, 1, g.h, g.w]), 1, g); // [N·C, taps, OH, OW]
  const u = reshape(c, unfolded, [g.n, g.c, taps, hw]);
  const d = mult === 1 ? reshape(c, dy, [g.n, g.c, hw, 1]) : c.w.op('Transpose', [reshape(c, dy, [g.n, g.c, mult, hw])], { perm: [0, 1, 3, 2] });
  let r = c.w.op('MatMul', [u, d]); // [N, C, taps, mult]
  if (g.n > 1) r = c.w.op('ReduceSum', [r, c.w.ints([0])], { keepdims: 0 });
  if (mult > 1) r = c.w.op('Transpose', [reshape(c, r, [g.c, taps, mult])], { perm: [0, 2, 1] });
  return reshape(c, r, [g.m, 1, g.kh, g.kw]);
}

/**
 * Depthwise filter gradient of a stride-1 convolution as one matrix product per (image, channel), [kh, K] × [K, kw]
 * over K = rows·OW, summed over the batch: the kw column shifts of the padded input are sliced, and the kh row
 * shifts are moved onto the gradient instead (zero rows padded above and below), so kh + kw copies replace an
 * unfold's kh·kw. Faster than grouped-conv layer by layer at stride 1 (bench:grad section 4: 10-25%), not in the
 * whole `--finetune all` step (alternated in one process: 552 vs 522 ms and 516 vs 519 ms) and ~80 MB more RSS,
 * so not the default.
 */
function depthwiseShiftedMatmul(c: RuleCtx, dy: string, x: string, g: ConvGeom): string {
  let xp = x;
  if (g.pt + g.pl + g.pb + g.pr > 0) xp = c.w.op('Pad', [x, c.w.ints([0, 0, g.pt, g.pl, 0, 0, g.pb, g.pr])]);
  const hp = g.h + g.pt + g.pb;
  const k = hp * g.ow;
  const cols: string[] = [];
  for (let j = 0; j < g.kw; j++) {
    const s = c.w.op('Slice', [xp, c.w.ints([j * g.dw]), c.w.ints([j * g.dw + g.ow]), c.w.ints([3])]);
    cols.push(reshape(c, s, [g.n, g.c, 1, k]));
  }
  const rows: string[] = [];
  for (let i = 0; i < g.kh; i++) {
    const p = c.w.op('Pad', [dy, c.w.ints([0, 0, i * g.dh, 0, 0, 0, hp - g.oh - i * g.dh, 0])]);
    rows.push(reshape(c, p, [g.n, g.c, 1, k]));
  }
  const xk = g.kw > 1 ? c.w.op('Concat', cols, { axis: 2 }) : cols[0]!; // [N, C, kw, K]
  const dk = g.kh > 1 ? c.w.op('Concat', rows, { axis: 2 }) : rows[0]!; // [N, C, kh, K]
  let r = c.w.op('MatMul', [dk, c.w.op('Transpose', [xk], { perm: [0, 1, 3, 2] })]); // [N, C, kh, kw]
  if (g.n > 1) r = c.w.op('ReduceSum', [r, c.w.ints([0])], { keepdims: 0 });
  return reshape(c, r, [g.m, 1, g.kh, g.kw]);
}

/**
 * Filter gradient of an ungrouped convolution with few input taps: a Conv with constant one-hot weights (which ORT
 * runs in its blocked NCHWc kernels) writes every (channel, tap) plane, [N, C·kh·kw, OH, OW], and one batched
 * MatMul with the gradient, [N, M, OH·OW] × [N, OH·OW, C·kh·kw], summed over the batch, is dW. The general
 * formulation's Conv has a 3x3 output and a huge kernel, which MLAS unfolds element by element.
 */
function denseUnfold(c: RuleCtx, dy: string, x: string, g: ConvGeom): string {
  const taps = g.c * g.kh * g.kw;
  const unfolded = unfold(c, x, g.c, g); // [N, C·kh·kw, OH, OW]
  const hw = g.oh * g.ow;
  const u = c.w.op('Transpose', [reshape(c, unfolded, [g.n, taps, hw])], { perm: [0, 2, 1] });
  let r = c.w.op('MatMul', [reshape(c, dy, [g.n, g.m, hw]), u]); // [N, M, C·kh·kw]
  if (g.n > 1) r = c.w.op('ReduceSum', [r, c.w.ints([0])], { keepdims: 0 });
  return reshape(c, r, [g.m, g.c, g.kh, g.kw]);
}

/** Depthwise filter gradient tap by tap: Σ over N, OH, OW of (strided window of padded X) × dY. */
function depthwiseTaps(c: RuleCtx, dy: string, x: string, g: ConvGeom): string {
  let xp = x;
  if (g.pt + g.pl + g.pb + g.pr > 0) xp = c.w.op('Pad', [x, c.w.ints([0, 0, g.pt, g.pl, 0, 0, g.pb, g.pr])]);
  const taps: string[] = [];
  for (let i = 0; i < g.kh; i++) {
    for (let j = 0; j < g.kw; j++) {
      const s = c.w.op('Slice', [xp, c.w.ints([i * g.dh, j * g.dw]), c.w.ints([i * g.dh + (g.oh - 1) * g.sh + 1, j * g.dw + (g.ow - 1) * g.sw + 1]), c.w.ints([2, 3]), c.w.ints([g.sh, g.sw])]);
      taps.push(c.w.op('ReduceSum', [c.w.op('Mul', [s, dy]), c.w.ints([0, 2, 3])], { keepdims: 1 })); // [1, C, 1, 1]
    }
  }
  const all = c.w.op('Concat', taps, { axis: 0 }); // [kh·kw, C, 1, 1]
  return reshape(c, c.w.op('Transpose', [all], { perm: [1, 2, 3, 0] }), [g.c, 1, g.kh, g.kw]);
}

register({
  Conv: (n, [dy], c) => {
    if (!dy) return [];
    const wd = c.dims(n.inputs[1]!);
    if (wd.length !== 4) throw new GraftError(`node '${n.name}' (Conv): gradients are implemented for 2-D convolutions only`);
    const g = convGeom(n, c, [wd[2]!, wd[3]!], wd[0]);
    return [
      c.needs(0) ? convInputGrad(c, dy, n.inputs[1]!, g) : undefined,
      c.needs(1) ? convWeightGrad(c, dy, n.inputs[0]!, g) : undefined,
      n.inputs[2] && c.needs(2) ? c.w.op('ReduceSum', [dy, c.w.ints([0, 2, 3])], { keepdims: 0 }) : undefined,
    ];
  },
  GlobalAveragePool: (n, [dy], c) => {
    if (!dy) return [];
    const xd = c.dims(n.inputs[0]!);
    const k = size(xd.slice(2));
    return [c.w.op('Expand', [c.w.op('Mul', [dy, c.w.scalar(1 / k)]), c.w.ints(xd)])];
  },
  AveragePool: (n, [dy], c) => {
    if (!dy) return [];
    const [kh, kw] = attrInts(n, 'kernel_shape') as [number, number];
    const g = convGeom(n, c, [kh, kw]);
    const geom = { ...g, group: g.c, m: g.c };
    // Each output is a mean over the window's cells that lie in the input (count_include_pad=0) or over the whole
    // window: dividing dy by that count turns the backward pass into a depthwise convolution with a kernel of ones.
    const counts = new Float32Array(g.oh * g.ow);
    const include = attrInt(n, 'count_include_pad', 0) === 1;
    for (let i = 0; i < g.oh; i++) {
      for (let j = 0; j < g.ow; j++) {
        let k = 0;
        for (let a = 0; a < kh; a++) {
          for (let b = 0; b < kw; b++) {
            const y = i * g.sh + a - g.pt;
            const x = j * g.sw + b - g.pl;
            const inPadded = y < g.h + g.pb && x < g.w + g.pr;
            if ((y >= 0 && y < g.h && x >= 0 && x < g.w) || (include && inPadded)) k++;
          }
        }
        counts[i * g.ow + j] = 1 / Math.max(1, k);
      }
    }
    const scaled = c.w.op('Mul', [dy, c.w.floats([1, 1, g.oh, g.ow], counts)]);
    const ones = c.w.floats([g.c, 1, kh, kw], new Float32Array(g.c * kh * kw).fill(1));
    return [convInputGrad(c, scaled, ones, geom)];
  },
  GlobalMaxPool: (n, [dy], c) => {
    if (!dy) return [];
    // The gradient goes to the cells equal to the maximum (shared among ties, as a max does not pick one).
    const x = n.inputs[0]!;
    const hit = c.w.op('Cast', [c.w.op('Equal', [x, n.outputs[0]!])], { to: 1 });
    const ties = c.w.op('ReduceSum', [hit, c.w.ints([2, 3])], { keepdims: 1 });
    return [c.w.op('Mul', [hit, c.w.op('Div', [dy, ties])])];
  },
  MaxPool: (n, [dy], c) => {
    if (!dy) return [];
    if (attrInt(n, 'storage_order', 0) !== 0) throw new GraftError(`node '${n.name}' (MaxPool): storage_order=1 has no gradient rule`);
    const xd = c.dims(n.inputs[0]!);
    const total = size(xd);
    // Indices are positions in the flattened input; windows overlap, so contributions to one cell are added.
    const idx = c.extraOutput(n, 1);
    const flatIdx = reshape(c, idx, [-1]);
    const flatDy = reshape(c, dy, [-1]);
    const zero = c.w.op('ConstantOfShape', [c.w.ints([total])]);
    const dx = c.w.op('ScatterElements', [zero, flatIdx, flatDy], { axis: 0, reduction: 'add' });
    return [reshape(c, dx, xd)];
  },
});
