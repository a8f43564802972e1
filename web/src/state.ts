/** What the sections share: the models the server offers, the open project and the run being looked at. */
import { get, type Models, type Project } from './api.js';
import { h, id } from './dom.js';

type Listener = () => void;

export const state = {
  models: null as Models | null,
  project: null as Project | null,
  /** The run evaluate and export show (newest by default). */
  run: null as string | null,
};

const listeners = { project: new Set<Listener>(), models: new Set<Listener>(), run: new Set<Listener>() };

export function on(what: keyof typeof listeners, f: Listener): void {
  listeners[what].add(f);
}

function emit(what: keyof typeof listeners): void {
  for (const f of listeners[what]) {
    try {
      f();
    } catch (err) {
      console.error(err);
    }
  }
}

export async function refreshModels(): Promise<void> {
  state.models = await get<Models>('/api/models');
  emit('models');
}

const PROJECT_KEY = 'graft.project';

/** Open a project (or none), reloading it from the server. */
export async function openProject(pid: string | null): Promise<void> {
  const before = state.project?.id;
  const runBefore = state.project?.runs?.[0];
  state.project = pid ? await get<Project>(`/api/projects/${encodeURIComponent(pid)}`) : null;
  if (pid) localStorage.setItem(PROJECT_KEY, pid);
  else localStorage.removeItem(PROJECT_KEY);
  const runs = state.project?.runs ?? [];
  // A new project, or a new run: show the newest run; otherwise keep the one picked.
  if (before !== pid || runs[0] !== runBefore || !state.run || !runs.includes(state.run)) setRun(runs[0] ?? null, false);
  emit('project');
  emit('run');
}

export const refreshProject = () => openProject(state.project?.id ?? null);

export function lastProject(): string | null {
  return localStorage.getItem(PROJECT_KEY);
}

export function setRun(run: string | null, notify = true): void {
  state.run = run;
  if (notify) emit('run');
}

export const basename = (p: string) => p.split(/[\\/]/).pop() ?? p;

interface ModelOption {
  value: string;
  label: string;
  group: string;
}

/** The models sections 4-7 can use: this project's runs, its backbone, other trained projects, the catalog. */
export function modelOptions(): ModelOption[] {
  const out: ModelOption[] = [];
  const p = state.project;
  if (p) {
    const runs = p.runs ?? [];
    if (runs.length) {
      out.push({ value: p.id, label: `${p.name}: newest run (${runs[0]})`, group: 'This project' });
      for (const r of runs.slice(1)) out.push({ value: `${p.id}/${r}`, label: `${p.name}: ${r}`, group: 'This project' });
    }
    out.push({ value: p.backbone, label: `Backbone: ${basename(p.backbone)}`, group: 'This project' });
  }
  for (const q of state.models?.projects ?? []) {
    if (q.id === p?.id || !q.runs.length) continue;
    out.push({ value: q.id, label: `${q.name}: newest run`, group: 'Other projects' });
  }
  for (const c of state.models?.catalog ?? []) {
    if (c.name === p?.backbone) continue;
    out.push({ value: c.name, label: `${c.name} (${c.family})`, group: 'Catalog (downloaded on first use)' });
  }
  return out;
}

const OTHER = '__path__';

/**
 * A model picker: a select over `modelOptions()` plus "another model (a path)…". `onChange` fires when the chosen
 * model changes, including when a newly trained run becomes the default.
 */
export function modelPicker(label: string, onChange: (model: string) => void): { el: HTMLElement; value(): string } {
  const select = h('select', { id: id('model') });
  const path = h('input', { type: 'text', id: id('model-path'), placeholder: '/path/to/model.onnx or a run folder', hidden: true, 'aria-label': `${label}: path` });
  let chosen = false;
  let current = '';
  const value = () => (select.value === OTHER ? path.value.trim() : select.value);
  const fire = () => {
    const v = value();
    if (v && v !== current) {
      current = v;
      onChange(v);
    }
  };
  const render = () => {
    const opts = modelOptions();
    // Without a project nothing is picked for the user: a catalog model may mean a download of hundreds of MB.
    const fallback = state.project ? (opts[0]?.value ?? '') : '';
    const keep = chosen && (select.value === OTHER || opts.some((o) => o.value === select.value)) ? select.value : fallback;
    select.replaceChildren();
    if (!state.project) select.append(h('option', { value: '' }, '— pick a model —'));
    const groups = new Map<string, HTMLOptGroupElement>();
    for (const o of opts) {
      let g = groups.get(o.group);
      if (!g) {
        g = h('optgroup', { label: o.group });
        groups.set(o.group, g);
        select.append(g);
      }
      g.append(h('option', { value: o.value }, o.label));
    }
    select.append(h('option', { value: OTHER }, 'Another model (a path)…'));
    select.value = keep;
    path.hidden = select.value !== OTHER;
    fire();
  };
  select.addEventListener('change', () => {
    chosen = true;
    path.hidden = select.value !== OTHER;
    if (!path.hidden) path.focus();
    fire();
  });
  path.addEventListener('change', fire);
  on('project', render);
  on('models', render);
  const lab = h('label', { for: select.id }, label);
  return { el: h('div', { class: 'field model-picker' }, lab, select, path), value };
}
