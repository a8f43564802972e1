/** 2 · Train: frozen head or fine-tune N blocks, as a job with live curves, progress, queue position and cancel. */
import { followJob, get, post, type EpochLog, type JobInfo, type JobState, type Progress } from './api.js';
import { lineChart } from './chart.js';
import { busy, clear, field, fixed, h, Notice, pct, seconds } from './dom.js';
import { on, refreshProject, state } from './state.js';

export interface TrainView {
  /** Curves of a finished run (from its history), shown when no job is live. */
  showHistory(history: EpochLog[]): void;
}

export function mountTrain(root: HTMLElement): TrainView {
  const notice = new Notice();
  const frozen = h('input', { type: 'radio', name: 'train-mode', value: 'frozen', id: 'mode-frozen', checked: true });
  const finetune = h('input', { type: 'radio', name: 'train-mode', value: 'finetune', id: 'mode-finetune' });
  const blocks = h('input', { type: 'number', id: 'train-blocks', min: 1, max: 20, value: '1', disabled: true, class: 'narrow' });
  const epochs = h('input', { type: 'number', id: 'train-epochs', min: 1, max: 500, placeholder: 'auto', class: 'narrow' });
  const augment = h('input', { type: 'number', id: 'train-augment', min: 0, max: 8, value: '0', disabled: true, class: 'narrow' });
  const start = h('button', { type: 'submit', class: 'primary', id: 'train-start' }, 'Train');
  const cancel = h('button', { type: 'button', id: 'train-cancel', disabled: true }, 'Cancel');

  const mode = h(
    'fieldset',
    { class: 'mode' },
    h('legend', {}, 'What to train'),
    h('label', { class: 'radio' }, frozen, ' A new head on the frozen backbone ', h('small', { class: 'hint' }, '(fast: features are computed once)')),
    h('label', { class: 'radio' }, finetune, ' Also fine-tune the backbone’s last blocks ', h('small', { class: 'hint' }, '(slower, can learn more)')),
  );
  const form = h(
    'form',
    { class: 'train-form', 'aria-label': 'Training settings' },
    mode,
    h('div', { class: 'row' }, field('Blocks to fine-tune', blocks), field('Epochs', epochs, 'Empty: graft’s default, with early stopping.'), field('Augmented views per photo', augment, 'Fine-tuning only: flips, crops, colour.'), h('div', { class: 'field field-button' }, h('div', { class: 'button-row' }, start, cancel))),
  );
  const syncMode = () => {
    blocks.disabled = augment.disabled = !finetune.checked;
  };
  frozen.addEventListener('change', syncMode);
  finetune.addEventListener('change', syncMode);

  const jobState = h('p', { class: 'job-state', id: 'train-state', role: 'status', 'aria-live': 'polite' }, 'No training running.');
  const bar = h('progress', { id: 'train-progress', max: 1, value: 0, 'aria-label': 'Training progress' });
  const barText = h('span', { class: 'progress-text' });
  const charts = h('div', { class: 'charts', id: 'train-charts' });
  const log = h('ul', { class: 'log', 'aria-label': 'Training log' });
  clear(root, form, notice.el, h('div', { class: 'job' }, jobState, h('div', { class: 'progress-row' }, bar, barText), charts, log));

  let epochsSeen: EpochLog[] = [];
  let pending = false;
  const drawCharts = (list: EpochLog[], maxEpochs?: number) => {
    const loss = lineChart({
      title: 'Loss',
      series: [
        { name: 'train', cls: 's-train', points: list.map((e) => [e.epoch, e.trainLoss]) },
        { name: 'validation', cls: 's-val', points: list.filter((e) => e.valLoss !== undefined).map((e) => [e.epoch, e.valLoss!]) },
      ],
      yMin: 0,
      xMax: maxEpochs,
      format: (v) => (Math.abs(v) >= 10 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(1) : v.toFixed(2)),
    });
    const acc = lineChart({
      title: 'Accuracy',
      series: [
        { name: 'train', cls: 's-train', points: list.map((e) => [e.epoch, e.trainAcc]) },
        { name: 'validation', cls: 's-val', points: list.filter((e) => e.valAcc !== undefined).map((e) => [e.epoch, e.valAcc!]) },
      ],
      yMin: 0,
      yMax: 1,
      xMax: maxEpochs,
      format: (v) => `${Math.round(v * 100)}%`,
    });
    charts.replaceChildren(loss, acc);
  };
  drawCharts([]);
  const scheduleDraw = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      drawCharts(epochsSeen);
    });
  };

  const showProgress = (p: Progress) => {
    bar.max = Math.max(1, p.total);
    bar.value = Math.min(p.done, p.total);
    const rate = p.rate ? ` · ${p.rate >= 10 ? p.rate.toFixed(0) : p.rate.toFixed(1)} ${p.unit ?? 'items'}/s` : '';
    const eta = p.etaSeconds !== undefined && p.done < p.total ? ` · ETA ${seconds(p.etaSeconds)}` : '';
    barText.textContent = `${p.task}: ${p.done} / ${p.total}${p.unit ? ` ${p.unit}` : ''}${rate}${eta}${p.note ? ` · ${p.note}` : ''}`;
  };

  const addLog = (text: string, level = 'info') => {
    log.append(h('li', { class: `log-${level}` }, text));
    while (log.children.length > 6) log.firstElementChild!.remove();
  };

  let live: { id: string; ac: AbortController } | undefined;

  const follow = async (job: JobInfo) => {
    live?.ac.abort();
    const ac = new AbortController();
    live = { id: job.id, ac };
    epochsSeen = [];
    log.replaceChildren();
    drawCharts([]);
    bar.value = 0;
    barText.textContent = '';
    cancel.disabled = false;
    start.disabled = true;
    root.classList.add('is-running');
    let final: JobState | undefined;
    let result: { run: string; validation: { accuracy: number; n: number }; bestEpoch: number } | undefined;
    let error: string | undefined;
    try {
      final = await followJob(job.id, {
        state: (s) => {
          if (s.state === 'queued') jobState.textContent = `Waiting in line: position ${s.position ?? '?'}. It starts when the jobs ahead of it finish.`;
          else if (s.state === 'running') jobState.textContent = 'Training…';
        },
        progress: showProgress,
        epoch: (e) => {
          epochsSeen.push(e);
          scheduleDraw();
          jobState.textContent = `Training: epoch ${e.epoch} · train loss ${fixed(e.trainLoss)}${e.valAcc !== undefined ? ` · validation accuracy ${pct(e.valAcc)}` : ''}`;
        },
        log: (l) => addLog(l.message, l.level),
        result: (r) => (result = r as typeof result),
        error: (e) => (error = e.message),
      }, ac.signal);
    } catch (err) {
      if ((err as Error).name === 'AbortError') return;
      notice.error(err);
    } finally {
      if (live?.id === job.id) {
        live = undefined;
        cancel.disabled = true;
        start.disabled = false;
        root.classList.remove('is-running');
      }
    }
    drawCharts(epochsSeen);
    if (final === 'done' && result) {
      bar.value = bar.max;
      jobState.textContent = `Done: ${result.run}, validation accuracy ${pct(result.validation.accuracy)} on ${result.validation.n} photos (best epoch ${result.bestEpoch}).`;
      notice.clear();
      await refreshProject().catch((err) => notice.error(err));
    } else if (final === 'cancelled') {
      jobState.textContent = 'Cancelled. Nothing was kept from this run.';
    } else if (final === 'failed') {
      jobState.textContent = 'Training failed.';
      notice.error(error ?? 'the training job failed');
    }
  };

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const p = state.project;
    if (!p) return notice.error('open or create a project first');
    void busy(start, notice, async () => {
      notice.clear();
      const body: Record<string, unknown> = { mode: finetune.checked ? 'finetune' : 'frozen' };
      if (finetune.checked) {
        body.blocks = Number(blocks.value) || 1;
        body.augment = Number(augment.value) || 0;
      }
      if (epochs.value) body.epochs = Number(epochs.value);
      const job = await post<JobInfo>(`/api/projects/${p.id}/train`, body);
      jobState.textContent = job.state === 'queued' && job.position ? `Waiting in line: position ${job.position}.` : 'Starting…';
      void follow(job);
    }).then(() => {
      if (live) start.disabled = true;
    });
  });

  cancel.addEventListener('click', () => {
    if (!live) return;
    const jid = live.id;
    void busy(cancel, notice, async () => {
      await post(`/api/jobs/${jid}/cancel`);
      jobState.textContent = 'Cancelling…';
    });
  });

  // A page opened (or reloaded) while the project trains picks the job up again.
  let shownFor: string | undefined;
  on('project', () => {
    const p = state.project;
    start.disabled = !p || !!live;
    if (!p || p.id === shownFor) return;
    shownFor = p.id;
    live?.ac.abort();
    live = undefined;
    cancel.disabled = true;
    jobState.textContent = p.runs?.length ? `${p.runs.length} run${p.runs.length === 1 ? '' : 's'} so far; the newest is shown under Evaluate.` : 'Not trained yet.';
    barText.textContent = '';
    bar.value = 0;
    epochsSeen = [];
    drawCharts([]);
    void get<{ jobs: JobInfo[] }>(`/api/jobs?project=${p.id}`)
      .then(({ jobs }) => {
        const j = jobs.find((x) => x.kind === 'train' && (x.state === 'running' || x.state === 'queued'));
        if (j && state.project?.id === p.id) void follow(j);
      })
      .catch((err) => notice.error(err));
  });

  return {
    showHistory(history) {
      if (live || epochsSeen.length) return;
      drawCharts(history);
    },
  };
}
