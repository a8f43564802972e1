/** 1 · Projects, classes and images: create or open a project, add classes, drop photos on them. */
import { api, del, messageOf, post, type Project } from './api.js';
import { apiImage, busy, clear, field, h, Notice } from './dom.js';
import { imagesOnly, photoPicker } from './pickers.js';
import { basename, on, openProject, refreshModels, refreshProject, state } from './state.js';

/** Thumbnails drawn per class before "show all" (keeps a class of thousands light). */
const SHOWN = 48;

export function mountProjects(root: HTMLElement): void {
  const notice = new Notice();

  // --- open a project
  const select = h('select', { id: 'project-select' });
  const delBtn = h('button', { type: 'button', class: 'danger small' }, 'Delete project…');
  const openBar = h('div', { class: 'row' }, field('Project', select), h('div', { class: 'field field-button' }, delBtn));

  // --- a new one
  const name = h('input', { type: 'text', id: 'new-project-name', required: true, maxLength: 100, placeholder: 'pets', autocomplete: 'off' });
  const backbone = h('input', { type: 'text', id: 'new-project-backbone', required: true, list: 'backbone-list', autocomplete: 'off', spellcheck: false });
  const datalist = h('datalist', { id: 'backbone-list' });
  const create = h('button', { type: 'submit', class: 'primary' }, 'Create project');
  const form = h(
    'form',
    { class: 'row new-project', 'aria-label': 'New project' },
    field('New project name', name),
    field('Backbone', backbone, 'A catalog model, or the path of an .onnx file on the server.'),
    datalist,
    h('div', { class: 'field field-button' }, create),
  );

  // --- classes
  const summary = h('p', { class: 'project-summary' });
  const className = h('input', { type: 'text', id: 'new-class-name', required: true, maxLength: 64, placeholder: 'cats', autocomplete: 'off' });
  const addClass = h('form', { class: 'row add-class', 'aria-label': 'Add a class' }, field('New class', className), h('div', { class: 'field field-button' }, h('button', { type: 'submit' }, 'Add class')));
  const grid = h('div', { class: 'class-grid' });
  const projectPart = h('div', { class: 'project-part' }, summary, addClass, grid);

  clear(root, openBar, h('details', { class: 'new-project-box' }, h('summary', {}, 'New project'), form), notice.el, projectPart);
  const details = root.querySelector('details')!;

  const classNotices = new Map<string, Notice>();
  const expanded = new Set<string>();

  const renderSelect = () => {
    const ps = state.models?.projects ?? [];
    select.replaceChildren(h('option', { value: '' }, ps.length ? '— pick a project —' : '— no projects yet —'), ...ps.map((p) => h('option', { value: p.id }, p.name)));
    select.value = state.project?.id ?? '';
    delBtn.disabled = !state.project;
    if (state.models && !ps.length) details.open = true;
    datalist.replaceChildren(...(state.models?.catalog ?? []).map((c) => h('option', { value: c.name }, `${c.family}: ${c.description}`)));
    // The first catalog entry, preferring a small MobileNet (a backbone is downloaded on first use).
    const cat = state.models?.catalog ?? [];
    const first = cat.find((c) => /mobilenet/i.test(c.name)) ?? cat[0];
    if (!backbone.value && first) backbone.value = first.name;
  };

  const render = () => {
    renderSelect();
    const p = state.project;
    projectPart.hidden = !p;
    if (!p) return;
    const total = p.classes.reduce((s, c) => s + c.images.length, 0);
    clear(summary, h('strong', {}, p.name), ` · backbone ${basename(p.backbone)} · ${total} photo${total === 1 ? '' : 's'} in ${p.classes.length} class${p.classes.length === 1 ? '' : 'es'}`, p.runs?.length ? ` · ${p.runs.length} run${p.runs.length === 1 ? '' : 's'}` : '');
    grid.replaceChildren(...p.classes.map((c) => classCard(p, c)));
    if (!p.classes.length) grid.append(h('p', { class: 'hint' }, 'Add a class for each kind of picture the model should tell apart (at least two), then drop photos on them.'));
  };

  const classCard = (p: Project, c: Project['classes'][number]): HTMLElement => {
    let n = classNotices.get(c.name);
    if (!n) classNotices.set(c.name, (n = new Notice('small')));
    const notice = n;
    const remove = h('button', { type: 'button', class: 'danger small', 'aria-label': `Delete class ${c.name}` }, 'Delete');
    remove.addEventListener('click', () => {
      if (!confirm(`Delete the class ${c.name} and its ${c.images.length} photos?`)) return;
      void busy(remove, notice, async () => {
        await del(`/api/projects/${p.id}/classes/${encodeURIComponent(c.name)}`);
        await refreshProject();
      });
    });
    const all = expanded.has(c.name);
    const shown = all ? c.images : c.images.slice(-SHOWN);
    const thumbs = h(
      'ul',
      { class: 'thumbs', 'aria-label': `Photos of ${c.name}` },
      shown.map((im) => {
        const x = h('button', { type: 'button', class: 'thumb-remove', 'aria-label': `Remove ${im.name}`, title: 'Remove' }, '×');
        x.addEventListener('click', () =>
          void busy(x, notice, async () => {
            await del(`/api/projects/${p.id}/images/${im.id}`);
            await refreshProject();
          }),
        );
        return h('li', { class: 'thumb' }, apiImage(h('img', { alt: im.name, title: `${im.name} · ${im.width}×${im.height}`, width: 72, height: 72 }), `/api/projects/${p.id}/images/${im.id}?size=144`), x);
      }),
    );
    const more =
      c.images.length > SHOWN
        ? h('button', { type: 'button', class: 'link', onclick: () => { if (all) expanded.delete(c.name); else expanded.add(c.name); render(); } }, all ? `Show the newest ${SHOWN} only` : `Show all ${c.images.length}`)
        : null;
    const count = h('span', { class: 'count' }, `${c.images.length} photo${c.images.length === 1 ? '' : 's'}`);
    return h(
      'article',
      { class: 'class-card', dataset: { class: c.name }, 'aria-label': `Class ${c.name}` },
      h('header', {}, h('h3', {}, c.name), count, remove),
      photoPicker({ label: `Drop photos or folders of ${c.name} here`, multiple: true, folders: true, webcam: true, inputLabel: `Photos for ${c.name}`, onFiles: (files) => void upload(p, c.name, files, notice) }),
      notice.el,
      thumbs,
      more,
    );
  };

  const upload = async (p: Project, cls: string, files: File[], notice: Notice) => {
    const { images, skipped } = imagesOnly(files);
    if (!images.length) return notice.error(`none of the ${files.length} file${files.length === 1 ? '' : 's'} is an image (JPEG, PNG, WebP, GIF, TIFF, AVIF)`);
    let done = 0;
    let added = 0;
    const dups: string[] = [];
    const rejected: string[] = [];
    const queue = [...images];
    notice.info(`Uploading ${images.length} photo${images.length === 1 ? '' : 's'} to ${cls}…`);
    const worker = async () => {
      for (let f = queue.shift(); f; f = queue.shift()) {
        try {
          const r = await api<{ duplicate: boolean; class: string }>('POST', `/api/projects/${p.id}/classes/${encodeURIComponent(cls)}/images?name=${encodeURIComponent(f.webkitRelativePath || f.name)}`, f);
          if (r.duplicate) dups.push(r.class === cls ? f.name : `${f.name} (already in ${r.class})`);
          else added++;
        } catch (err) {
          rejected.push(`${f.name}: ${messageOf(err)}`);
        }
        done++;
        if (done < images.length) notice.info(`Uploading to ${cls}: ${done} of ${images.length}…`);
      }
    };
    await Promise.all([worker(), worker(), worker()]);
    await refreshProject().catch((err) => notice.error(err));
    const parts = [`Added ${added} photo${added === 1 ? '' : 's'} to ${cls}.`];
    if (dups.length) parts.push(`${dups.length} already in the project: ${dups.slice(0, 3).join(', ')}${dups.length > 3 ? '…' : ''}.`);
    if (skipped.length) parts.push(`${skipped.length} file${skipped.length === 1 ? ' is' : 's are'} not images and ${skipped.length === 1 ? 'was' : 'were'} skipped.`);
    const n = classNotices.get(cls) ?? notice;
    if (rejected.length) n.error(`${parts.join(' ')} Refused: ${rejected.slice(0, 4).join('; ')}${rejected.length > 4 ? ` (and ${rejected.length - 4} more)` : ''}`);
    else n.ok(parts.join(' '));
  };

  select.addEventListener('change', () => void busy(null, notice, async () => {
    notice.clear();
    await openProject(select.value || null);
  }));

  delBtn.addEventListener('click', () => {
    const p = state.project;
    if (!p || !confirm(`Delete the project ${p.name}, its photos and its runs? This cannot be undone.`)) return;
    void busy(delBtn, notice, async () => {
      await del(`/api/projects/${p.id}`);
      await refreshModels();
      await openProject(null);
      notice.ok(`Deleted ${p.name}.`);
    });
  });

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    void busy(create, notice, async () => {
      const p = await post<Project>('/api/projects', { name: name.value.trim(), backbone: backbone.value.trim() });
      await refreshModels();
      await openProject(p.id);
      name.value = '';
      details.open = false;
      notice.ok(`Created ${p.name}. Now add its classes.`);
      className.focus();
    });
  });

  addClass.addEventListener('submit', (e) => {
    e.preventDefault();
    const p = state.project;
    if (!p) return;
    const btn = addClass.querySelector('button')!;
    void busy(btn, notice, async () => {
      const n = className.value.trim();
      await post(`/api/projects/${p.id}/classes`, { name: n });
      className.value = '';
      notice.clear();
      await refreshProject();
      className.focus();
    });
  });

  on('project', render);
  on('models', renderSelect);
  render();
}
