/**
 * The images a classifier got most confidently wrong, as one grid PNG: each photo with its true class, the predicted
 * class and the probability given to it (fastai's plot_top_losses).
 */
import sharp from 'sharp';
import { decodeImage } from '../image/decode.js';
import { writeFileAtomic } from '../util/fs.js';
import { escapeXml } from './charts.js';
import type { WrongPrediction } from './metrics.js';

const FONT = `font-family="DejaVu Sans, Verdana, sans-serif"`;

function truncate(s: string, max: number): string {
  return [...s].length <= max ? s : [...s].slice(0, max - 1).join('') + '…';
}

/**
 * Write the grid; returns how many tiles it holds (images that no longer decode are left out). `wrong` must carry
 * paths (evaluate() with items).
 */
export async function topLossesPng(wrong: WrongPrediction[], path: string, opts: { cols?: number; thumb?: number; title?: string } = {}): Promise<number> {
  const thumb = opts.thumb ?? 176;
  const withPath = wrong.filter((w) => w.path);
  const tiles: { img: Buffer; w: WrongPrediction }[] = [];
  for (const w of withPath) {
    try {
      const px = await decodeImage(w.path!);
      const img = await sharp(px.data, { raw: { width: px.width, height: px.height, channels: 3 } })
        .resize(thumb, thumb, { fit: 'cover' })
        .png()
        .toBuffer();
      tiles.push({ img, w });
    } catch {
      // A file that no longer decodes is simply not shown.
    }
  }
  const cols = Math.max(1, Math.min(opts.cols ?? 4, tiles.length || 1));
  const rows = Math.max(1, Math.ceil(tiles.length / cols));
  const pad = 14;
  const caption = 44;
  const head = 54;
  const cellW = thumb + pad;
  const cellH = thumb + caption + pad;
  const width = pad + cols * cellW;
  const height = head + rows * cellH + (tiles.length ? 0 : 30);
  const maxChars = Math.floor(thumb / 6.6);
  const texts: string[] = [
    `<text x="${pad}" y="28" font-size="18" font-weight="bold" fill="#222" ${FONT}>${escapeXml(opts.title ?? 'most confidently wrong')}</text>`,
    `<text x="${pad}" y="46" font-size="12" fill="#666" ${FONT}>true class / predicted (probability given to the prediction)</text>`,
  ];
  if (!tiles.length) texts.push(`<text x="${pad}" y="${head + 16}" font-size="13" fill="#2b8a3e" ${FONT}>no mistakes</text>`);
  tiles.forEach(({ w }, i) => {
    const x = pad + (i % cols) * cellW;
    const y = head + Math.floor(i / cols) * cellH + thumb;
    texts.push(`<text x="${x}" y="${y + 16}" font-size="12" fill="#222" ${FONT}>${escapeXml(truncate(w.trueClass, maxChars))}</text>`);
    texts.push(`<text x="${x}" y="${y + 32}" font-size="12" fill="#c92a2a" ${FONT}>${escapeXml(truncate(`→ ${w.predictedClass} (${w.probability.toFixed(2)})`, maxChars))}</text>`);
  });
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}"><rect width="100%" height="100%" fill="white"/>${texts.join('')}</svg>`;
  const png = await sharp(Buffer.from(svg))
    .composite(tiles.map(({ img }, i) => ({ input: img, left: pad + (i % cols) * cellW, top: head + Math.floor(i / cols) * cellH })))
    .png()
    .toBuffer();
  await writeFileAtomic(path, png);
  return tiles.length;
}
