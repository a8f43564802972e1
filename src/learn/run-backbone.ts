/**
 * A run's backbone, checked to be the bytes the run was trained on: its head only makes sense on the features of
 * that exact model, and a model file replaced in place (re-downloaded, re-exported, fine-tuned again) keeps its path.
 * Every use of a run's model goes through here: evaluate, predict, serve, export and the vision tools.
 */
import { Backbone, type BackboneOptions } from '../engine/backbone.js';
import { GraftError } from '../errors.js';
import type { OnnxInfo } from '../models/onnx-file.js';
import type { LoadedRun } from './run.js';

/** Throws when `model` (loaded from the run's model path) is not the file the run in `run.dir` was trained on. */
export function checkRunModel(run: Pick<LoadedRun, 'dir' | 'config'>, model: OnnxInfo): void {
  const m = run.config.model;
  if (model.sha256 !== m.sha256) {
    throw new GraftError(`${m.path}: this model file changed since the run in ${run.dir} was trained (SHA-256 differs)`);
  }
}

/** The backbone a run was trained on, checked to be the same bytes. */
export async function runBackbone(run: LoadedRun, opts: BackboneOptions = {}): Promise<Backbone> {
  const m = run.config.model;
  const backbone = await Backbone.load(m.path, { ...opts, preprocess: run.config.preprocess, featureNode: m.featureTensor });
  try {
    checkRunModel(run, backbone.ref.onnx.info);
  } catch (err) {
    await backbone.dispose();
    throw err;
  }
  return backbone;
}
