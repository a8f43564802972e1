/** 4 · Predict, 5 · look inside (feature maps), 6 · the ideal image of a class, 7 · the attack. */
import { followJob, get, post, qs, request, type AttackResult, type FeatureMapLayer, type JobInfo, type Prediction } from './api.js';
import { bars, busy, clear, field, fixed, h, Notice, pct, seconds } from './dom.js';
import { photoPicker } from './pickers.js';
import { modelPicker } from './state.js';

/** A chosen photo shown as a preview; `file` is what gets sent. */
function photoSlot(label: string, onPhoto: (f: File) => void) {
  let file: File | undefined;
  let url: string | undefined;
  const preview = h('img', { class: 'preview', alt: '', hidden: true });
  const name = h('p', { class: 'hint photo-name' });
  const picker = photoPicker({
    label,
    webcam: true,
    inputLabel: label,
    onFiles: ([f]) => {
      if (!f) return;
      file = f;
      if (url) URL.revokeObjectURL(url);
      url = URL.createObjectURL(f);
      preview.src = url;
      preview.alt = `the photo: ${f.name}`;
      preview.hidden = false;
      name.textContent = f.name;
      onPhoto(f);
    },
  });
  return { el: h('div', { class: 'photo-slot' }, picker, preview, name), file: () => file };
}

/** Fill a class <select> from GET /api/classes for a model. */
async function loadClasses(select: HTMLSelectElement, model: string, first?: { value: string; label: string }): Promise<string[]> {
  select.disabled = true;
  select.replaceChildren(h('option', { value: '' }, 'loading classes…'));
  try {
    const { classes } = await get<{ classes: string[] }>(`/api/classes${qs({ model })}`);
    const keep = select.dataset.want;
    select.replaceChildren(...(first ? [h('option', { value: first.value }, first.label)] : []), ...classes.map((c) => h('option', { value: c }, c)));
    if (keep && classes.includes(keep)) select.value = keep;
    return classes;
  } catch (err) {
    select.replaceChildren(h('option', { value: '' }, '—'));
    throw err;
  } finally {
    select.disabled = false;
  }
}

export function mountPredict(root: HTMLElement): void {
  const notice = new Notice();
  const result = h('div', { class: 'predict-result', id: 'predict-result', 'aria-live': 'polite' });
  const top = h('input', { type: 'number', id: 'predict-top', min: 1, max: 20, value: '5', class: 'narrow' });
  const run = async () => {
    const f = slot.file();
    if (!f) return;
    const model = picker.value();
    if (!model) return notice.error('pick a model');
    await busy(null, notice, async () => {
      notice.info('Classifying…');
      const t0 = performance.now();
      const r = await post<{ predictions: Prediction[] }>(`/api/predict${qs({ model, top: top.value })}`, f);
      notice.clear();
      clear(result, h('p', { class: 'verdict' }, h('span', { class: 'hint' }, 'The model says '), h('strong', { id: 'predict-top-label' }, r.predictions[0]?.label ?? '?'), ` (${pct(r.predictions[0]?.probability ?? 0)}) · ${Math.round(performance.now() - t0)} ms`), bars(r.predictions));
    });
  };
  const picker = modelPicker('Model', () => void run());
  const slot = photoSlot('Drop a photo to classify', () => void run());
  top.addEventListener('change', () => void run());
  clear(root, h('div', { class: 'row' }, picker.el, field('Answers', top)), h('div', { class: 'two-col' }, slot.el, h('div', {}, notice.el, result)));
}

export function mountLookInside(root: HTMLElement): void {
  const notice = new Notice();
  const layer = h('select', { id: 'layer-select' });
  const channels = h('input', { type: 'number', id: 'fm-channels', min: 1, max: 64, value: '16', class: 'narrow' });
  const prev = h('button', { type: 'button', class: 'small', 'aria-label': 'Previous layer' }, '← earlier');
  const next = h('button', { type: 'button', class: 'small', 'aria-label': 'Next layer' }, 'deeper →');
  const out = h('div', { class: 'featuremaps', id: 'featuremaps', 'aria-live': 'polite' });
  let requestNo = 0;
  const show = async () => {
    const f = slot.file();
    const model = picker.value();
    if (!f || !model) return;
    const my = ++requestNo;
    await busy(null, notice, async () => {
      notice.info(layer.value ? `Running the photo up to ${layer.value}…` : 'Running the photo through the network…');
      const r = await post<{ layers: FeatureMapLayer[]; warnings: string[] }>(`/api/featuremaps${qs({ model, layers: layer.value || undefined, channels: channels.value })}`, f);
      if (my !== requestNo) return;
      notice.info(r.warnings.length ? `Note: ${r.warnings.join(' ')}` : '');
      clear(
        out,
        r.layers.map((l) =>
          h(
            'figure',
            { class: 'fmap' },
            h('figcaption', {}, h('b', {}, l.layer), ` · ${l.op}${l.role ? ` · ${l.role}` : ''} · ${l.shape.join('×')}`, h('br'), h('span', { class: 'hint' }, `${l.channels.length} strongest channels · mean ${fixed(l.stats.mean, 2)} · max ${fixed(l.stats.max, 2)}${l.stats.zeroFraction !== undefined ? ` · ${pct(l.stats.zeroFraction, 0)} zeros` : ''}`)),
            h('img', { src: l.png, alt: `feature maps of ${l.layer}`, loading: 'lazy' }),
          ),
        ),
      );
    });
  };
  const loadLayers = async (model: string) => {
    layer.disabled = true;
    try {
      const r = await get<{ layers: { name: string; op: string; shape: (number | string)[] }[] }>(`/api/layers${qs({ model })}`);
      layer.replaceChildren(h('option', { value: '' }, 'an early, a middle and a late layer'), ...r.layers.map((l, i) => h('option', { value: l.name }, `${i + 1}. ${l.name} (${l.op}, ${l.shape.slice(1).join('×')})`)));
      notice.clear();
    } catch (err) {
      layer.replaceChildren(h('option', { value: '' }, '—'));
      notice.error(err);
    } finally {
      layer.disabled = false;
    }
  };
  const step = (d: number) => {
    const i = Math.max(1, Math.min(layer.options.length - 1, layer.selectedIndex + d));
    if (i !== layer.selectedIndex) {
      layer.selectedIndex = i;
      void show();
    }
  };
  prev.addEventListener('click', () => step(-1));
  next.addEventListener('click', () => step(1));
  layer.addEventListener('change', () => void show());
  channels.addEventListener('change', () => void show());
  const picker = modelPicker('Model', (m) => void loadLayers(m).then(show));
  const slot = photoSlot('Drop a photo to look inside', () => void show());
  clear(root, h('div', { class: 'row' }, picker.el, field('Layer', layer), h('div', { class: 'field field-button' }, h('div', { class: 'button-row' }, prev, next)), field('Channels', channels)), h('div', { class: 'two-col wide-right' }, slot.el, h('div', {}, notice.el, out)));
}

export function mountDream(root: HTMLElement): void {
  const notice = new Notice();
  const cls = h('select', { id: 'dream-class' });
  const steps = h('input', { type: 'number', id: 'dream-steps', min: 10, max: 2000, value: '256', class: 'narrow' });
  const start = h('button', { type: 'button', class: 'primary', id: 'dream-start' }, 'Start');
  const cancel = h('button', { type: 'button', disabled: true }, 'Cancel');
  const img = h('img', { class: 'dream-image', alt: '', hidden: true, width: 224, height: 224 });
  const stateEl = h('p', { class: 'job-state', role: 'status', 'aria-live': 'polite' });
  const bar = h('progress', { max: 1, value: 0, 'aria-label': 'Ideal image progress' });
  let jobId: string | undefined;
  const picker = modelPicker('Model', (m) => void loadClasses(cls, m).then(() => notice.clear(), (err) => notice.error(err)));
  cls.addEventListener('change', () => (cls.dataset.want = cls.value));
  start.addEventListener('click', () => {
    const model = picker.value();
    if (!model || !cls.value) return notice.error('pick a model and a class');
    void busy(start, notice, async () => {
      notice.clear();
      const job = await post<JobInfo>('/api/dream', { model, class: cls.value, steps: Number(steps.value) || 256, imageEvery: 5 });
      jobId = job.id;
      cancel.disabled = false;
      start.disabled = true;
      img.hidden = true;
      bar.value = 0;
      let final: { class: string; png: string; probability: number; seconds: number; steps: number } | undefined;
      let error: string | undefined;
      try {
        const end = await followJob(job.id, {
          state: (s) => (stateEl.textContent = s.state === 'queued' ? `Waiting in line: position ${s.position ?? '?'}.` : s.state === 'running' ? 'Starting from noise…' : ''),
          progress: (p) => {
            bar.max = p.total;
            bar.value = p.done;
            stateEl.textContent = `Step ${p.done} of ${p.total}${p.note ? ` · ${p.note.replace('p=', `p(${cls.value}) = `)}` : ''}${p.etaSeconds ? ` · ETA ${seconds(p.etaSeconds)}` : ''}`;
          },
          image: (i) => {
            img.src = i.png;
            img.alt = `the ideal ${cls.value} at step ${i.step}`;
            img.hidden = false;
          },
          result: (r) => (final = r as typeof final),
          error: (e) => (error = e.message),
        });
        if (end === 'done' && final) {
          img.src = final.png;
          img.alt = `the ideal ${final.class}`;
          img.hidden = false;
          bar.value = bar.max;
          stateEl.textContent = `Done: the model gives this picture p(${final.class}) = ${pct(final.probability)} (${final.steps} steps, ${seconds(final.seconds)}).`;
        } else if (end === 'cancelled') stateEl.textContent = 'Cancelled.';
        else notice.error(error ?? 'the job failed');
      } finally {
        jobId = undefined;
        cancel.disabled = true;
        start.disabled = false;
      }
    });
  });
  cancel.addEventListener('click', () => {
    if (jobId) void busy(cancel, notice, () => post(`/api/jobs/${jobId}/cancel`));
  });
  clear(
    root,
    h('p', { class: 'lede' }, 'Start from noise and change the pixels, step by step, towards what the model calls the class most strongly.'),
    h('div', { class: 'row' }, picker.el, field('Class', cls), field('Steps', steps), h('div', { class: 'field field-button' }, h('div', { class: 'button-row' }, start, cancel))),
    notice.el,
    h('div', { class: 'dream' }, img, h('div', {}, stateEl, bar)),
  );
}

export function mountAttack(root: HTMLElement): void {
  const notice = new Notice();
  const target = h('select', { id: 'attack-target' });
  const eps = h('input', { type: 'range', id: 'attack-eps', min: 0.5, max: 16, step: 0.5, value: '2' });
  const epsOut = h('output', { for: eps.id, id: 'attack-eps-value' }, '2 / 255');
  const method = h('select', { id: 'attack-method' }, h('option', { value: 'pgd' }, 'PGD (iterative)'), h('option', { value: 'fgsm' }, 'FGSM (one step)'));
  const go = h('button', { type: 'button', class: 'primary', id: 'attack-start' }, 'Attack');
  const out = h('div', { class: 'attack-result', id: 'attack-result', 'aria-live': 'polite' });
  let ac: AbortController | undefined;
  const run = async () => {
    const f = slot.file();
    const model = picker.value();
    if (!f) return notice.error('choose a photo first');
    if (!model) return notice.error('pick a model');
    ac?.abort();
    const my = (ac = new AbortController());
    await busy(go, notice, async () => {
      notice.info(`Looking for the smallest change (at most ${eps.value}/255 per pixel)…`);
      const res = await request('POST', `/api/attack${qs({ model, target: target.value || undefined, eps: eps.value, method: method.value })}`, f, my.signal);
      const r = (await res.json()) as AttackResult;
      if (my !== ac) return;
      const want = r.target;
      notice.info(
        r.success
          ? `Fooled: the model now says ${r.adversarial.top[0]?.label} (${pct(r.adversarial.top[0]?.probability ?? 0)}), though no pixel moved more than ${r.linfLevels}/255.`
          : `Not fooled at ε = ${r.eps}/255${want ? `: ${want} did not come out on top` : ''}. Try a larger ε.`,
      );
      const fig = (title: string, png: string, alt: string, top?: Prediction[], note?: string) =>
        h('figure', { class: 'attack-fig' }, h('figcaption', {}, h('b', {}, title), note ? h('span', { class: 'hint' }, ` ${note}`) : null), h('img', { src: png, alt, width: 224, height: 224 }), top ? bars(top, want) : null);
      clear(
        out,
        fig('Original', r.original.png, 'the original photo', r.original.top),
        fig('Adversarial', r.adversarial.png, 'the attacked photo', r.adversarial.top, `ε ${r.eps}/255 · PSNR ${fixed(r.psnr, 1)} dB`),
        fig('Perturbation', r.perturbation.png, 'the change, amplified', undefined, `× ${fixed(r.amplification, 0)}, grey = no change`),
      );
    });
  };
  const picker = modelPicker('Model', (m) => void loadClasses(target, m, { value: '', label: 'any other class (untargeted)' }).then(() => notice.clear(), (err) => notice.error(err)));
  target.addEventListener('change', () => (target.dataset.want = target.value));
  eps.addEventListener('input', () => (epsOut.textContent = `${eps.value} / 255`));
  eps.addEventListener('change', () => {
    if (slot.file()) void run();
  });
  go.addEventListener('click', () => void run());
  const slot = photoSlot('Drop a photo to attack', () => notice.clear());
  clear(
    root,
    h('p', { class: 'lede' }, 'Change every pixel by at most ε levels of 255 — invisible to you — so that the model changes its answer.'),
    h('div', { class: 'row' }, picker.el, field('Make it say', target), h('div', { class: 'field' }, h('label', { for: eps.id }, 'ε (largest change per pixel) ', epsOut), eps), field('Method', method), h('div', { class: 'field field-button' }, go)),
    h('div', { class: 'two-col wide-right' }, slot.el, h('div', {}, notice.el)),
    out,
  );
}
