/** Flags shared by `graft train --finetune` and `graft lr-find`, and Ctrl-C handling for long training. */
import { Command, Option } from 'commander';
import { UsageError } from '../errors.js';
import type { FinetuneOptions } from '../learn/finetune.js';
import type { FinetuneDataOptions } from '../tasks/finetune.js';
import type { Reporter } from '../tasks/reporter.js';
import { exitInterrupted, takeSigint } from './interrupt.js';
import { backboneOptions, cacheOption, floatArg, intArg, type ModelFlags } from './options.js';

export function addFinetuneOptions(cmd: Command): Command {
  return cmd
    .option('--backbone-lr-factor <x>', 'fine-tuning: backbone learning rate = --lr x this (default 0.1)', floatArg('--backbone-lr-factor', 0))
    .addOption(new Option('--schedule <kind>', "fine-tuning: learning-rate schedule: warmup + cosine, or fastai's one-cycle (default cosine)").choices(['cosine', 'onecycle']))
    .option('--warmup <f>', 'fine-tuning: share of steps spent warming up (default 0.1 cosine, 0.25 one-cycle)', floatArg('--warmup', 0, 0.99))
    .option('--label-smoothing <x>', 'fine-tuning: label smoothing (default 0)', floatArg('--label-smoothing', 0, 0.99))
    .option('--clip-norm <x>', 'fine-tuning: clip gradients to this global norm, 0 = off (default 1)', floatArg('--clip-norm', 0))
    .option('--augment <views>', 'fine-tuning: cache this many augmented views of each training image (random resized crop, flip, colour jitter); 0 = off (default 0)', intArg('--augment', 0))
    .option('--balance', 'weight the loss so every class counts the same (imbalanced data; linear/MLP heads and fine-tuning)')
    .option('--train-bn', 'fine-tuning: also train batch norm: scale and shift, and batch statistics in training steps (running mean/var updated); folded batch norm: scale and shift only');
}

export interface FinetuneFlags {
  epochs?: number;
  lr?: number;
  weightDecay?: number;
  dropout?: number;
  patience?: number;
  batchSize?: number;
  backboneLrFactor?: number;
  schedule?: 'cosine' | 'onecycle';
  warmup?: number;
  labelSmoothing?: number;
  clipNorm?: number;
  augment?: number;
  balance?: boolean;
  trainBn?: boolean;
  /** --head (linear or mlp; knn is refused before) and --hidden. */
  head?: string;
  hidden?: number;
}

/** FinetuneOptions from the flags that were given (the rest keep the library defaults). */
export function finetuneOptions(o: FinetuneFlags): FinetuneOptions {
  // batchSize: with --finetune a training step is one forward pass, so --batch-size is its batch too.
  const keys = ['epochs', 'lr', 'weightDecay', 'dropout', 'patience', 'backboneLrFactor', 'schedule', 'warmup', 'labelSmoothing', 'clipNorm', 'balance', 'trainBn', 'hidden', 'batchSize'] as const;
  const f: Record<string, unknown> = {};
  for (const k of keys) if (o[k] !== undefined) f[k] = o[k];
  if (o.head !== undefined) f.head = o.head;
  return f as FinetuneOptions;
}

/**
 * Run `work` with Ctrl-C handling: before training has started (`started()` not called yet) Ctrl-C quits at once
 * (caches are written atomically, nothing is lost); during training the first Ctrl-C asks the loop to save a
 * checkpoint at the current step and stop (InterruptedError, exit 130); a second one quits immediately.
 */
export async function interruptible<T>(work: (signal: AbortSignal, started: () => void) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  let training = false;
  const onSigint = () => {
    if (!training || ac.signal.aborted) return exitInterrupted();
    process.stderr.write('\nCtrl-C: saving a checkpoint at this step, then stopping (Ctrl-C again to quit now)\n');
    ac.abort();
  };
  const release = takeSigint(onSigint);
  let keep = false;
  try {
    return await work(ac.signal, () => {
      training = true;
    });
  } catch (err) {
    // Stopped by Ctrl-C: the error is printed next and the process exits (which takes a moment). Keep the handler
    // until then, so that a second Ctrl-C still quits with 130 instead of killing the process by signal before the
    // "saved ... --resume" message is out.
    keep = ac.signal.aborted;
    throw err;
  } finally {
    if (!keep) release();
  }
}

/** `--finetune <n|all>`. */
export function parseBlocks(v: string): number | 'all' {
  const blocks = v === 'all' ? 'all' : Number(v);
  if (blocks !== 'all' && !(Number.isInteger(blocks) && blocks >= 1)) throw new UsageError(`--finetune must be a number of blocks >= 1 or 'all' (got ${v})`);
  return blocks;
}

/** The data-and-cut part of fine-tuning options, from the flags `graft train --finetune` and `graft lr-find` share. */
export function finetuneDataOptions(
  data: string,
  o: ModelFlags & FinetuneFlags & { model?: string; val?: string; finetune?: string; layout?: string; label?: string; valFraction?: number; seed?: number },
  reporter: Reporter,
): FinetuneDataOptions {
  return {
    data,
    val: o.val,
    model: o.model!,
    blocks: parseBlocks(o.finetune ?? '1'),
    layout: o.layout as FinetuneDataOptions['layout'],
    label: o.label as FinetuneDataOptions['label'],
    valFraction: o.valFraction,
    seed: o.seed,
    augment: o.augment ? { views: o.augment } : undefined,
    backbone: backboneOptions(o, reporter),
    batchSize: o.batchSize,
    cache: cacheOption(o),
    reporter,
  };
}
