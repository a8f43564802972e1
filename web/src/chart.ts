/** A small SVG line chart (training curves): a few series over epochs, axes with round ticks, a legend. */

const NS = 'http://www.w3.org/2000/svg';

export interface Series {
  name: string;
  /** A CSS class giving the colour (and dash). */
  cls: string;
  points: [number, number][];
}

function el<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>, text?: string): SVGElementTagNameMap[K] {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function niceTicks(lo: number, hi: number, n = 4): number[] {
  const span = hi - lo || 1;
  const raw = span / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(+v.toFixed(10));
  return out;
}

export function lineChart(o: { title: string; series: Series[]; yMin?: number; yMax?: number; xMax?: number; format?: (v: number) => string }): SVGSVGElement {
  const W = 360;
  const H = 200;
  const m = { l: 44, r: 12, t: 26, b: 30 };
  const all = o.series.flatMap((s) => s.points);
  const xMax = Math.max(o.xMax ?? 1, ...all.map((p) => p[0]), 1);
  let yMin = o.yMin ?? Math.min(...all.map((p) => p[1]), 0);
  let yMax = o.yMax ?? Math.max(...all.map((p) => p[1]), 0.1);
  if (!all.length) [yMin, yMax] = [o.yMin ?? 0, o.yMax ?? 1];
  if (yMax - yMin < 1e-6) yMax = yMin + 1;
  const x = (v: number) => m.l + ((v - (xMax > 1 ? 1 : 0)) / Math.max(xMax - 1, 1)) * (W - m.l - m.r);
  const y = (v: number) => H - m.b - ((v - yMin) / (yMax - yMin)) * (H - m.t - m.b);
  const fmt = o.format ?? ((v: number) => String(v));

  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img' });
  const last = o.series.map((s) => (s.points.length ? `${s.name} ${fmt(s.points[s.points.length - 1]![1])}` : '')).filter(Boolean);
  svg.setAttribute('aria-label', `${o.title}${last.length ? `: ${last.join(', ')}` : ': no epochs yet'}`);
  svg.append(el('text', { x: m.l, y: 16, class: 'chart-title' }, o.title));
  for (const t of niceTicks(yMin, yMax)) {
    svg.append(el('line', { x1: m.l, x2: W - m.r, y1: y(t), y2: y(t), class: 'chart-grid' }));
    svg.append(el('text', { x: m.l - 6, y: y(t) + 4, class: 'chart-tick', 'text-anchor': 'end' }, fmt(t)));
  }
  const xt = niceTicks(1, xMax, 5).filter((v) => Number.isInteger(v));
  for (const t of xt) svg.append(el('text', { x: x(t), y: H - m.b + 16, class: 'chart-tick', 'text-anchor': 'middle' }, String(t)));
  svg.append(el('text', { x: W - m.r, y: H - 4, class: 'chart-tick', 'text-anchor': 'end' }, 'epoch'));
  svg.append(el('line', { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, class: 'chart-axis' }));
  svg.append(el('line', { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: 'chart-axis' }));
  let lx = W - m.r;
  for (const s of [...o.series].reverse()) {
    const label = el('text', { x: lx, y: 16, class: `chart-legend ${s.cls}`, 'text-anchor': 'end' }, `— ${s.name}`);
    svg.append(label);
    lx -= s.name.length * 6.2 + 26;
  }
  for (const s of o.series) {
    if (!s.points.length) continue;
    const d = s.points.map((p, i) => `${i ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join('');
    svg.append(el('path', { d, class: `chart-line ${s.cls}` }));
    if (s.points.length <= 40) for (const p of s.points) svg.append(el('circle', { cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 2.2, class: `chart-dot ${s.cls}` }));
  }
  return svg;
}
