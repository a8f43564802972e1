import { availableParallelism } from 'node:os';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { PreprocessSpec } from '../image/spec.js';
import { RANGE_0_1, RANGE_0_255, RANGE_MINUS1_1 } from '../image/spec.js';
import type { BackboneOptions } from '../engine/backbone.js';
import type { Reporter } from '../tasks/reporter.js';
import { downloadProgress } from './progress.js';

export function intArg(name: string, min = 1) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be a whole number >= ${min}`);
    return n;
  };
}

/** What floatArg accepts, in words: only finite numbers pass, so an open end is said as ">= min", not "[min, Infinity]". */
export function floatRange(min = -Infinity, max = Infinity): string {
  if (Number.isFinite(min) && Number.isFinite(max)) return `a number in [${min}, ${max}]`;
  if (Number.isFinite(min)) return `a finite number >= ${min}`;
  if (Number.isFinite(max)) return `a finite number <= ${max}`;
  return 'a finite number';
}

export function floatArg(name: string, min = -Infinity, max = Infinity) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be ${floatRange(min, max)}`);
    return n;
  };
}

function triple(name: string) {
  return (v: string): [number, number, number] => {
    const parts = v.split(',').map(Number);
    if (parts.length === 1 && Number.isFinite(parts[0])) return [parts[0]!, parts[0]!, parts[0]!];
    if (parts.length !== 3 || parts.some((p) => !Number.isFinite(p))) throw new InvalidArgumentError(`${name} takes 3 numbers, e.g. 0.485,0.456,0.406`);
    return parts as [number, number, number];
  };
}

function size(v: string): [number, number] {
  const m = /^(\d+)(?:x(\d+))?$/.exec(v);
  if (!m) throw new InvalidArgumentError('size is N or HxW, e.g. 224 or 192x256');
  const h = Number(m[1]);
  return [h, m[2] ? Number(m[2]) : h];
}

/** Flags that override a model's preprocessing and how its session runs. */
/** --crop: a fraction in [0.01, 1], or none (squash). */
function cropArg(v: string): number | 'none' {
  // Not null: commander treats a null from a parser as "no value" and keeps the raw string.
  if (v === 'none') return 'none';
  return floatArg('--crop', 0.01, 1)(v);
}

export function addModelOptions(cmd: Command): Command {
  return cmd
    .option('--size <N|HxW>', 'input size (default: from the model)', size)
    .option('--crop <pct|none>', 'centre-crop fraction after resizing the shorter side, e.g. 0.875; none: squash the whole image to the size, aspect ignored (default: from the model, else 1)', cropArg)
    .addOption(new Option('--interpolation <kind>', 'resize kernel').choices(['nearest', 'bilinear', 'bicubic', 'lanczos3']))
    .addOption(new Option('--range <range>', 'input value range (instead of --mean/--std)').choices(['0,1', '-1,1', '0,255']))
    .option('--mean <r,g,b>', 'per-channel mean over [0,1] pixels', triple('--mean'))
    .option('--std <r,g,b>', 'per-channel std over [0,1] pixels', triple('--std'))
    .addOption(new Option('--input-layout <layout>', 'input tensor layout').choices(['NCHW', 'NHWC']))
    .addOption(new Option('--channel-order <order>', 'channel order').choices(['RGB', 'BGR']))
    .option('--feature-node <name>', 'output or node whose tensor is the feature vector (see the model outputs)')
    .option('--threads <n>', 'ONNX Runtime threads (default: all cores)', intArg('--threads'))
    .option('--batch-size <n>', 'images per forward pass (with --finetune also the training batch)', intArg('--batch-size'), 32)
    .option('--no-cache', 'do not read or write the feature cache')
    .option('--cache-dir <dir>', 'feature cache folder (default: $GRAFT_HOME/features)');
}

export interface ModelFlags {
  size?: [number, number];
  crop?: number | 'none';
  interpolation?: PreprocessSpec['interpolation'];
  range?: '0,1' | '-1,1' | '0,255';
  mean?: [number, number, number];
  std?: [number, number, number];
  inputLayout?: PreprocessSpec['layout'];
  channelOrder?: PreprocessSpec['channelOrder'];
  featureNode?: string;
  threads?: number;
  batchSize: number;
  cache: boolean;
  cacheDir?: string;
}

export function preprocessOverrides(f: ModelFlags): Partial<PreprocessSpec> {
  const o: Partial<PreprocessSpec> = {};
  if (f.size) o.size = f.size;
  if (f.crop !== undefined) o.cropPct = f.crop === 'none' ? null : f.crop;
  if (f.interpolation) o.interpolation = f.interpolation;
  const range = f.range === '0,1' ? RANGE_0_1 : f.range === '-1,1' ? RANGE_MINUS1_1 : f.range === '0,255' ? RANGE_0_255 : undefined;
  if (range) {
    o.mean = [...range.mean] as [number, number, number];
    o.std = [...range.std] as [number, number, number];
  }
  if (f.mean) o.mean = f.mean;
  if (f.std) o.std = f.std;
  if (f.inputLayout) o.layout = f.inputLayout;
  if (f.channelOrder) o.channelOrder = f.channelOrder;
  return o;
}

/** Backbone options from the flags; with a reporter, model downloads (catalog names, URLs) show a progress bar. */
export function backboneOptions(f: ModelFlags, reporter?: Reporter): BackboneOptions {
  const dl = reporter ? downloadProgress(reporter, 'download') : undefined;
  const cores = availableParallelism();
  if (f.threads !== undefined && f.threads > cores) reporter?.warn?.(`--threads ${f.threads}: this machine has ${cores} cores; using ${cores}`);
  return {
    preprocess: preprocessOverrides(f),
    featureNode: f.featureNode,
    threads: f.threads,
    onDownload: dl
      ? (p) => {
          dl.onProgress(p);
          if (p.total !== undefined && p.received >= p.total) dl.end();
        }
      : undefined,
  };
}

export function cacheOption(f: ModelFlags): string | false | undefined {
  return f.cache === false ? false : f.cacheDir;
}

/** `--queue` and `--shard-size`: run the extraction on a `graft worker` pool (commands that extract). */
export function addQueueOptions(cmd: Command): Command {
  return cmd
    .option('--queue <redis-url>', 'compute the features on `graft worker` processes through this Redis queue (e.g. redis://127.0.0.1:6379); needs the feature cache on a folder they share')
    .option('--shard-size <n>', 'images per queue job', intArg('--shard-size'), 64);
}

export interface QueueFlags { queue?: string; shardSize: number }

export function queueOption(f: QueueFlags): { url: string; shardSize: number } | undefined {
  return f.queue ? { url: f.queue, shardSize: f.shardSize } : undefined;
}
