import type { Command } from 'commander';
import { GraftError } from '../../errors.js';
import { catalogEntries, entryBytes, formatBytes, type CatalogEntry } from '../../models/catalog.js';
import { isUrl } from '../../models/download.js';
import { defaultStore, importerFor } from '../../models/store.js';
import type { Reporter } from '../../tasks/reporter.js';
import { floatArg, intArg } from '../options.js';
import { cliReporter, downloadProgress } from '../progress.js';
import { displayPath, out, printJson, withCommon, type Common } from '../output.js';

/**
 * Download progress as a reporter task in kB (the CLI's bars show value, rate and ETA): the bar starts once the total
 * is known (a TF.js model's total is known after its model.json).
 */
function short(n: number | undefined): string {
  if (n === undefined) return '?';
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(0)}k`;
  return String(n);
}

function table(rows: string[][]): void {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) out(r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd());
}

function entryJson(e: CatalogEntry, cached: { dir: string } | undefined) {
  const size = entryBytes(e);
  return {
    name: e.name,
    family: e.family,
    format: e.format,
    description: e.description,
    input: e.preprocess.size,
    preprocess: e.preprocess,
    labels: e.labels,
    featureNode: e.featureNode ?? null,
    classifierNode: e.classifierNode ?? null,
    params: e.params ?? null,
    macs: e.macs ?? null,
    bytes: size.bytes ?? null,
    bytesExact: size.exact,
    license: e.license,
    homepage: e.homepage,
    files: e.files.map((f) => ({ name: f.name, urls: f.urls, size: f.size ?? null, sha256: f.sha256 ?? null })),
    cached: cached !== undefined,
    path: cached?.dir ?? null,
  };
}

export function registerModels(program: Command): void {
  withCommon(
    program
      .command('models')
      .description('list the model catalog (names usable wherever a model is taken), or with --cached what the store holds')
      .summary('list the model catalog, or with --cached what the store holds')
      .option('--cached', 'only models in the store (also models fetched by URL)'),
  ).action(async (o: Common & { cached?: boolean }) => {
    const store = defaultStore();
    const stored = await store.list();
    const byName = new Map(stored.map((s) => [s.name, s]));
    if (o.cached) {
      if (o.json) return printJson(stored);
      if (!stored.length) return out(`no models in the store (${displayPath(store.root)})`);
      table([['name', 'format', 'files', 'size', 'path'], ...stored.map((s) => [s.name, s.format ?? '?', String(s.files), formatBytes(s.bytes), displayPath(s.dir)])]);
      return;
    }
    const entries = catalogEntries();
    if (o.json) return printJson(entries.map((e) => entryJson(e, byName.get(e.name))));
    table([
      ['name', 'family', 'format', 'input', 'params', 'size', 'cached'],
      ...entries.map((e) => {
        const s = entryBytes(e);
        return [
          e.name,
          e.family,
          e.format,
          `${e.preprocess.size[0]}x${e.preprocess.size[1]}`,
          short(e.params),
          s.bytes === undefined ? '?' : `${s.exact ? '' : '~'}${formatBytes(s.bytes)}`,
          byName.has(e.name) ? 'yes' : '',
        ];
      }),
    ]);
  });

  withCommon(
    program
      .command('pull')
      .description('download a catalog model into the store (verified; resumed if interrupted)')
      .summary('download a catalog model into the store')
      .argument('<name|url>', "catalog name (see 'graft models'), or the URL of an ONNX model")
      .option('--mirror <dir|url>', 'fetch from <mirror>/<name>/<file> instead of the official URLs (default: $GRAFT_MIRROR)')
      .option('--force', 'download again even if the model is in the store')
      .option('--timeout <s>', 'give up an attempt after this many seconds without data', floatArg('--timeout', 0.1))
      .option('--retries <n>', 'further attempts after a failed one', intArg('--retries', 0)),
  ).action(async (name: string, o: Common & { mirror?: string; force?: boolean; timeout?: number; retries?: number }) => {
    const r = cliReporter({ quiet: o.quiet });
    const progress = downloadProgress(r, `pull ${name}`);
    const opts = {
      mirror: o.mirror,
      force: o.force,
      timeoutMs: o.timeout !== undefined ? o.timeout * 1000 : undefined,
      retries: o.retries,
      onProgress: progress.onProgress,
      log: (m: string) => r.info?.(m),
    };
    let res;
    try {
      if (isUrl(name)) {
        const path = await defaultStore().fetchUrl(name, opts);
        progress.end();
        return o.json ? printJson({ url: name, path }) : out(`${name} -> ${displayPath(path)}`);
      }
      res = await defaultStore().pull(name, opts);
    } finally {
      progress.end();
    }
    if (o.json) {
      return printJson({
        name: res.name,
        format: res.format,
        dir: res.dir,
        main: res.main,
        bytes: res.bytes,
        downloaded: res.downloaded,
        files: res.files.map(({ name: n, size, sha256, checksum, source }) => ({ name: n, size, sha256, checksum, source })),
      });
    }
    const what = `${res.name} (${res.format}, ${res.files.length} file${res.files.length === 1 ? '' : 's'}, ${formatBytes(res.bytes)})`;
    out(res.downloaded ? `pulled ${what} into ${displayPath(res.dir)}` : `${what} is already in the store: ${displayPath(res.dir)}`);
    if (res.format !== 'onnx' && !importerFor(res.format)) out(`note: format ${res.format} needs the importer before graft can run it`);
  });

  withCommon(
    program
      .command('rm')
      .description('remove a model from the store (recorded checksums are kept unless --forget)')
      .summary('remove a model from the store')
      .argument('<name|url>', 'catalog name, or the URL of a model fetched by URL')
      .option('--forget', 'also forget the checksums recorded by its first download'),
  ).action(async (name: string, o: Common & { forget?: boolean }) => {
    const res = await defaultStore().remove(name, { forget: o.forget });
    if (!res.removed && !res.forgot) throw new GraftError(`${name} is not in the store`);
    if (o.json) return printJson(res);
    if (res.removed) out(`removed ${res.name}${res.freedBytes ? ` (freed ${formatBytes(res.freedBytes)})` : ''}`);
    if (res.forgot) out(`forgot ${res.forgot} recorded checksum(s) of ${res.name}`);
  });
}
