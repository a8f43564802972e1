/**
 * One PNG per layer: the input image as the model sees it on the left, a grid of channel maps on the right (each
 * scaled to its own min/max, viridis, nearest-neighbour upscaled, labelled with its channel index), a title with the
 * layer, op and shape. Pixels are drawn into a raw buffer; sharp adds the text (an SVG overlay) and encodes.
 */
import { basename, extname, join } from 'node:path';
import sharp from 'sharp';
import type { RgbImage } from '../image/decode.js';
import { writeFileAtomic } from '../util/fs.js';
import { colourIndex, viridisTable } from './colormap.js';
import type { FeatureMapsResult, LayerMaps } from './featuremaps.js';

export interface FeatureMapPngOptions {
  /** Target size in pixels of the longer side of each map tile (default 112; maps are scaled by a whole factor when they fit). */
  cell?: number;
  /** Tiles per row (default: about twice as many columns as rows). */
  columns?: number;
}

export interface RenderedPng { png: Buffer; width: number; height: number }

const BG: [number, number, number] = [255, 255, 255];
const PAD = 20;
const GAP = 8;
const LABEL_H = 16;
const TITLE_H = 56;
const FONT = "'DejaVu Sans', Verdana, sans-serif";

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/** Tile size for an h x w map: a whole-number upscale when the map fits in `cell`, else shrunk to `cell`. */
export function tileSize(h: number, w: number, cell: number): { th: number; tw: number } {
  const long = Math.max(h, w);
  if (long <= cell) {
    const k = Math.floor(cell / long);
    return { th: h * k, tw: w * k };
  }
  return { th: Math.max(1, Math.round((h * cell) / long)), tw: Math.max(1, Math.round((w * cell) / long)) };
}

function fill(canvas: Buffer, cw: number, x0: number, y0: number, w: number, h: number, rgb: readonly number[]): void {
  for (let y = y0; y < y0 + h; y++) for (let x = x0; x < x0 + w; x++) canvas.set(rgb, (y * cw + x) * 3);
}

/** Draw one map (normalised to its own min/max) at (x0, y0), nearest-neighbour scaled to tw x th. */
function drawMap(canvas: Buffer, cw: number, x0: number, y0: number, map: Float32Array, h: number, w: number, th: number, tw: number): void {
  const lut = viridisTable();
  let lo = Infinity, hi = -Infinity;
  for (const v of map) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  for (let y = 0; y < th; y++) {
    const sy = Math.min(h - 1, Math.floor(((y + 0.5) * h) / th));
    let o = ((y0 + y) * cw + x0) * 3;
    for (let x = 0; x < tw; x++, o += 3) {
      const sx = Math.min(w - 1, Math.floor(((x + 0.5) * w) / tw));
      const i = colourIndex(map[sy * w + sx]!, lo, hi) * 3;
      canvas[o] = lut[i]!;
      canvas[o + 1] = lut[i + 1]!;
      canvas[o + 2] = lut[i + 2]!;
    }
  }
}

function blit(canvas: Buffer, cw: number, x0: number, y0: number, img: RgbImage): void {
  for (let y = 0; y < img.height; y++) img.data.copy(canvas, ((y0 + y) * cw + x0) * 3, y * img.width * 3, (y + 1) * img.width * 3);
}

/** The input image at a readable size: small model inputs are enlarged by a whole factor, huge ones shrunk. */
async function displayImage(img: RgbImage): Promise<RgbImage> {
  const long = Math.max(img.width, img.height);
  let scale = 1;
  if (long < 160) scale = Math.ceil(160 / long);
  else if (long > 384) scale = 384 / long;
  if (scale === 1) return img;
  const width = Math.max(1, Math.round(img.width * scale));
  const height = Math.max(1, Math.round(img.height * scale));
  const { data, info } = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
    .resize(width, height, { fit: 'fill', kernel: scale > 1 ? 'nearest' : 'lanczos3' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

function clip(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, Math.max(1, max - 1))}…`;
}

function fmt(x: number): string {
  if (x === 0) return '0';
  const a = Math.abs(x);
  return a >= 1000 || a < 0.01 ? x.toExponential(1) : Number(x.toPrecision(3)).toString();
}

/** Render one layer's maps (with the input image from `result`) as a PNG. */
export async function renderFeatureMapPng(
  result: Pick<FeatureMapsResult, 'image' | 'model' | 'imagePath'>,
  layer: LayerMaps,
  opts: FeatureMapPngOptions = {},
): Promise<RenderedPng> {
  const n = layer.maps.length;
  const { th, tw } = tileSize(layer.height, layer.width, opts.cell ?? 112);
  const cols = Math.max(1, Math.min(n, opts.columns ?? Math.ceil(Math.sqrt(2 * n * (th / tw)))));
  const rows = Math.max(1, Math.ceil(n / cols));
  const input = await displayImage(result.image);
  const legendW = Math.max(input.width, 200);
  const leftW = legendW;
  const leftH = input.height + 48 + 48 + 4 * 18;
  const gridX = PAD + leftW + 2 * PAD;
  const gridY = PAD + TITLE_H;
  const gridW = cols * (tw + GAP) - GAP;
  const gridH = rows * (th + LABEL_H + GAP) - GAP;

  const title = layer.layer;
  const op = layer.tensor !== layer.layer ? `${layer.op} → ${layer.tensor}` : layer.op;
  const selection = layer.channels.length === layer.channelCount ? `all ${layer.channelCount} channels` : `${layer.channels.length} of ${layer.channelCount} channels`;
  const order = layer.selection === 'strongest' ? 'strongest mean activation first' : 'in index order';
  const subtitle = `${op} · [${layer.shape.join(', ')}] ${layer.layout}${layer.role ? ` · ${layer.role} block` : ''} · ${selection}, ${order} · each map scaled to its own min–max`;
  const textW = Math.max(title.length * 10.5, subtitle.length * 7.4);
  const width = Math.ceil(Math.max(gridX + gridW + PAD, textW + 2 * PAD));
  const height = Math.ceil(gridY + Math.max(gridH, leftH) + PAD);

  const canvas = Buffer.alloc(width * height * 3);
  for (let i = 0; i < canvas.length; i += 3) canvas.set(BG, i);

  // Left column: input image, colour bar.
  const imgY = gridY;
  blit(canvas, width, PAD, imgY, input);
  const barY = imgY + input.height + 48;
  const lut = viridisTable();
  for (let x = 0; x < legendW; x++) {
    const i = Math.round((255 * x) / Math.max(1, legendW - 1)) * 3;
    fill(canvas, width, PAD + x, barY, 1, 12, [lut[i]!, lut[i + 1]!, lut[i + 2]!]);
  }

  // Grid of maps.
  const tiles: string[] = [];
  for (let k = 0; k < n; k++) {
    const x = gridX + (k % cols) * (tw + GAP);
    const y = gridY + Math.floor(k / cols) * (th + LABEL_H + GAP);
    drawMap(canvas, width, x, y, layer.maps[k]!, layer.height, layer.width, th, tw);
    const s = layer.channelStats[k];
    const flat = s && !(s.max > s.min);
    tiles.push(
      `<text x="${x + tw / 2}" y="${y + th + 12}" text-anchor="middle" class="lab">#${layer.channels[k]}${flat ? ` <tspan class="dim">(flat ${fmt(s.min)})</tspan>` : ''}</text>`,
    );
  }

  const st = layer.stats;
  const lines = [
    `values ${fmt(st.min)} … ${fmt(st.max)}, mean ${fmt(st.mean)}`,
    `${(100 * st.zeroFraction).toFixed(1)}% zeros, ${st.flatChannels} flat channel${st.flatChannels === 1 ? '' : 's'}`,
    `model ${basename(result.model)}`,
    `image ${basename(result.imagePath)}`,
  ];
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">
<style>
  text { font-family: ${FONT}; fill: #1f1f1f; }
  .title { font-size: 18px; font-weight: bold; }
  .sub { font-size: 12.5px; fill: #555; }
  .lab { font-size: 11.5px; fill: #333; }
  .dim { fill: #999; }
  .cap { font-size: 12px; fill: #444; }
  .small { font-size: 11px; fill: #666; }
</style>
<text x="${PAD}" y="${PAD + 16}" class="title">${esc(title)}</text>
<text x="${PAD}" y="${PAD + 38}" class="sub">${esc(subtitle)}</text>
<text x="${PAD}" y="${imgY + input.height + 17}" class="cap">model input ${result.image.width}×${result.image.height}</text>
<text x="${PAD}" y="${barY - 4}" class="small">colour scale (per map)</text>
<text x="${PAD}" y="${barY + 26}" class="small">low</text>
<text x="${PAD + legendW}" y="${barY + 26}" text-anchor="end" class="small">high</text>
${lines.map((l, i) => `<text x="${PAD}" y="${barY + 48 + i * 18}" class="small">${esc(clip(l, Math.floor(leftW / 6.4)))}</text>`).join('\n')}
${tiles.join('\n')}
</svg>`;

  const png = await sharp(canvas, { raw: { width, height, channels: 3 } })
    .composite([{ input: Buffer.from(svg), left: 0, top: 0 }])
    .png({ compressionLevel: 6 })
    .toBuffer();
  return { png, width, height };
}

function slug(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^[_.]+|_+$/g, '') || 'layer';
}

/**
 * Where each layer's PNG goes for `--out`: a path ending in .png is the file for a single layer, and the stem for
 * several (`maps.png` -> `maps-1.png`, `maps-2.png`, ...); anything else is a folder holding `<n>-<layer>.png`.
 */
export function featureMapPaths(out: string, layers: Pick<LayerMaps, 'layer'>[]): string[] {
  if (extname(out).toLowerCase() === '.png') {
    if (layers.length === 1) return [out];
    const stem = out.slice(0, -4);
    return layers.map((_, i) => `${stem}-${i + 1}.png`);
  }
  return layers.map((l, i) => join(out, `${i + 1}-${slug(l.layer)}.png`));
}

/** Render and write one PNG per layer (atomically); returns the paths, in layer order. */
export async function writeFeatureMapPngs(result: FeatureMapsResult, out: string, opts: FeatureMapPngOptions = {}): Promise<string[]> {
  const paths = featureMapPaths(out, result.layers);
  for (let i = 0; i < result.layers.length; i++) {
    const { png } = await renderFeatureMapPng(result, result.layers[i]!, opts);
    await writeFileAtomic(paths[i]!, png);
  }
  return paths;
}
