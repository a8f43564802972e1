import { defaultSpec, PreprocessSpec, RANGE_0_1, RANGE_0_255, RANGE_MINUS1_1 } from '../image/spec.js';
import type { OnnxInfo } from './onnx-file.js';

export interface DerivedSpec { spec: PreprocessSpec; source: string; warnings: string[] }

/** Windows ML image metadata (`Image.NominalPixelRange`) → mean/std over [0, 1] pixels. */
const NOMINAL_RANGES: Record<string, { mean: readonly number[]; std: readonly number[] }> = {
  NominalRange_0_255: RANGE_0_255,
  Normalized_0_1: RANGE_0_1,
  Normalized_1_1: RANGE_MINUS1_1,
};

/** Layout and size from the first input's shape: [N,3,H,W] is NCHW, [N,H,W,3] is NHWC. */
function layoutFromShape(shape: (number | string)[]): { layout: 'NCHW' | 'NHWC'; size?: [number, number] } | undefined {
  if (shape.length !== 4) return undefined;
  const [, a, b, c] = shape;
  if (a === 3) return { layout: 'NCHW', size: typeof b === 'number' && typeof c === 'number' ? [b, c] : undefined };
  if (c === 3) return { layout: 'NHWC', size: typeof a === 'number' && typeof b === 'number' ? [a, b] : undefined };
  return undefined;
}

/**
 * What the model file itself says about its input: shape (layout, size) and the Windows ML image metadata
 * (pixel format, nominal range). Returns the parts it could find; the caller fills the rest.
 */
export function specFromModel(info: OnnxInfo): { partial: Partial<PreprocessSpec>; found: string[] } {
  const partial: Partial<PreprocessSpec> = {};
  const found: string[] = [];
  const input = info.inputs[0];
  const lay = input ? layoutFromShape(input.shape) : undefined;
  if (lay) {
    partial.layout = lay.layout;
    found.push('layout');
    if (lay.size) {
      partial.size = lay.size;
      found.push('size');
    }
  }
  const fmt = info.metadata['Image.BitmapPixelFormat'];
  if (fmt === 'Bgr8' || fmt === 'Bgra8') partial.channelOrder = 'BGR';
  else if (fmt === 'Rgb8' || fmt === 'Rgba8') partial.channelOrder = 'RGB';
  if (partial.channelOrder) found.push('channel order');
  const range = NOMINAL_RANGES[info.metadata['Image.NominalPixelRange'] ?? ''];
  if (range) {
    partial.mean = [...range.mean] as [number, number, number];
    partial.std = [...range.std] as [number, number, number];
    found.push('normalisation');
  }
  return { partial, found };
}

/**
 * The preprocessing for a model, from (highest priority first) explicit overrides, a sidecar config, the model's own
 * metadata, then defaults (224, shorter side + centre crop, bilinear, ImageNet mean/std) with a warning for each
 * guess that matters.
 */
export function derivePreprocess(
  info: OnnxInfo,
  sidecar: Partial<PreprocessSpec> | undefined,
  overrides: Partial<PreprocessSpec> = {},
): DerivedSpec {
  const fromModel = specFromModel(info);
  const warnings: string[] = [];
  const merged: Partial<PreprocessSpec> = { ...fromModel.partial, ...(sidecar ?? {}), ...overrides };
  const known = (k: keyof PreprocessSpec) => k in overrides || (sidecar && k in sidecar) || k in fromModel.partial;
  if (!known('mean') || !known('std')) {
    warnings.push(`${info.path}: the model does not say how to normalise its input; using ImageNet mean/std (set --mean/--std or --range)`);
  }
  if (!known('size')) warnings.push(`${info.path}: input size unknown; using 224x224 (set --size)`);
  const spec = defaultSpec(merged);
  const sources = [
    Object.keys(overrides).length ? 'flags' : '',
    sidecar ? 'sidecar config' : '',
    fromModel.found.length ? `model metadata (${fromModel.found.join(', ')})` : '',
  ].filter(Boolean);
  return { spec, source: sources.length ? sources.join(' + ') : 'defaults', warnings };
}
