/** The page of `graft serve`: wires the sections to the shared state and starts from the last project opened. */
import './style.css';
import { get, initToken, messageOf, setToken, token, unauthorized } from './api.js';
import { $, h, Notice } from './dom.js';
import { mountEvaluate } from './section-evaluate.js';
import { mountAttack, mountDream, mountLookInside, mountPredict } from './section-look.js';
import { mountProjects } from './section-projects.js';
import { mountTrain } from './section-train.js';
import { lastProject, on, openProject, refreshModels, state } from './state.js';

initToken();
// A token pasted into the address bar of the open page (#token=...) counts too.
window.addEventListener('hashchange', () => {
  if (!/token=/.test(location.hash)) return;
  initToken();
  location.reload();
});

const banner = new Notice('banner');
$('#banner').append(banner.el);

// A server started with --token answers 401 until the page has it: ask once, here.
const tokenForm = h(
  'form',
  { class: 'token-form', hidden: true, 'aria-label': 'Server token' },
  h('label', { for: 'token-input' }, 'This server needs its token'),
  h('input', { type: 'password', id: 'token-input', autocomplete: 'off' }),
  h('button', { type: 'submit', class: 'primary small' }, 'Use token'),
);
$('#banner').append(tokenForm);
unauthorized.add(() => {
  tokenForm.hidden = false;
  (tokenForm.querySelector('input') as HTMLInputElement).focus();
});
tokenForm.addEventListener('submit', (e) => {
  e.preventDefault();
  setToken((tokenForm.querySelector('input') as HTMLInputElement).value.trim());
  location.reload();
});

mountProjects($('#classes-body'));
const train = mountTrain($('#train-body'));
mountEvaluate($('#evaluate-body'), $('#export-body'), (history) => train.showHistory(history));
mountPredict($('#predict-body'));
mountLookInside($('#inside-body'));
mountDream($('#dream-body'));
mountAttack($('#attack-body'));

// Sections that need a project say so instead of showing dead controls.
on('project', () => {
  const p = state.project;
  for (const s of document.querySelectorAll<HTMLElement>('[data-needs-project]')) s.classList.toggle('is-disabled', !p);
  for (const s of document.querySelectorAll<HTMLElement>('[data-needs-run]')) s.classList.toggle('is-disabled', !p?.runs?.length);
  $('#current-project').textContent = p ? p.name : 'no project open';
  document.title = p ? `${p.name} · graft` : 'graft';
});

// Keep the nav in step with the section being read.
const links = [...document.querySelectorAll<HTMLAnchorElement>('nav.sections a')];
const io = new IntersectionObserver(
  (entries) => {
    for (const e of entries) {
      if (!e.isIntersecting) continue;
      for (const a of links) a.toggleAttribute('aria-current', a.hash === `#${e.target.id}`);
    }
  },
  { rootMargin: '-20% 0px -70% 0px' },
);
for (const s of document.querySelectorAll('main > section')) io.observe(s);

async function start(): Promise<void> {
  try {
    const health = await get<{ ok: boolean; jobs: number }>('/api/health');
    $('#server-state').textContent = `server ready${health.jobs ? ` · ${health.jobs} job${health.jobs === 1 ? '' : 's'} running` : ''}${token() ? ' · token set' : ''}`;
    await refreshModels();
    const last = lastProject();
    const known = state.models?.projects ?? [];
    const pick = known.find((p) => p.id === last)?.id ?? (known.length === 1 ? known[0]!.id : null);
    await openProject(pick);
  } catch (err) {
    $('#server-state').textContent = 'server unreachable';
    banner.error(`The page cannot talk to the server: ${messageOf(err)}`);
    await openProject(null).catch(() => undefined);
  }
}

void start();
