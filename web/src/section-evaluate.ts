/** 3 · Evaluate a run (metrics, confusion matrix whose cells open their photos, top losses) and 8 · export it. */
import { authHeaders, get, post, request, type EvaluationItem, type PageEvaluation } from './api.js';
import { apiImage, busy, bytes, clear, field, fixed, h, Notice, pct } from './dom.js';
import { on, setRun, state } from './state.js';

function thumbFigure(projectId: string, it: EvaluationItem, classes: string[], extra?: string): HTMLElement {
  const wrong = it.true !== it.predicted;
  return h(
    'figure',
    { class: `eval-thumb${wrong ? ' is-wrong' : ''}` },
    apiImage(h('img', { alt: `a ${classes[it.true]} photo`, width: 120, height: 120 }), `/api/projects/${projectId}/images/${encodeURIComponent(it.image)}?size=240`),
    h(
      'figcaption',
      {},
      h('span', {}, 'true ', h('b', {}, classes[it.true] ?? '?')),
      h('span', {}, 'predicted ', h('b', {}, classes[it.predicted] ?? '?'), ` ${pct(it.probability, 0)}`),
      extra ? h('span', { class: 'hint' }, extra) : null,
    ),
  );
}

export function mountEvaluate(root: HTMLElement, exportRoot: HTMLElement, onHistory: (h: PageEvaluation['history']) => void): void {
  const notice = new Notice();
  const runSelect = h('select', { id: 'run-select' });
  const body = h('div', { class: 'eval-body' });
  clear(root, h('div', { class: 'row' }, field('Run', runSelect)), notice.el, body);

  const load = async (): Promise<void> => {
    const p = state.project;
    const run = state.run;
    body.replaceChildren();
    if (!p) return notice.info('Open a project first.');
    if (!run) return notice.info('Train the project to see how well it does.');
    notice.info(`Evaluating ${run} on its validation photos…`);
    let ev: PageEvaluation;
    try {
      ev = await get<PageEvaluation>(`/api/projects/${p.id}/runs/${encodeURIComponent(run)}/evaluation`);
    } catch (err) {
      return notice.error(err);
    }
    if (state.project?.id !== p.id || state.run !== run) return;
    notice.clear();
    onHistory(ev.history);
    render(p.id, ev);
  };

  const render = (pid: string, ev: PageEvaluation) => {
    const e = ev.evaluation;
    const C = ev.classes;
    const stats = h(
      'dl',
      { class: 'stats' },
      h('div', {}, h('dt', {}, 'Accuracy'), h('dd', { id: 'eval-accuracy' }, pct(e.accuracy))),
      h('div', {}, h('dt', {}, 'Balanced accuracy'), h('dd', {}, pct(e.balancedAccuracy))),
      h('div', {}, h('dt', {}, 'Log loss'), h('dd', {}, fixed(e.logLoss))),
      h('div', {}, h('dt', {}, 'Validation photos'), h('dd', {}, String(e.n))),
      h('div', {}, h('dt', {}, 'Trained'), h('dd', {}, ev.mode === 'finetune' ? 'fine-tuned' : 'frozen backbone')),
    );

    const perClass = h(
      'table',
      { class: 'per-class' },
      h('caption', {}, 'Per class'),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Class'), h('th', { scope: 'col' }, 'Precision'), h('th', { scope: 'col' }, 'Recall'), h('th', { scope: 'col' }, 'F1'), h('th', { scope: 'col' }, 'Photos'))),
      h('tbody', {}, e.perClass.map((c) => h('tr', {}, h('th', { scope: 'row' }, c.class), h('td', {}, pct(c.precision)), h('td', {}, pct(c.recall)), h('td', {}, fixed(c.f1, 2)), h('td', {}, String(c.support))))),
    );

    const cell = h('div', { class: 'cell-photos', id: 'cell-photos', 'aria-live': 'polite' });
    const max = Math.max(1, ...e.confusion.flat());
    const openCell = (t: number, pIdx: number, btn: HTMLButtonElement) => {
      matrix.querySelectorAll('button[aria-pressed="true"]').forEach((b) => b.setAttribute('aria-pressed', 'false'));
      btn.setAttribute('aria-pressed', 'true');
      const items = ev.items.filter((it) => it.true === t && it.predicted === pIdx);
      clear(
        cell,
        h('h4', {}, `True ${C[t]}, predicted ${C[pIdx]}: ${items.length} photo${items.length === 1 ? '' : 's'}`),
        items.length ? h('div', { class: 'thumb-grid' }, items.map((it) => thumbFigure(pid, it, C))) : h('p', { class: 'hint' }, 'No photos in this cell.'),
      );
    };
    const matrix = h(
      'table',
      { class: 'confusion', id: 'confusion' },
      h('caption', {}, 'Confusion matrix: rows are the true class, columns the predicted one. Open a cell to see its photos.'),
      h('thead', {}, h('tr', {}, h('td', { class: 'corner' }, 'true ↓ predicted →'), C.map((c) => h('th', { scope: 'col' }, c)))),
      h(
        'tbody',
        {},
        e.confusion.map((row, t) =>
          h(
            'tr',
            {},
            h('th', { scope: 'row' }, C[t]),
            row.map((count, pIdx) => {
              const b: HTMLButtonElement = h('button', {
                type: 'button',
                class: `cell${t === pIdx ? ' diag' : ' off'}${count === 0 ? ' zero' : ''}`,
                'aria-pressed': 'false',
                'aria-label': `${count} photo${count === 1 ? '' : 's'} of ${C[t]} predicted as ${C[pIdx]}`,
                dataset: { true: C[t], predicted: C[pIdx] },
                style: { '--v': String(count / max) },
                onclick: () => openCell(t, pIdx, b),
              }, String(count));
              return h('td', {}, b);
            }),
          ),
        ),
      ),
    );

    const worst = ev.items.slice(0, 8);
    const losses = h(
      'div',
      { class: 'top-losses' },
      h('h4', {}, 'Top losses: the photos the model was most wrong (or least sure) about'),
      worst.length ? h('div', { class: 'thumb-grid' }, worst.map((it) => thumbFigure(pid, it, C, `loss ${fixed(it.loss, 2)}`))) : h('p', { class: 'hint' }, 'No validation photos.'),
    );

    clear(body, stats, h('div', { class: 'eval-grid' }, h('div', {}, matrix), h('div', {}, perClass)), cell, losses);
  };

  runSelect.addEventListener('change', () => setRun(runSelect.value || null));
  on('project', () => {
    const runs = state.project?.runs ?? [];
    runSelect.replaceChildren(...(runs.length ? runs.map((r, i) => h('option', { value: r }, i === 0 ? `${r} (newest)` : r)) : [h('option', { value: '' }, '— no runs yet —')]));
    runSelect.disabled = !runs.length;
  });
  let loaded = '';
  on('run', () => {
    runSelect.value = state.run ?? '';
    const key = `${state.project?.id}/${state.run}`;
    if (key === loaded) return;
    loaded = key;
    void load();
    renderExport();
  });

  // ---- 8 · Export
  const exNotice = new Notice();
  const exBtn = h('button', { type: 'button', class: 'primary', id: 'export-start' }, 'Export the run');
  const exBody = h('div', { class: 'export-body' });
  clear(exportRoot, h('p', {}, 'One ONNX file (backbone + head, outputs ', h('code', {}, 'probabilities'), ') and a sidecar JSON that says how to prepare a photo for it. ', h('span', { id: 'export-run' })), h('div', { class: 'button-row' }, exBtn), exNotice.el, exBody);
  const renderExport = () => {
    exBody.replaceChildren();
    exNotice.clear();
    exBtn.disabled = !state.run;
    clear(exportRoot.querySelector('#export-run')!, ...(state.run ? ['Run: ', h('code', { class: 'nowrap' }, state.run), '.'] : ['Train the project first.']));
  };
  exBtn.addEventListener('click', () => {
    const p = state.project;
    const run = state.run;
    if (!p || !run) return;
    void busy(exBtn, exNotice, async () => {
      exNotice.info('Exporting and checking the exported graph against the run…');
      const r = await post<{ model: string; sidecar: string; bytes: number; classes: string[] }>(`/api/projects/${p.id}/runs/${encodeURIComponent(run)}/export`);
      const sidecar = (await (await request('GET', r.sidecar)).json()) as Sidecar;
      exNotice.ok(`Exported: ${bytes(r.bytes)}, classes ${r.classes.join(', ')}.`);
      const node = nodeSnippet(sidecar);
      const web = webSnippet(sidecar);
      clear(
        exBody,
        h('div', { class: 'button-row' }, downloadButton('Download model.onnx', r.model, `${run}-model.onnx`, exNotice), downloadButton('Download model.onnx.json', r.sidecar, `${run}-model.onnx.json`, exNotice)),
        h('h4', {}, 'Preprocessing'),
        h('ol', { class: 'prep' }, (sidecar.preprocessing ?? []).map((s) => h('li', {}, s))),
        snippetBox('From Node (npm install onnxruntime-node sharp)', node),
        snippetBox('In the browser (npm install onnxruntime-web)', web),
      );
    });
  });
  renderExport();
}

interface Sidecar {
  preprocess: { size: [number, number]; cropPct: number | null; interpolation: string; mean: number[]; std: number[]; layout: 'NCHW' | 'NHWC'; channelOrder: 'RGB' | 'BGR' };
  labels: string[];
  input: { name: string; shape: unknown[] };
  preprocessing?: string[];
}

function downloadButton(label: string, url: string, filename: string, notice: Notice): HTMLButtonElement {
  const b = h('button', { type: 'button' }, label);
  b.addEventListener('click', () =>
    void busy(b, notice, async () => {
      const res = await fetch(url, { headers: authHeaders() });
      if (!res.ok) throw new Error(((await res.json().catch(() => ({}))) as { error?: string }).error ?? `${res.status} ${res.statusText}`);
      const blobUrl = URL.createObjectURL(await res.blob());
      const a = h('a', { href: blobUrl, download: filename });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(blobUrl), 10_000);
    }),
  );
  return b;
}

function snippetBox(title: string, code: string): HTMLElement {
  const copy = h('button', { type: 'button', class: 'small' }, 'Copy');
  const status = h('span', { class: 'hint', role: 'status', 'aria-live': 'polite' });
  copy.addEventListener('click', () => {
    navigator.clipboard
      .writeText(code)
      .then(() => (status.textContent = 'Copied.'))
      .catch(() => (status.textContent = 'The browser refused the clipboard; select the text and copy it.'));
  });
  return h('div', { class: 'snippet' }, h('div', { class: 'snippet-head' }, h('h4', {}, title), copy, status), h('pre', { tabindex: '0' }, h('code', {}, code)));
}

const num = (v: number) => String(+v.toFixed(6));

/** Index expressions of the tensor for pixel i (row-major), tensor channel c, reading source channel (RGB/BGR). */
function fillLoop(s: Sidecar['preprocess'], px: string, step: number): string {
  const [h_, w] = s.size;
  const src = s.channelOrder === 'BGR' ? '2 - c' : 'c';
  const dst = s.layout === 'NCHW' ? `c * ${h_ * w} + i` : 'i * 3 + c';
  return [
    `const mean = [${s.mean.map(num).join(', ')}], std = [${s.std.map(num).join(', ')}];`,
    `const x = new Float32Array(${3 * h_ * w});`,
    `for (let i = 0; i < ${h_ * w}; i++)`,
    `  for (let c = 0; c < 3; c++) x[${dst}] = (${px}[i * ${step} + ${src}] / 255 - mean[c]) / std[c];`,
  ].join('\n');
}

function dims(s: Sidecar['preprocess']): string {
  const [h_, w] = s.size;
  return s.layout === 'NCHW' ? `[1, 3, ${h_}, ${w}]` : `[1, ${h_}, ${w}, 3]`;
}

function nodeSnippet(sc: Sidecar): string {
  const s = sc.preprocess;
  const [h_, w] = s.size;
  const kernel = s.interpolation === 'bilinear' ? 'linear' : s.interpolation === 'bicubic' ? 'cubic' : s.interpolation;
  const resize =
    s.cropPct === null
      ? `.resize(${w}, ${h_}, { fit: 'fill', kernel: '${kernel}' })`
      : s.cropPct === 1
        ? `.resize(${w}, ${h_}, { fit: 'cover', kernel: '${kernel}' })`
        : `.resize(${Math.round(w / s.cropPct)}, ${Math.round(h_ / s.cropPct)}, { fit: 'cover', kernel: '${kernel}' })\n  .extract({ left: ${Math.floor((Math.round(w / s.cropPct) - w) / 2)}, top: ${Math.floor((Math.round(h_ / s.cropPct) - h_) / 2)}, width: ${w}, height: ${h_} })`;
  return `import * as ort from 'onnxruntime-node';
import sharp from 'sharp';

const labels = ${JSON.stringify(sc.labels)};
const session = await ort.InferenceSession.create('model.onnx');

// The preprocessing graft trained with (model.onnx.json says the same)
const px = await sharp(process.argv[2]).rotate().flatten({ background: '#ffffff' })
  ${resize}
  .removeAlpha().raw().toBuffer();
${fillLoop(s, 'px', 3)}

const out = await session.run({ ${JSON.stringify(sc.input.name)}: new ort.Tensor('float32', x, ${dims(s)}) });
const p = out.probabilities.data;
console.log(labels.map((label, i) => ({ label, probability: p[i] })).sort((a, b) => b.probability - a.probability));
`;
}

function webSnippet(sc: Sidecar): string {
  const s = sc.preprocess;
  const [h_, w] = s.size;
  const crop =
    s.cropPct === null
      ? `ctx.drawImage(img, 0, 0, ${w}, ${h_}); // the whole photo, squashed to ${w}x${h_}`
      : `// cover ${Math.round(w / s.cropPct)}x${Math.round(h_ / s.cropPct)} keeping the aspect ratio, then the centre ${w}x${h_}
const k = Math.max(${Math.round(w / s.cropPct)} / img.naturalWidth, ${Math.round(h_ / s.cropPct)} / img.naturalHeight);
const sw = ${w} / k, sh = ${h_} / k;
ctx.drawImage(img, (img.naturalWidth - sw) / 2, (img.naturalHeight - sh) / 2, sw, sh, 0, 0, ${w}, ${h_});`;
  return `import * as ort from 'onnxruntime-web';

const labels = ${JSON.stringify(sc.labels)};
const session = await ort.InferenceSession.create('model.onnx');

async function classify(img /* a loaded <img> */) {
  const canvas = new OffscreenCanvas(${w}, ${h_});
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, ${w}, ${h_});
  ctx.imageSmoothingQuality = 'high';
  ${crop.split('\n').join('\n  ')}
  const px = ctx.getImageData(0, 0, ${w}, ${h_}).data; // RGBA
  ${fillLoop(s, 'px', 4).split('\n').join('\n  ')}
  const out = await session.run({ ${JSON.stringify(sc.input.name)}: new ort.Tensor('float32', x, ${dims(s)}) });
  const p = out.probabilities.data;
  return labels.map((label, i) => ({ label, probability: p[i] })).sort((a, b) => b.probability - a.probability);
}
`;
}
