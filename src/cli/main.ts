import { parseTta } from '../image/tta.js';
import { Command, CommanderError, Option } from 'commander';
import { GraftError, UsageError } from '../errors.js';
import { describeFsError } from '../util/fs.js';
import { finetuneRun, resumeFinetuneRun } from '../tasks/finetune.js';
import { extractDir } from '../tasks/extract.js';
import { evalRun } from '../tasks/evaluate.js';
import { predict } from '../tasks/predict.js';
import { trainRun } from '../tasks/train.js';
import { layers } from '../tasks/layers.js';
import type { Evaluation } from '../learn/metrics.js';
import { addModelOptions, addQueueOptions, backboneOptions, cacheOption, floatArg, intArg, ModelFlags, queueOption, type QueueFlags } from './options.js';
import { cliReporter } from './progress.js';
import { displayPath, out, pct, printJson, withCommon, type Common } from './output.js';
import { COMMANDS } from './commands/index.js';
import { addFinetuneOptions, finetuneDataOptions, finetuneOptions, interruptible, type FinetuneFlags } from './finetune-flags.js';

const TTA_HELP = 'test-time augmentation: average each image\'s features over views: flip (2 views) or crop (6 views: + four corner crops)';
const INT8_HELP = 'run an int8 version of the model (~2.4x faster end to end on AVX-512 VNNI CPUs), quantised once, calibrated on 100 of these images, kept in $GRAFT_HOME/int8';
const TTA_RUN_HELP = 'test-time augmentation: none, flip or crop (default: what the run was trained with; for a bare model, none)';

function summariseEvaluation(e: Evaluation): void {
  out(`accuracy ${pct(e.accuracy)}  balanced accuracy ${pct(e.balancedAccuracy)}  log loss ${e.logLoss.toFixed(4)}  (${e.n} images)`);
  // Class names are folder names: escaped like paths.
  const w = Math.max(5, ...e.perClass.map((c) => displayPath(c.class).length));
  out(`${'class'.padEnd(w)}  precision  recall  support`);
  for (const c of e.perClass) out(`${displayPath(c.class).padEnd(w)}  ${c.precision.toFixed(3).padStart(9)}  ${c.recall.toFixed(3).padStart(6)}  ${String(c.support).padStart(7)}`);
  if (e.mostConfidentlyWrong.length) {
    out('most confidently wrong:');
    for (const m of e.mostConfidentlyWrong.slice(0, 5)) {
      out(`  ${m.path !== undefined ? displayPath(m.path) : m.index}: ${displayPath(m.trueClass)} called ${displayPath(m.predictedClass)} (p=${m.probability.toFixed(3)})`);
    }
  }
}

function printSkipped(skipped: { path: string; reason: string }[]): void {
  if (!skipped.length) return;
  process.stderr.write(`skipped ${skipped.length} file(s):\n`);
  for (const s of skipped.slice(0, 20)) process.stderr.write(`  ${displayPath(s.path)}: ${displayPath(s.reason)}\n`);
  if (skipped.length > 20) process.stderr.write(`  ... and ${skipped.length - 20} more\n`);
}

export function buildProgram(): Command {
  const program = new Command('graft')
    .description('Transfer learning on images: reuse an ImageNet CNN (ONNX) for your own classes.')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ outputError: (s, write) => write(s) });
  const common = withCommon;

  addQueueOptions(addModelOptions(
    addFinetuneOptions(common(
      program
        .command('train')
        .description('extract features with a frozen backbone and train a classifier head on them; writes a run folder')
        .summary("train a classifier on a model's features, or fine-tune it")
        .argument('[data]', 'training images: class-per-folder, Oxford-IIIT Pet or PetImages layout')
        .option('--model <onnx>', 'backbone: ONNX file path or URL (required)')
        .option('--out <dir>', 'run folder to write (required)')
        .option('--finetune <n|all>', 'fine-tune the last N conv blocks (or all) with the head (linear or mlp) instead of training on frozen features')
        .option('--resume <run>', 'continue a fine-tuning run from its last checkpoint (graft train --resume <run>)')
        .option('--val <dir>', 'validation folder (default: a seeded stratified split of <data>)')
        .option('--val-fraction <f>', 'validation share when splitting', floatArg('--val-fraction', 0.01, 0.9), 0.2)
        .addOption(new Option('--layout <layout>', 'dataset layout').choices(['auto', 'folder', 'oxford-pets', 'petimages']).default('auto'))
        .addOption(new Option('--label <what>', 'Oxford Pets labels').choices(['breed', 'species']))
        .addOption(new Option('--head <kind>', 'classifier head').choices(['linear', 'mlp', 'knn']).default('linear'))
        .option('--epochs <n>', 'maximum epochs', intArg('--epochs'))
        .option('--lr <x>', 'learning rate (Adam)', floatArg('--lr', 0))
        .option('--weight-decay <x>', 'decoupled weight decay', floatArg('--weight-decay', 0))
        .option('--hidden <n>', 'MLP hidden units', intArg('--hidden'))
        .option('--dropout <p>', 'dropout before the head\'s last layer (after the MLP hidden layer; the linear head\'s features with --finetune)', floatArg('--dropout', 0, 0.95))
        .option('--patience <n>', 'early stopping patience (epochs without better validation loss)', intArg('--patience', 0))
        .option('--k <n>', 'neighbours for the knn head', intArg('--k'))
        .option('--seed <n>', 'random seed', intArg('--seed', 0), 0)
        .option('--tta <kind>', TTA_HELP)
        .option('--int8', INT8_HELP)
        .option('--no-refit', 'keep the early-stopped head instead of retraining it on training + validation images (default: refit when --val is not given)'),
    )),
  ))
    .addHelpText('after', '\nFine-tuning runs save a checkpoint each epoch; Ctrl-C saves one at the current step and exits with code 130;\n`graft train --resume <run>` continues from it (also after kill -9, from the last finished epoch).')
    .action(async (data: string | undefined, o: ModelFlags & Common & FinetuneFlags & Record<string, unknown>) => {
      const r = cliReporter({ quiet: o.quiet });
      if (o.resume !== undefined || o.finetune !== undefined) {
        // A kNN head votes among stored examples: nothing to differentiate, so nothing to fine-tune the blocks with.
        if (o.finetune !== undefined && o.head === 'knn') {
          throw new UsageError('--head knn cannot be fine-tuned: a kNN head has no gradient (use --head linear or mlp with --finetune, or train the kNN head on frozen features without --finetune)');
        }
        if (o.queue !== undefined) throw new UsageError('--queue applies to frozen-feature training; --finetune computes its features on this machine');
        if (o.int8) throw new UsageError('--int8 applies to frozen-feature training: fine-tuning needs the float weights to take gradients');
        if (o.tta !== undefined) throw new UsageError('--tta applies to frozen-feature training (features averaged over views); --finetune trains on augmented views instead (--augment)');
        const ft = await interruptible(async (signal, started) => {
          if (o.resume !== undefined) return resumeFinetuneRun(o.resume as string, { reporter: r, signal, finetune: { onStart: started } });
          if (!data || !o.model || !o.out) throw new UsageError('graft train needs <data>, --model and --out');
          return finetuneRun({
            ...finetuneDataOptions(data, o as Parameters<typeof finetuneDataOptions>[1], r),
            out: o.out as string,
            finetune: { ...finetuneOptions(o), onStart: started },
            signal,
          });
        });
        if (o.json) {
          printJson({ run: ft.dir, counts: ft.counts, cut: { tensor: ft.cut.tensor, shape: ft.cut.shape, blocks: ft.cut.blocks.length }, bestEpoch: ft.bestEpoch, stoppedEarly: ft.stoppedEarly, seconds: ft.seconds, validation: ft.validation, skipped: ft.skipped });
          return;
        }
        printSkipped(ft.skipped);
        out(`fine-tuned the last ${ft.cut.blocks.length} block(s) (from ${ft.cut.tensor}, [${ft.cut.shape.join(', ')}]) with ${ft.head.kind === 'mlp' ? 'an MLP' : 'a linear'} head on ${ft.counts.train} images; validation on ${ft.counts.val} (best epoch ${ft.bestEpoch}${ft.stoppedEarly ? ', stopped early' : ''})`);
        summariseEvaluation(ft.validation);
        out(`run written to ${displayPath(ft.dir)} (model.onnx with the fine-tuned weights, config.json, head.json, checkpoints/, metrics.json, confusion.png, training-curve.png)`);
        return;
      }
      if (!data || !o.model || !o.out) throw new UsageError('graft train needs <data>, --model and --out');
      const res = await trainRun({
        data,
        val: o.val as string | undefined,
        model: o.model as string,
        out: o.out as string,
        layout: o.layout as never,
        label: o.label as never,
        valFraction: o.valFraction as number,
        seed: o.seed as number,
        head: {
          kind: o.head as never,
          ...(o.epochs !== undefined && { epochs: o.epochs as number }),
          ...(o.lr !== undefined && { lr: o.lr as number }),
          ...(o.weightDecay !== undefined && { weightDecay: o.weightDecay as number }),
          ...(o.hidden !== undefined && { hidden: o.hidden as number }),
          ...(o.dropout !== undefined && { dropout: o.dropout as number }),
          ...(o.patience !== undefined && { patience: o.patience as number }),
          ...(o.k !== undefined && { k: o.k as number }),
          ...(o.balance && { balance: true }),
        },
        backbone: backboneOptions(o, r),
        batchSize: o.batchSize,
        cache: cacheOption(o),
        queue: queueOption(o as unknown as QueueFlags),
        tta: parseTta(o.tta as string | undefined),
        ...(o.refit === false && { refit: false }),
        ...(o.int8 === true && { int8: true }),
        reporter: r,
      });
      if (o.json) {
        printJson({ run: res.dir, counts: res.counts, bestEpoch: res.bestEpoch, stoppedEarly: res.stoppedEarly, seconds: res.seconds, validation: res.validation, skipped: res.skipped });
        return;
      }
      printSkipped(res.skipped);
      out(`trained ${res.head.kind} head on ${res.counts.train} images; validation on ${res.counts.val}` + (res.history.length ? ` (best epoch ${res.bestEpoch}${res.stoppedEarly ? ', stopped early' : ''})` : ''));
      summariseEvaluation(res.validation);
      if (res.refit) out(`head refitted on all ${res.refit.images} images for ${res.refit.epochs} epochs (the validation numbers above are the early-stopped head's, on images it did not train on; --no-refit keeps that head)`);
      out(`run written to ${displayPath(res.dir)} (config.json, head.json, metrics.json, confusion.png, training-curve.png)`);
    });

  addModelOptions(
    common(
      program
        .command('eval')
        .description('evaluate a trained run (or an exported classifier .onnx) on a labelled folder')
        .summary('evaluate a run or an exported .onnx on a labelled folder')
        .argument('<run>', 'run folder written by graft train, or a model written by graft export')
        .argument('<data>', 'labelled images with the same classes')
        .option('--out <dir>', 'where to write metrics.json and confusion.png (default: <run>/eval/<data name>)')
        .addOption(new Option('--layout <layout>', 'dataset layout').choices(['auto', 'folder', 'oxford-pets', 'petimages']).default('auto'))
        .option('--tta <kind>', TTA_RUN_HELP)
        .option('--int8', 'a bare model: predict with an int8 version of it calibrated on these images (made once, kept); a run uses what it was trained with'),
    ),
  ).action(async (run: string, data: string, o: ModelFlags & Common & { out?: string; layout: string; tta?: string }) => {
    const res = await evalRun(run, data, {
      tta: o.tta === 'none' ? 'none' : parseTta(o.tta),
      layout: o.layout as never,
      out: o.out,
      batchSize: o.batchSize,
      cache: cacheOption(o),
      backbone: { threads: o.threads },
      reporter: cliReporter({ quiet: o.quiet }),
    });
    if (o.json) return printJson(res);
    printSkipped(res.skipped);
    summariseEvaluation(res.evaluation);
    out(`metrics and confusion matrix written to ${displayPath(res.out)}`);
  });

  addQueueOptions(addModelOptions(
    common(
      program
        .command('predict')
        .description('classify images with a trained run or a bare classifier model')
        .summary('classify images with a run or an ImageNet model')
        .argument('<run|model>', 'run folder, or ONNX classifier (path or URL)')
        .argument('<images...>', 'image files or folders')
        .option('--top <k>', 'classes to show per image', intArg('--top'), 5)
        .option('--labels <file>', 'class names for a bare model (JSON array or one per line; default ImageNet-1k)')
        .option('--out <file.jsonl>', 'also write the predictions there, one JSON line per image (for batch runs)')
        .option('--tta <kind>', TTA_RUN_HELP)
        .addHelpText(
          'after',
          '\nExit codes: 0 when every image was classified; 1 when an input named on the command line is missing, or an\n' +
            'image (named, or found in a folder) could not be read or decoded, after printing the predictions it could\n' +
            'make (also with --json); files of other types inside a folder are only listed as skipped. 2: usage error.',
        ),
    ),
  )).action(async (target: string, images: string[], o: ModelFlags & Common & QueueFlags & { top: number; labels?: string; out?: string; tta?: string; int8?: boolean }) => {
    const r = cliReporter({ quiet: o.quiet });
    const res = await predict(target, images, {
      tta: o.tta === 'none' ? 'none' : parseTta(o.tta),
      int8: o.int8,
      top: o.top,
      labels: o.labels,
      batchSize: o.batchSize,
      cache: cacheOption(o),
      backbone: backboneOptions(o, r),
      queue: queueOption(o),
      out: o.out,
      reporter: r,
    });
    if (o.json) printJson(res);
    else {
      printSkipped(res.skipped);
      for (const p of res.predictions) {
        out(displayPath(p.path));
        for (const t of p.top) out(`  ${(100 * t.probability).toFixed(2).padStart(6)}%  ${displayPath(t.label)}`);
      }
    }
    // After the output: a script sees the predictions that could be made, and the exit code says some are missing.
    if (!res.predictions.length) throw new GraftError('no image could be read');
    if (res.failed) throw new GraftError(`${res.failed} input(s) missing or unreadable (listed as skipped); the other images were classified`);
  });

  addQueueOptions(addModelOptions(
    common(
      program
        .command('extract')
        .description('compute (and cache) backbone features of every image below a folder')
        .summary('compute (and cache) the features of every image below a folder')
        .argument('<model>', 'ONNX model (path or URL)')
        .argument('<dir>', 'folder of images (class folders give labels)')
        .option('--out <dir>', 'write features.npy and index.json here')
        .option('--tta <kind>', TTA_HELP)
        .option('--int8', INT8_HELP),
    ),
  )).action(async (model: string, dir: string, o: ModelFlags & Common & QueueFlags & { out?: string; tta?: string; int8?: boolean }) => {
    const r = cliReporter({ quiet: o.quiet });
    const res = await extractDir(model, dir, {
      int8: o.int8,
      tta: parseTta(o.tta),
      out: o.out,
      batchSize: o.batchSize,
      cache: cacheOption(o),
      backbone: backboneOptions(o, r),
      queue: queueOption(o),
      reporter: r,
    });
    // A folder with no readable image is a mistake to say, not a success with 0 rows (the JSON still reports it).
    const none = () => new GraftError(`no image could be read in ${displayPath(dir)}${res.skipped.length ? ` (${res.skipped.length} file(s) skipped)` : ' (no image files found)'}`);
    if (o.json) {
      printJson(res);
      if (res.n === 0) throw none();
      return;
    }
    printSkipped(res.skipped);
    if (res.n === 0) throw none();
    out(`${res.n} images -> ${res.dim}-d features in ${res.seconds.toFixed(2)} s (${res.imagesPerSecond.toFixed(1)} img/s; ${res.fromCache} from cache, ${res.computed} computed)`);
    if (res.out) out(`written ${displayPath(res.out.features)} and ${displayPath(res.out.index)}`);
  });

  common(
    program
      .command('layers')
      .description("list a model's inputs, outputs and nodes with their output shapes (names to use with --feature-node and featuremaps --layer)")
      .summary('list a model\'s inputs, outputs and nodes with shapes')
      .argument('<model>', 'ONNX model (path or URL)')
      .option('--all', 'list every node, not only those worth cutting at')
      .option('--no-shapes', 'skip the forward pass (on a zero image) that finds each node\'s output shape'),
  ).action(async (model: string, o: Common & { all?: boolean; shapes: boolean }) => {
    const res = await layers(model, { all: o.all, shapes: o.shapes });
    if (o.json) return printJson(res);
    out(`${displayPath(res.path)}  (opset ${res.opset}, ${res.nodeCount} nodes, sha256 ${res.sha256.slice(0, 12)})`);
    out(`preprocessing: ${JSON.stringify(res.preprocess)} [${displayPath(res.preprocessSource)}]`);
    for (const i of res.inputs) out(`input   ${i.name} [${i.shape.join(', ')}]`);
    for (const t of res.outputs) out(`output  ${t.name} [${t.shape.join(', ')}]`);
    out(`features: ${res.featureTensor}${res.logitsTensor ? `   logits: ${res.logitsTensor}` : ''}`);
    if (res.shapesError) process.stderr.write(`graft: no output shapes (${res.shapesError})\n`);
    const dims = (s?: number[]) => (!s ? '' : s.length ? `[${s.join('x')}]` : 'scalar');
    const shapeCol = Math.max(0, ...res.nodes.map((n) => dims(n.shape).length));
    for (const n of res.nodes) {
      const shape = shapeCol ? dims(n.shape).padEnd(shapeCol) + ' ' : '';
      out(`  ${n.opType.padEnd(20)} ${shape}${n.name}  -> ${n.outputs.join(', ')}`);
    }
    if (res.blocks.length) {
      out(`blocks (graft train --finetune N trains the last N): ${res.blocks.length}`);
      res.blocks.forEach((b, i) => out(`  ${String(res.blocks.length - i).padStart(3)}  ${b.convs.join(' + ')}  (input ${b.input})`));
    }
  });

  for (const register of COMMANDS) register(program);
  return program;
}

/** Run the CLI; returns the exit code (0 ok, 1 failure, 2 usage). */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  program.exitOverride();
  for (const c of program.commands) c.exitOverride();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      return 2;
    }
    if (err instanceof GraftError) {
      // One line: a file name with a newline in it must not break it (nor a terminal escape in one colour it).
      process.stderr.write(`graft: ${displayPath(err.message)}\n`);
      return err.exitCode;
    }
    // A failed file operation that no task turned into a GraftError (mkdir of --out on a full disk, a read-only
    // folder): one line naming the file and what the system said, not a stack trace.
    const e = err as NodeJS.ErrnoException;
    const writing = ['ENOSPC', 'EDQUOT', 'EFBIG', 'EROFS'].includes(e?.code ?? '') || ['mkdir', 'rename', 'write'].includes(e?.syscall ?? '');
    const fsMessage = typeof e?.path === 'string' ? describeFsError(e.path, e, writing ? 'write' : 'open') : undefined;
    if (fsMessage) {
      process.stderr.write(`graft: ${displayPath(fsMessage)}\n`);
      return 1;
    }
    process.stderr.write(`graft: unexpected error (a bug; please report it):\n${(err as Error)?.stack ?? String(err)}\n`);
    return 1;
  }
}
