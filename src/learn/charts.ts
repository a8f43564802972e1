/**
 * Pictures people would rather look at than read: a confusion matrix heat-map and training curves. Built as SVG
 * strings (also exported, e.g. for HTML reports) and rendered to PNG by sharp/libvips, 1 SVG unit = 1 pixel.
 */
import sharp from 'sharp';
import { GraftError } from '../errors.js';
import { writeFileAtomic } from '../util/fs.js';
import type { EpochLog } from './heads.js';

export interface ChartSize {
  width: number;
  height: number;
}

export const FONT = `font-family="DejaVu Sans, Verdana, sans-serif"`;
export const INK = '#222';
export const MUTED = '#666';
export const GRID = '#e4e4e4';
const TRAIN_COLOUR = '#1f77b4';
const VAL_COLOUR = '#e8590c';
const BEST_COLOUR = '#2b8a3e';

export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/** Rough width of a string in DejaVu Sans (a wide face: ~0.58 em per character on average, a little generous). */
function textWidth(s: string, fontSize: number): number {
  return [...s].length * fontSize * 0.58;
}

function truncate(s: string, maxChars: number): string {
  const chars = [...s];
  return chars.length <= maxChars ? s : chars.slice(0, maxChars - 1).join('') + '…';
}

function fmt(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(2).replace(/\.?0+$/, '');
}

function mix(a: [number, number, number], b: [number, number, number], t: number): string {
  const c = a.map((v, i) => Math.round(v + (b[i] - v) * t));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

const BLUE_LO: [number, number, number] = [232, 241, 250];
const BLUE_HI: [number, number, number] = [8, 69, 148];
const RED_LO: [number, number, number] = [253, 234, 224];
const RED_HI: [number, number, number] = [165, 15, 21];

export async function renderPng(svg: string, path: string): Promise<ChartSize> {
  const { data, info } = await sharp(Buffer.from(svg)).png().toBuffer({ resolveWithObject: true });
  await writeFileAtomic(path, data);
  return { width: info.width, height: info.height };
}

// ---------------------------------------------------------------------------------------------------------------
// Confusion matrix

/**
 * Confusion matrix heat-map as SVG: rows = true class, columns = predicted. Colour is the row share (what fraction
 * of the true class's images landed in the cell): blue on the diagonal (correct), red off it (confusions), so
 * mistakes stand out. Counts are printed in the cells; the right column gives each class's recall.
 */
export function confusionMatrixSvg(confusion: number[][], classes: string[], title?: string): { svg: string } & ChartSize {
  const n = classes.length;
  if (n === 0) throw new GraftError('confusion matrix: no classes');
  if (confusion.length !== n || confusion.some((row) => row.length !== n)) {
    throw new GraftError(`confusion matrix: expected ${n} × ${n} counts for ${n} classes`);
  }
  const cell = n <= 4 ? 80 : n <= 8 ? 60 : n <= 14 ? 42 : n <= 24 ? 30 : Math.max(18, Math.min(26, Math.floor(960 / n)));
  const labelFont = n <= 14 ? 14 : cell >= 24 ? 12 : 11;
  const countFont = Math.min(16, Math.max(8, Math.floor(cell * 0.4)));
  const maxChars = 28;
  const labels = classes.map((c) => truncate(c, maxChars));
  const maxLabelW = Math.max(...labels.map((l) => textWidth(l, labelFont)));

  // x labels: horizontal when they fit in a cell, otherwise rotated -45°.
  const rotate = labels.some((l) => textWidth(l, labelFont) > cell - 6);
  const diag = Math.SQRT1_2;
  const xLabelDepth = rotate ? maxLabelW * diag + labelFont + 8 : labelFont + 10;
  // How far rotated x labels reach left of the grid's left edge (a long name under an early column).
  const xLabelLeftReach = rotate
    ? Math.max(...labels.map((l, j) => textWidth(l, labelFont) * diag - (j * cell + cell / 2)))
    : 0;

  const axisTitleFont = 15;
  const titleFont = 18;
  const titleY = 20 + titleFont;
  const subtitleY = titleY + 22;
  const top = subtitleY + 30; // leaves room for the "recall" header
  const gridW = n * cell;
  const left = Math.ceil(Math.max(20 + axisTitleFont + 12 + maxLabelW + 8, xLabelLeftReach + 20));
  let total = 0;
  let correct = 0;
  const rowSums = confusion.map((row) => row.reduce((a, b) => a + b, 0));
  for (let i = 0; i < n; i++) {
    total += rowSums[i];
    correct += confusion[i][i];
  }
  const recallColW = 64;
  const legendW = 150;
  const acc = total > 0 ? `${((100 * correct) / total).toFixed(1)}% correct` : 'no images';
  const subtitle = `${acc} · ${total} images · ${n} classes · colour = share of the true class`;
  const width = Math.ceil(Math.max(left + gridW + recallColW + legendW + 20, 40 + textWidth(subtitle, 13)));
  const height = Math.ceil(top + gridW + xLabelDepth + axisTitleFont + 24);


  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT}>`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
  );
  const titleText = title ? `confusion matrix — ${title}` : 'confusion matrix';
  const textX = Math.min(left, width - 20 - textWidth(subtitle, 13));
  out.push(
    `<text x="${textX}" y="${titleY}" font-size="${titleFont}" font-weight="bold" fill="${INK}">${escapeXml(titleText)}</text>`,
    `<text x="${textX}" y="${subtitleY}" font-size="13" fill="${MUTED}">${escapeXml(subtitle)}</text>`,
  );

  // cells
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const count = confusion[i][j];
      const share = rowSums[i] > 0 ? count / rowSums[i] : 0;
      const x = left + j * cell;
      const y = top + i * cell;
      let fill = i === j ? '#f3f6fa' : '#fafafa';
      if (count > 0) {
        const t = 0.12 + 0.88 * share; // any non-zero cell stays visible
        fill = i === j ? mix(BLUE_LO, BLUE_HI, t) : mix(RED_LO, RED_HI, t);
      }
      out.push(`<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${fill}" stroke="#fff" stroke-width="1"/>`);
      if (count > 0 || n <= 12) {
        const colour = count === 0 ? '#bbb' : share > 0.5 ? '#fff' : INK;
        const text = String(count);
        const fs = textWidth(text, countFont) > cell - 3 ? Math.max(7, Math.floor((cell - 3) / (text.length * 0.62))) : countFont;
        out.push(
          `<text x="${x + cell / 2}" y="${y + cell / 2}" font-size="${fs}" fill="${colour}" text-anchor="middle" dominant-baseline="central">${text}</text>`,
        );
      }
    }
  }
  out.push(`<rect x="${left}" y="${top}" width="${gridW}" height="${gridW}" fill="none" stroke="#999" stroke-width="1"/>`);

  // row labels (true)
  for (let i = 0; i < n; i++) {
    out.push(
      `<text x="${left - 8}" y="${top + i * cell + cell / 2}" font-size="${labelFont}" fill="${INK}" text-anchor="end" dominant-baseline="central">${escapeXml(labels[i])}</text>`,
    );
  }
  // column labels (predicted)
  for (let j = 0; j < n; j++) {
    const cx = left + j * cell + cell / 2;
    const y = top + gridW + 8;
    if (rotate) {
      out.push(
        `<text transform="translate(${cx + labelFont * 0.35},${y}) rotate(-45)" font-size="${labelFont}" fill="${INK}" text-anchor="end" dominant-baseline="hanging">${escapeXml(labels[j])}</text>`,
      );
    } else {
      out.push(
        `<text x="${cx}" y="${y}" font-size="${labelFont}" fill="${INK}" text-anchor="middle" dominant-baseline="hanging">${escapeXml(labels[j])}</text>`,
      );
    }
  }
  // recall column
  const rx = left + gridW + 10;
  out.push(`<text x="${rx}" y="${top - 8}" font-size="12" fill="${MUTED}">recall</text>`);
  for (let i = 0; i < n; i++) {
    const r = rowSums[i] > 0 ? `${Math.round((100 * confusion[i][i]) / rowSums[i])}%` : '–';
    out.push(
      `<text x="${rx}" y="${top + i * cell + cell / 2}" font-size="${Math.min(12, labelFont)}" fill="${MUTED}" dominant-baseline="central">${r}</text>`,
    );
  }
  // axis titles
  out.push(
    `<text x="${left + gridW / 2}" y="${height - 16}" font-size="${axisTitleFont}" font-weight="bold" fill="${INK}" text-anchor="middle">predicted</text>`,
    `<text transform="translate(${left - maxLabelW - 20},${top + gridW / 2}) rotate(-90)" font-size="${axisTitleFont}" font-weight="bold" fill="${INK}" text-anchor="middle">true</text>`,
  );
  // legend: two colour ramps
  const lx = left + gridW + recallColW + 10;
  const rampH = Math.min(160, Math.max(80, gridW / 2 - 30));
  const ramp = (x: number, y: number, lo: [number, number, number], hi: [number, number, number], label: string, id: string) => {
    out.push(
      `<defs><linearGradient id="${id}" x1="0" y1="1" x2="0" y2="0"><stop offset="0" stop-color="${mix(lo, hi, 0.12)}"/><stop offset="1" stop-color="${mix(lo, hi, 1)}"/></linearGradient></defs>`,
      `<text x="${x}" y="${y - 8}" font-size="12" fill="${INK}">${label}</text>`,
      `<rect x="${x}" y="${y}" width="16" height="${rampH}" fill="url(#${id})" stroke="#999" stroke-width="0.5"/>`,
      `<text x="${x + 22}" y="${y + 4}" font-size="11" fill="${MUTED}" dominant-baseline="central">100%</text>`,
      `<text x="${x + 22}" y="${y + rampH - 4}" font-size="11" fill="${MUTED}" dominant-baseline="central">0%</text>`,
    );
  };
  ramp(lx, top + 16, BLUE_LO, BLUE_HI, 'correct', 'ramp-correct');
  ramp(lx, top + 16 + rampH + 40, RED_LO, RED_HI, 'confused with', 'ramp-confused');
  out.push('</svg>');
  return { svg: out.join('\n'), width, height };
}

/** Render the confusion matrix to a PNG at `path` (written atomically). */
export async function confusionMatrixPng(confusion: number[][], classes: string[], path: string, title?: string): Promise<ChartSize> {
  const { svg } = confusionMatrixSvg(confusion, classes, title);
  return renderPng(svg, path);
}

// ---------------------------------------------------------------------------------------------------------------
// Training curves

/** "Nice" tick values covering [lo, hi] (1-2-5 steps). */
function niceTicks(lo: number, hi: number, target = 6): { lo: number; hi: number; ticks: number[] } {
  if (!(hi > lo)) {
    const pad = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / target;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const tlo = Math.floor(lo / step + 1e-9) * step;
  const thi = Math.ceil(hi / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let v = tlo; v <= thi + step * 1e-6; v += step) ticks.push(Math.round(v / step) * step);
  return { lo: tlo, hi: thi, ticks };
}

function integerTicks(maxEpoch: number): { lo: number; hi: number; ticks: number[] } {
  if (maxEpoch <= 1) return { lo: 0, hi: 2, ticks: [0, 1, 2] };
  const raw = maxEpoch / 8;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = Math.max(1, [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag);
  const hi = Math.ceil(maxEpoch / step) * step;
  const ticks: number[] = [];
  for (let v = 0; v <= hi; v += step) ticks.push(v);
  return { lo: 0, hi, ticks };
}

/** Fewest decimals (up to 4) that write every multiple of `step` exactly: 0.25 → 2, 0.5 → 1, 5 → 0. */
function decimalsFor(step: number): number {
  for (let d = 0; d < 4; d++) {
    const scaled = step * Math.pow(10, d);
    if (Math.abs(scaled - Math.round(scaled)) < 1e-6 * Math.max(1, scaled)) return d;
  }
  return 4;
}

function tickLabel(v: number, percent: boolean, step: number): string {
  if (percent) return `${(v * 100).toFixed(decimalsFor(step * 100))}%`;
  return v.toFixed(decimalsFor(step));
}

interface Series {
  values: (number | undefined)[];
  colour: string;
}

interface PanelSpec {
  x: number;
  y: number;
  w: number;
  h: number;
  title: string;
  yLabel: string;
  percent: boolean;
  series: Series[];
  epochs: number[];
  bestEpoch?: number;
  bestValue?: number;
}

function panel(p: PanelSpec): string {
  const out: string[] = [];
  const all = p.series.flatMap((s) => s.values.filter((v): v is number => v !== undefined && Number.isFinite(v)));
  let yr: { lo: number; hi: number; ticks: number[] };
  if (p.percent) {
    const minV = all.length ? Math.min(...all) : 0;
    yr = niceTicks(Math.max(0, Math.min(minV, 1) - 0.02), 1, 5);
    yr.lo = Math.max(0, yr.lo);
    yr.hi = Math.min(1, Math.max(yr.hi, 1));
    yr.ticks = yr.ticks.filter((t) => t >= yr.lo - 1e-9 && t <= yr.hi + 1e-9);
  } else {
    const maxV = all.length ? Math.max(...all) : 1;
    yr = niceTicks(0, maxV > 0 ? maxV : 1, 5);
  }
  const maxEpoch = p.epochs.length ? p.epochs[p.epochs.length - 1] : 1;
  const xr = integerTicks(maxEpoch);
  const sx = (e: number) => p.x + ((e - xr.lo) / (xr.hi - xr.lo)) * p.w;
  const sy = (v: number) => p.y + p.h - ((v - yr.lo) / (yr.hi - yr.lo)) * p.h;
  const yStep = yr.ticks.length > 1 ? yr.ticks[1] - yr.ticks[0] : 1;

  out.push(`<text x="${p.x}" y="${p.y - 14}" font-size="16" font-weight="bold" fill="${INK}">${escapeXml(p.title)}</text>`);
  // grid and ticks
  for (const t of yr.ticks) {
    const y = sy(t);
    out.push(
      `<line x1="${p.x}" y1="${y}" x2="${p.x + p.w}" y2="${y}" stroke="${GRID}" stroke-width="1"/>`,
      `<text x="${p.x - 8}" y="${y}" font-size="12" fill="${MUTED}" text-anchor="end" dominant-baseline="central">${tickLabel(t, p.percent, yStep)}</text>`,
    );
  }
  for (const t of xr.ticks) {
    const x = sx(t);
    out.push(
      `<line x1="${x}" y1="${p.y + p.h}" x2="${x}" y2="${p.y + p.h + 5}" stroke="#888" stroke-width="1"/>`,
      `<text x="${x}" y="${p.y + p.h + 9}" font-size="12" fill="${MUTED}" text-anchor="middle" dominant-baseline="hanging">${fmt(t)}</text>`,
    );
  }
  out.push(
    `<line x1="${p.x}" y1="${p.y + p.h}" x2="${p.x + p.w}" y2="${p.y + p.h}" stroke="#888" stroke-width="1"/>`,
    `<line x1="${p.x}" y1="${p.y}" x2="${p.x}" y2="${p.y + p.h}" stroke="#888" stroke-width="1"/>`,
    `<text x="${p.x + p.w / 2}" y="${p.y + p.h + 40}" font-size="13" fill="${INK}" text-anchor="middle">epoch</text>`,
    `<text transform="translate(${p.x - 58},${p.y + p.h / 2}) rotate(-90)" font-size="13" fill="${INK}" text-anchor="middle">${escapeXml(p.yLabel)}</text>`,
  );
  // best epoch
  if (p.bestEpoch !== undefined && p.bestEpoch >= 1) {
    const x = sx(p.bestEpoch);
    out.push(`<line x1="${x}" y1="${p.y}" x2="${x}" y2="${p.y + p.h}" stroke="${BEST_COLOUR}" stroke-width="1.5" stroke-dasharray="5,4"/>`);
  }
  // series
  const showDots = p.epochs.length <= 40;
  for (const s of p.series) {
    let d = '';
    let pen = false;
    for (let i = 0; i < p.epochs.length; i++) {
      const v = s.values[i];
      if (v === undefined || !Number.isFinite(v)) {
        pen = false;
        continue;
      }
      d += `${pen ? 'L' : 'M'}${sx(p.epochs[i]).toFixed(1)},${sy(v).toFixed(1)}`;
      pen = true;
    }
    if (d) out.push(`<path d="${d}" fill="none" stroke="${s.colour}" stroke-width="2" stroke-linejoin="round" stroke-linecap="round"/>`);
    if (showDots) {
      for (let i = 0; i < p.epochs.length; i++) {
        const v = s.values[i];
        if (v !== undefined && Number.isFinite(v)) {
          out.push(`<circle cx="${sx(p.epochs[i]).toFixed(1)}" cy="${sy(v).toFixed(1)}" r="2.5" fill="${s.colour}"/>`);
        }
      }
    }
  }
  if (p.bestEpoch !== undefined && p.bestValue !== undefined && Number.isFinite(p.bestValue)) {
    const x = sx(p.bestEpoch);
    const y = sy(p.bestValue);
    out.push(`<circle cx="${x}" cy="${y}" r="6" fill="#fff" stroke="${BEST_COLOUR}" stroke-width="2.5"/>`);
    const label = p.percent ? `${(p.bestValue * 100).toFixed(1)}%` : p.bestValue.toFixed(4);
    const right = x + 10 + textWidth(label, 12) < p.x + p.w;
    const ly = y - 12 < p.y + 10 ? y + 18 : y - 12;
    out.push(
      `<text x="${right ? x + 9 : x - 9}" y="${ly}" font-size="12" font-weight="bold" fill="${BEST_COLOUR}" text-anchor="${right ? 'start' : 'end'}">${label}</text>`,
    );
  }
  return out.join('\n');
}

/**
 * Training curves as SVG: loss (train and validation) and accuracy (train and validation) against epoch, with the
 * best epoch marked. `bestEpoch` defaults to the epoch with the lowest validation loss (the one trainHead keeps).
 */
export function trainingCurveSvg(history: EpochLog[], opts: { bestEpoch?: number; title?: string } = {}): { svg: string } & ChartSize {
  if (history.length === 0) throw new GraftError('training curves: no epochs to plot');
  const epochs = history.map((h) => h.epoch);
  const hasVal = history.some((h) => h.valLoss !== undefined);
  let best = opts.bestEpoch;
  if (best === undefined && hasVal) {
    let bestLoss = Infinity;
    for (const h of history) {
      if (h.valLoss !== undefined && h.valLoss < bestLoss) {
        bestLoss = h.valLoss;
        best = h.epoch;
      }
    }
  }
  const bestRow = best !== undefined ? history.find((h) => h.epoch === best) : undefined;

  const width = 1200;
  const height = 520;
  const top = 136;
  const panelW = 460;
  const panelH = 320;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT}>`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="90" y="36" font-size="18" font-weight="bold" fill="${INK}">${escapeXml(opts.title ?? 'training curves')}</text>`,
  );
  // legend
  const lg: string[] = [];
  let lx = 90;
  const ly = 62;
  const item = (colour: string, label: string, dashed = false) => {
    lg.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 28}" y2="${ly}" stroke="${colour}" stroke-width="${dashed ? 1.5 : 3}"${dashed ? ' stroke-dasharray="5,4"' : ''}/>`,
      `<text x="${lx + 36}" y="${ly}" font-size="13" fill="${INK}" dominant-baseline="central">${escapeXml(label)}</text>`,
    );
    lx += 36 + textWidth(label, 13) + 28;
  };
  item(TRAIN_COLOUR, 'train');
  if (hasVal) item(VAL_COLOUR, 'validation');
  if (best !== undefined) item(BEST_COLOUR, `best epoch (${best}${bestRow ? ` of ${history.length}` : ''})`, true);
  out.push(...lg);
  const summary: string[] = [];
  const last = history[history.length - 1];
  if (bestRow?.valAcc !== undefined) summary.push(`val accuracy at best epoch ${(bestRow.valAcc * 100).toFixed(1)}%`);
  summary.push(`final train accuracy ${(last.trainAcc * 100).toFixed(1)}%`);
  summary.push(`lr ${last.lr}`);
  out.push(`<text x="90" y="88" font-size="12" fill="${MUTED}">${escapeXml(summary.join(' · '))}</text>`);

  const series = (get: (h: EpochLog) => number | undefined, colour: string): Series => ({ values: history.map(get), colour });
  out.push(
    panel({
      x: 90,
      y: top,
      w: panelW,
      h: panelH,
      title: 'loss',
      yLabel: 'cross-entropy',
      percent: false,
      epochs,
      series: [series((h) => h.trainLoss, TRAIN_COLOUR), ...(hasVal ? [series((h) => h.valLoss, VAL_COLOUR)] : [])],
      bestEpoch: best,
      bestValue: bestRow?.valLoss,
    }),
    panel({
      x: 90 + panelW + 150,
      y: top,
      w: panelW,
      h: panelH,
      title: 'accuracy',
      yLabel: 'accuracy',
      percent: true,
      epochs,
      series: [series((h) => h.trainAcc, TRAIN_COLOUR), ...(hasVal ? [series((h) => h.valAcc, VAL_COLOUR)] : [])],
      bestEpoch: best,
      bestValue: bestRow?.valAcc,
    }),
    '</svg>',
  );
  return { svg: out.join('\n'), width, height };
}

/** Render the training curves to a PNG at `path` (written atomically). */
export async function trainingCurvePng(
  history: EpochLog[],
  path: string,
  opts: { bestEpoch?: number; title?: string } = {},
): Promise<ChartSize> {
  const { svg } = trainingCurveSvg(history, opts);
  return renderPng(svg, path);
}
