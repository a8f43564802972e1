/**
 * The lesson's comparison as one PNG: a column per stage (plain gradient ascent, + total variation, + Fourier and
 * decorrelated colour, + transforms), each ideal image with the source network's probability under it and the
 * top-5 of every other network, the intended class in green.
 */
import sharp from 'sharp';
import type { RgbImage } from '../../image/decode.js';
import { escapeXml } from '../../learn/charts.js';
import { writeFileAtomic } from '../../util/fs.js';
import type { JudgeVerdict } from './judges.js';

const FONT = `font-family="DejaVu Sans, Verdana, sans-serif"`;

export interface SheetColumn {
  title: string;
  /** A second, smaller line under the title (the stage's settings). */
  note?: string;
  image: RgbImage;
  /** The source network's probability of the class, on the saved 8-bit image. */
  probability: number;
  verdicts: JudgeVerdict[];
}

function truncate(s: string, max: number): string {
  return [...s].length <= max ? s : [...s].slice(0, max - 1).join('') + '…';
}

/** The judges' names without the prefix they share (e.g. "mobilenet_"), which goes into the subtitle. */
export function shortNames(names: string[]): { prefix: string; names: string[] } {
  if (names.length < 2) return { prefix: '', names };
  let p = names[0]!;
  for (const n of names) while (!n.startsWith(p)) p = p.slice(0, -1);
  const cut = p.lastIndexOf('_') + 1;
  return cut >= 3 ? { prefix: p.slice(0, cut), names: names.map((n) => n.slice(cut)) } : { prefix: '', names };
}

export async function compareSheet(columns: SheetColumn[], path: string, opts: { title: string; subtitle?: string }): Promise<{ bytes: number; width: number; height: number }> {
  const img = columns[0]!.image.width;
  const pad = 16;
  const gap = 36;
  const head = 80;
  const line = 15;
  const judges = Math.max(0, ...columns.map((c) => c.verdicts.length));
  const textH = 2 * line + judges * 6 * line + 8;
  const cellW = img + gap;
  const width = 2 * pad + columns.length * cellW - gap;
  const height = head + img + textH + pad;
  // DejaVu Sans averages ~0.52 em a character here (bold ~0.6): what fits in a column.
  const fits = (size: number, bold = false) => Math.floor((img + gap - 10) / (size * (bold ? 0.6 : 0.52)));
  const short = shortNames(columns[0]!.verdicts.map((v) => v.judge));
  const t: string[] = [
    `<text x="${pad}" y="26" font-size="18" font-weight="bold" fill="#222" ${FONT}>${escapeXml(opts.title)}</text>`,
    `<text x="${pad}" y="46" font-size="12" fill="#666" ${FONT}>${escapeXml(opts.subtitle ?? '')}</text>`,
  ];
  columns.forEach((c, i) => {
    const x = pad + i * cellW;
    t.push(`<text x="${x}" y="${head - 18}" font-size="13" font-weight="bold" fill="#222" ${FONT}>${escapeXml(truncate(c.title, fits(13, true)))}</text>`);
    if (c.note) t.push(`<text x="${x}" y="${head - 5}" font-size="11" fill="#666" ${FONT}>${escapeXml(truncate(c.note, fits(11)))}</text>`);
    let y = head + img + line + 2;
    const prob = Number.isNaN(c.probability) ? 'source network' : `source network: p = ${c.probability.toFixed(3)}`;
    t.push(`<text x="${x}" y="${y}" font-size="12.5" font-weight="bold" fill="#222" ${FONT}>${escapeXml(prob)}</text>`);
    y += line + 4;
    c.verdicts.forEach((v, k) => {
      const ok = v.rank !== null;
      const name = short.names[k] ?? v.judge;
      t.push(`<text x="${x}" y="${y}" font-size="11.5" font-weight="bold" fill="${ok ? '#2b8a3e' : '#c92a2a'}" ${FONT}>${escapeXml(truncate(`${ok ? '✓' : '✗'} ${name}${ok ? ` #${v.rank}` : ''}`, fits(11.5, true)))}</text>`);
      y += line;
      for (const p of v.top5) {
        const hit = v.rank !== null && v.top5[v.rank - 1] === p;
        const label = p.label.split(',')[0]!.replace(/_/g, ' ');
        t.push(`<text x="${x + 8}" y="${y}" font-size="11" fill="${hit ? '#2b8a3e' : '#444'}"${hit ? ' font-weight="bold"' : ''} ${FONT}>${escapeXml(truncate(`${(p.probability * 100).toFixed(1).padStart(4)}%  ${label}`, fits(11) - 2))}</text>`);
        y += line;
      }
    });
  });
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}"><rect width="100%" height="100%" fill="white"/>${t.join('')}</svg>`;
  const tiles = await Promise.all(columns.map((c) => sharp(c.image.data, { raw: { width: c.image.width, height: c.image.height, channels: 3 } }).png().toBuffer()));
  // A palette PNG: four noise-rich pictures stay a few hundred kB smaller, with no visible loss at this size.
  const png = await sharp(Buffer.from(svg))
    .composite(tiles.map((input, i) => ({ input, left: pad + i * cellW, top: head })))
    .png({ palette: true, quality: 95, effort: 8 })
    .toBuffer();
  await writeFileAtomic(path, png);
  return { bytes: png.length, width, height };
}
