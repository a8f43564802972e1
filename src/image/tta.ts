/**
 * Test-time augmentation: a few fixed views of every image whose features (or class scores) are averaged, so that
 * the prediction depends less on where the animal sits and which way it faces. The views are plain AugmentParams
 * (see augment.ts), so they are cached like any other view and are the same in every run.
 */
import { UsageError } from '../errors.js';
import type { AugmentParams } from './augment.js';

export type TtaKind = 'flip' | 'crop';
export const TTA_KINDS: readonly TtaKind[] = ['flip', 'crop'];

const SAME = { brightness: 1, contrast: 1, saturation: 1 } as const;
const FLIP: AugmentParams = { crop: null, flip: true, ...SAME };
/** A square crop of 80% of the area at each corner (where it fits; cropBox shrinks it where it does not). */
const corner = (x: number, y: number): AugmentParams => ({ crop: { area: 0.8, ratio: 1, x, y }, flip: false, ...SAME });

/**
 * The views of one image for a TTA kind; `undefined` is the plain view (the spec's own resize and crop).
 * flip: plain + mirrored (2 views). crop: plain + mirrored + the four corner crops (6 views).
 */
export function ttaViews(kind: TtaKind): (AugmentParams | undefined)[] {
  if (kind === 'flip') return [undefined, FLIP];
  if (kind === 'crop') return [undefined, FLIP, corner(0, 0), corner(1, 0), corner(0, 1), corner(1, 1)];
  throw new UsageError(`--tta ${String(kind)}: one of ${TTA_KINDS.join(', ')}`);
}

export function parseTta(s: string | undefined): TtaKind | undefined {
  if (s === undefined || s === 'none') return undefined;
  if (!(TTA_KINDS as readonly string[]).includes(s)) throw new UsageError(`--tta ${s}: one of none, ${TTA_KINDS.join(', ')}`);
  return s as TtaKind;
}

/**
 * Rows of `views` adjacent views per item (as extracted, `kept` indexing the flattened list) averaged into one row
 * per item. An item is kept only when every view of it decoded (views of one file fail together in practice).
 */
export function averageViews(features: Float32Array, dim: number, kept: number[], views: number, items: number): { features: Float32Array; kept: number[] } {
  const count = new Int32Array(items);
  const sum = new Float64Array(items * dim);
  kept.forEach((flat, r) => {
    const item = Math.floor(flat / views);
    count[item]!++;
    for (let j = 0; j < dim; j++) sum[item * dim + j]! += features[r * dim + j]!;
  });
  const keptItems: number[] = [];
  for (let i = 0; i < items; i++) if (count[i] === views) keptItems.push(i);
  const out = new Float32Array(keptItems.length * dim);
  keptItems.forEach((i, r) => {
    for (let j = 0; j < dim; j++) out[r * dim + j] = sum[i * dim + j]! / views;
  });
  return { features: out, kept: keptItems };
}
