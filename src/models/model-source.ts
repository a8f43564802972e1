/**
 * What a user gives for a model, turned into a local ONNX file: a path (converted through its importer when it is
 * not ONNX), an http(s) URL (downloaded into the store), or a catalog name (pulled into the store).
 */
import { stat } from 'node:fs/promises';
import { basename, dirname, join, resolve as resolvePath } from 'node:path';
import { z } from 'zod';
import { writeJsonAtomic } from '../util/fs.js';
import { findEntry, looksLikeName } from './catalog.js';
import { isUrl, type DownloadOptions } from './download.js';
import { convertTo, importerFor, needsImporter } from './importer-registry.js';
import { checkTfjsFolder, sniffModel } from './store-checks.js';
import { exists, readJson, sha, sidecarFor, unknownModel } from './store-files.js';
import { defaultStore, type ModelStore, type StoreOptions } from './store.js';


export interface SourceOptions extends StoreOptions {
  store?: ModelStore;
}

/**
 * Turn what a user gave for a model into a local ONNX file: a path (ONNX as is; a TF.js folder or model.json, or a
 * .tflite, through its importer), an http(s) URL (downloaded into the store), or a catalog name (pulled into the
 * store; converted if not ONNX). An unknown name is an error listing close catalog names.
 */
export async function modelSourcePath(source: string, opts: SourceOptions = {}): Promise<string> {
  const store = opts.store ?? defaultStore();
  if (isUrl(source)) return store.fetchUrl(source, opts);
  if (await exists(source)) {
    const local = await sniffModel(source);
    if (!local || local.format === 'onnx') return source;
    const imp = importerFor(local.format);
    if (!imp) throw needsImporter(source, local.format);
    if (local.format !== 'tflite') await checkTfjsFolder(dirname(local.file), basename(local.file), local.file);
    const st = await stat(local.file);
    const key = sha(`${local.format}\n${imp.version ?? ''}\n${resolvePath(local.file)}\n${st.size}\n${st.mtimeMs}`).slice(0, 16);
    return convertTo(join(store.root, 'imported', key, 'model.onnx'), local.format, local.file, source);
  }
  const entry = findEntry(source);
  if (entry) {
    const pulled = await store.pull(entry, opts);
    if (entry.format === 'onnx') {
      // Keep the sidecar in step with the catalog (a newer graft may know the model better than the one that pulled it).
      const want = JSON.stringify(sidecarFor(entry, true));
      const have = await readJson(`${pulled.main}.json`, z.unknown());
      if (JSON.stringify(have) !== want) await writeJsonAtomic(`${pulled.main}.json`, JSON.parse(want));
      return pulled.main;
    }
    const imp = importerFor(entry.format);
    const out = join(pulled.dir, '.imported', `${entry.format}-${imp?.version ?? 'current'}.onnx`);
    const path = await convertTo(out, entry.format, pulled.main, entry.name, pulled.dir);
    await writeJsonAtomic(`${path}.json`, sidecarFor(entry, false));
    return path;
  }
  if (looksLikeName(source)) throw unknownModel(source);
  return source;
}

/**
 * Fetch a URL into graft's model store (once; later calls reuse the file). Kept for callers of the first API; the
 * store's `fetchUrl` does the work.
 */
export async function downloadToCache(url: string, opts: DownloadOptions = {}): Promise<string> {
  return defaultStore().fetchUrl(url, opts);
}
