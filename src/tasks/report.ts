import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { EvaluationSchema } from '../learn/metrics.js';
import { loadRun, RUN_FILES } from '../learn/run.js';
import { writeFileAtomic } from '../util/fs.js';
import { readJsonFile, readJsonFileIfExists } from '../util/json.js';

/** What the report reads of metrics.json. */
const ReportMetricsSchema = z.object({ validation: EvaluationSchema });

/** skipped.json: the files training could not read (absent in runs that predate it). */
const SkippedSchema = z.array(z.object({ path: z.string(), reason: z.string() }));

function esc(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

async function dataUri(path: string): Promise<string | undefined> {
  try {
    return `data:image/png;base64,${(await readFile(path)).toString('base64')}`;
  } catch {
    return undefined;
  }
}

// NaN: nothing to measure on (no validation images).
const pct = (x: number) => (Number.isNaN(x) ? 'n/a' : `${(100 * x).toFixed(1)}%`);
const fixed = (x: number, digits: number) => (Number.isNaN(x) ? 'n/a' : x.toFixed(digits));

/**
 * One self-contained HTML page for a run (pictures embedded, no external files): headline numbers, training curves,
 * confusion matrix, most-confused pairs, top losses, per-class table, settings, skipped files.
 */
export async function renderReport(runDir: string, out = join(runDir, 'report.html')): Promise<{ out: string; bytes: number }> {
  // The report shows the run's files; it does not need the backbone (a run moved without it still has a report).
  const run = await loadRun(runDir, { model: false });
  const metrics = await readJsonFile(join(runDir, RUN_FILES.metrics), ReportMetricsSchema, 'metrics file');
  const skipped = (await readJsonFileIfExists(join(runDir, RUN_FILES.skipped), SkippedSchema, 'skipped-files list')) ?? [];
  const v = metrics.validation;
  const cfg = run.config;
  const img = async (file: string, alt: string) => {
    const uri = await dataUri(join(runDir, file));
    return uri ? `<figure><img src="${uri}" alt="${esc(alt)}"><figcaption>${esc(alt)}</figcaption></figure>` : '';
  };
  const perClass = [...v.perClass]
    .sort((a, b) => a.recall - b.recall || a.class.localeCompare(b.class))
    .map((c) => `<tr><td>${esc(c.class)}</td><td>${fixed(c.precision, 3)}</td><td>${fixed(c.recall, 3)}</td><td>${fixed(c.f1, 3)}</td><td>${c.support}</td></tr>`)
    .join('');
  const confused = (v.mostConfused ?? []).map((p) => `<tr><td>${esc(p.trueClass)}</td><td>${esc(p.predictedClass)}</td><td>${p.count}</td></tr>`).join('');
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>graft run: ${esc(runDir)}</title>
<style>
body{font-family:system-ui,-apple-system,"DejaVu Sans",sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#222}
h1{font-size:1.5rem;margin-bottom:.2rem} .sub{color:#666;margin-top:0}
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1.5rem 0} .card{border:1px solid #ddd;border-radius:8px;padding:.8rem 1.2rem;min-width:9rem}
.card b{display:block;font-size:1.6rem} .card span{color:#666;font-size:.85rem}
figure{margin:1rem 0} img{max-width:100%;border:1px solid #eee} figcaption{color:#666;font-size:.85rem}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem} td,th{border-bottom:1px solid #eee;padding:.25rem .8rem;text-align:left}
th{background:#f6f6f6} code,pre{background:#f6f6f6;padding:.1rem .3rem;border-radius:4px} pre{padding:.8rem;overflow:auto}
</style></head><body>
<h1>graft run · ${esc(cfg.classes.length)} classes</h1>
<p class="sub">${esc(runDir)} · created ${esc(cfg.createdAt)} · model <code>${esc(cfg.model.source)}</code> (features <code>${esc(cfg.model.featureTensor)}</code>) · ${esc(String(cfg.head.kind))} head</p>
<div class="cards">
<div class="card"><b>${pct(v.accuracy)}</b><span>validation accuracy</span></div>
<div class="card"><b>${pct(v.balancedAccuracy)}</b><span>balanced accuracy</span></div>
<div class="card"><b>${fixed(v.logLoss, 3)}</b><span>log loss</span></div>
<div class="card"><b>${cfg.data.trainCount} / ${cfg.data.valCount}</b><span>train / validation images</span></div>
<div class="card"><b>${skipped.length}</b><span>files skipped</span></div>
</div>
<h2>Training</h2>${await img(RUN_FILES.curves, 'training curves (best epoch marked)')}
<h2>Confusion</h2>${await img(RUN_FILES.confusion, 'confusion matrix on the validation set')}
${confused ? `<h3>Most confused pairs</h3><table><tr><th>true</th><th>predicted</th><th>count</th></tr>${confused}</table>` : ''}
<h2>Top losses</h2>${await img(RUN_FILES.topLosses, 'validation images the model was most confidently wrong about')}
<h2>Per class</h2><p class="sub">worst recall first</p>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>${perClass}</table>
<h2>Settings</h2><pre>${esc(JSON.stringify({ data: cfg.data, head: cfg.head, preprocess: cfg.preprocess, model: cfg.model }, null, 2))}</pre>
${skipped.length ? `<h2>Skipped files</h2><table><tr><th>file</th><th>reason</th></tr>${skipped.map((s) => `<tr><td>${esc(s.path)}</td><td>${esc(s.reason)}</td></tr>`).join('')}</table>` : ''}
</body></html>
`;
  await writeFileAtomic(out, html);
  return { out, bytes: Buffer.byteLength(html) };
}
