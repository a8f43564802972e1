/** The learning-rate finder's picture: loss against learning rate (log scale), with the suggestions marked. */
import { escapeXml, FONT, GRID, INK, MUTED, renderPng, type ChartSize } from './charts.js';
import type { LrFindResult } from './finetune.js';

const RAW = '#a5c8e4';
const SMOOTH = '#1f77b4';
const SUGGEST = '#2b8a3e';
const STEEP = '#e8590c';

export function lrFinderSvg(r: LrFindResult, title = 'learning-rate finder'): { svg: string } & ChartSize {
  const width = 900;
  const height = 560;
  const p = { x: 90, y: 110, w: 760, h: 370 };
  const lx = (lr: number) => Math.log10(lr);
  const x0 = lx(r.lrs[0]!);
  const x1 = lx(r.lrs[r.lrs.length - 1]!);
  const sx = (lr: number) => p.x + ((lx(lr) - x0) / Math.max(1e-12, x1 - x0)) * p.w;
  // The interesting part is below the start: cut the y range where the loss has clearly blown up.
  const trusted = r.smoothed.slice(Math.min(r.settle, r.smoothed.length - 1));
  const lo = Math.min(...trusted);
  const hi = Math.min(Math.max(...trusted), trusted[0]! + 2 * (trusted[0]! - lo) + 1e-6);
  const pad = (hi - lo) * 0.08 + 1e-9;
  const y0 = lo - pad;
  const y1 = hi + pad;
  const sy = (v: number) => p.y + p.h - ((Math.min(Math.max(v, y0), y1) - y0) / (y1 - y0)) * p.h;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT}>`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="${p.x}" y="36" font-size="18" font-weight="bold" fill="${INK}">${escapeXml(title)}</text>`,
    `<text x="${p.x}" y="62" font-size="13" fill="${MUTED}">${escapeXml(
      `suggested --lr ${r.suggested.toExponential(1)} (minimum / 10: ${r.minimumOver10.toExponential(1)}, steepest: ${r.steepest.toExponential(1)}) · ${r.lrs.length} steps${r.stoppedEarly ? ', stopped when the loss diverged' : ''}`,
    )}</text>`,
  ];
  for (let e = Math.ceil(x0); e <= Math.floor(x1); e++) {
    const x = sx(10 ** e);
    out.push(`<line x1="${x}" y1="${p.y}" x2="${x}" y2="${p.y + p.h}" stroke="${GRID}"/>`);
    out.push(`<text x="${x}" y="${p.y + p.h + 20}" font-size="12" fill="${MUTED}" text-anchor="middle">1e${e}</text>`);
  }
  for (let k = 0; k <= 4; k++) {
    const v = y0 + ((y1 - y0) * k) / 4;
    const y = sy(v);
    out.push(`<line x1="${p.x}" y1="${y}" x2="${p.x + p.w}" y2="${y}" stroke="${GRID}"/>`);
    out.push(`<text x="${p.x - 8}" y="${y}" font-size="12" fill="${MUTED}" text-anchor="end" dominant-baseline="central">${Number(v.toPrecision(3))}</text>`);
  }
  out.push(`<rect x="${p.x}" y="${p.y}" width="${p.w}" height="${p.h}" fill="none" stroke="${MUTED}"/>`);
  out.push(`<text x="${p.x + p.w / 2}" y="${p.y + p.h + 46}" font-size="13" fill="${INK}" text-anchor="middle">learning rate (log scale)</text>`);
  out.push(`<text x="${p.x - 62}" y="${p.y + p.h / 2}" font-size="13" fill="${INK}" text-anchor="middle" transform="rotate(-90 ${p.x - 62} ${p.y + p.h / 2})">training loss</text>`);
  const line = (vals: number[], colour: string, w: number) =>
    `<polyline fill="none" stroke="${colour}" stroke-width="${w}" points="${vals.map((v, i) => `${sx(r.lrs[i]!).toFixed(1)},${sy(v).toFixed(1)}`).join(' ')}"/>`;
  out.push(line(r.losses, RAW, 1), line(r.smoothed, SMOOTH, 3));
  const xs = sx(r.lrs[Math.min(r.settle, r.lrs.length - 1)]!);
  out.push(`<rect x="${p.x}" y="${p.y}" width="${Math.max(0, xs - p.x)}" height="${p.h}" fill="#fff" fill-opacity="0.6"/>`);
  const mark = (lr: number, colour: string, label: string, dy: number) => {
    const x = sx(lr);
    out.push(`<line x1="${x}" y1="${p.y}" x2="${x}" y2="${p.y + p.h}" stroke="${colour}" stroke-width="2" stroke-dasharray="6,4"/>`);
    out.push(`<text x="${x + 6}" y="${p.y + 16 + dy}" font-size="12" font-weight="bold" fill="${colour}">${escapeXml(label)}</text>`);
  };
  mark(r.steepest, STEEP, `steepest ${r.steepest.toExponential(1)}`, 18);
  mark(r.suggested, SUGGEST, `suggested ${r.suggested.toExponential(1)}`, 0);
  out.push(`<text x="${p.x}" y="${height - 14}" font-size="12" fill="${MUTED}">light: loss of each batch · dark: smoothed (EMA 0.98) · faded: the first ${r.settle} steps, too few batches to trust</text>`);
  out.push('</svg>');
  return { svg: out.join('\n'), width, height };
}

export async function lrFinderPng(r: LrFindResult, path: string, title?: string): Promise<ChartSize> {
  return renderPng(lrFinderSvg(r, title).svg, path);
}
