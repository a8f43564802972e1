/** Small DOM helpers: element building, messages, image loading with the token, numbers for people. */
import { authHeaders, messageOf, token } from './api.js';

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, unknown>;

/** `h('button', {class: 'x', onclick: f, 'aria-label': 'y'}, 'text')`: properties when the element has them, else attributes. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: (Child | Child[])[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v as EventListener);
    else if (k === 'class') el.className = String(v);
    else if (k === 'style' && typeof v === 'object') for (const [sk, sv] of Object.entries(v as Record<string, string>)) el.style.setProperty(sk.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), sv);
    else if (k === 'dataset' && typeof v === 'object') Object.assign(el.dataset, v);
    else if (k in el && !k.includes('-') && k !== 'list' && k !== 'form') (el as unknown as Record<string, unknown>)[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, ...children);
  return el;
}

export function append(el: Element, ...children: (Child | Child[])[]): void {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

export function clear(el: Element, ...children: (Child | Child[])[]): void {
  el.replaceChildren();
  append(el, ...children);
}

export function $(sel: string, root: ParentNode = document): HTMLElement {
  const el = root.querySelector<HTMLElement>(sel);
  if (!el) throw new Error(`page element ${sel} is missing`);
  return el;
}

let uid = 0;
export const id = (prefix: string) => `${prefix}-${++uid}`;

/** A labelled form field: label above, control below. */
export function field(label: string, control: HTMLElement, hint?: string): HTMLElement {
  if (!control.id) control.id = id('f');
  const hintEl = hint ? h('small', { class: 'hint', id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), control, hintEl);
}

/**
 * A line of feedback for one part of the page: status (polite) or error (an alert). Every API error reaches the
 * user as its message through this.
 */
export class Notice {
  readonly el: HTMLElement;
  constructor(cls = '') {
    this.el = h('div', { class: `notice ${cls}`, role: 'status', 'aria-live': 'polite' });
  }
  info(text: string | Node): void {
    this.el.className = this.el.className.replace(/\b(is-error|is-ok)\b/g, '').trim();
    this.el.setAttribute('role', 'status');
    clear(this.el, text);
  }
  ok(text: string): void {
    this.info(text);
    this.el.classList.add('is-ok');
  }
  error(err: unknown): void {
    if ((err as Error)?.name === 'AbortError') return;
    this.el.className = this.el.className.replace(/\bis-ok\b/g, '').trim();
    this.el.classList.add('is-error');
    this.el.setAttribute('role', 'alert');
    clear(this.el, messageOf(err));
  }
  clear(): void {
    this.info('');
  }
}

/** Run an async action with its button disabled; errors go to the notice. */
export async function busy<T>(button: HTMLButtonElement | null, notice: Notice | null, fn: () => Promise<T>): Promise<T | undefined> {
  if (button) {
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
  }
  try {
    return await fn();
  } catch (err) {
    if (notice) notice.error(err);
    else console.error(err);
    return undefined;
  } finally {
    if (button) {
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
  }
}

/**
 * Point an <img> at an API image. Without a token a plain src (cached, lazy); with one the bytes are fetched with the
 * Authorization header (an <img> cannot send it) and shown from an object URL.
 */
export function apiImage(img: HTMLImageElement, url: string): HTMLImageElement {
  if (!token()) {
    img.loading = 'lazy';
    img.src = url;
    return img;
  }
  const load = () =>
    fetch(url, { headers: authHeaders() })
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(String(r.status)))))
      .then((b) => {
        img.src = URL.createObjectURL(b);
        img.addEventListener('load', () => URL.revokeObjectURL(img.src), { once: true });
      })
      .catch(() => img.classList.add('broken'));
  if ('IntersectionObserver' in window) {
    const io = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) {
        io.disconnect();
        void load();
      }
    });
    io.observe(img);
  } else void load();
  return img;
}

export const pct = (p: number, digits = 1) => `${(p * 100).toFixed(digits)}%`;
export const fixed = (v: number | undefined, d = 3) => (v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(d));

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} kB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function seconds(s: number | undefined): string {
  if (s === undefined || !Number.isFinite(s)) return '';
  if (s < 1) return '<1 s';
  if (s < 90) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

/** Horizontal probability bars: label, bar, percentage. */
export function bars(predictions: { label: string; probability: number }[], highlight?: string): HTMLElement {
  return h(
    'ol',
    { class: 'bars' },
    predictions.map((p) =>
      h(
        'li',
        { class: p.label === highlight ? 'is-target' : '' },
        h('span', { class: 'bar-label', title: p.label }, p.label),
        h('span', { class: 'bar-track', 'aria-hidden': 'true' }, h('span', { class: 'bar-fill', style: { width: `${Math.max(0.5, p.probability * 100)}%` } })),
        h('span', { class: 'bar-value' }, pct(p.probability)),
      ),
    ),
  );
}
