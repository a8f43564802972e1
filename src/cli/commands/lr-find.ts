import { Command, Option } from 'commander';
import { UsageError } from '../../errors.js';
import { lrFindRun } from '../../tasks/finetune.js';
import { addFinetuneOptions, finetuneDataOptions, finetuneOptions, interruptible, type FinetuneFlags } from '../finetune-flags.js';
import { addModelOptions, floatArg, intArg, type ModelFlags } from '../options.js';
import { displayPath, out, printJson, withCommon, type Common } from '../output.js';
import { cliReporter } from '../progress.js';

type Flags = ModelFlags & Common & FinetuneFlags & {
  model?: string;
  out: string;
  finetune: string;
  val?: string;
  valFraction: number;
  layout: string;
  label?: string;
  seed: number;
  minLr: number;
  maxLr: number;
  steps: number;
};

export function register(program: Command): void {
  addModelOptions(
    addFinetuneOptions(
      withCommon(
        program
          .command('lr-find')
          .description('learning-rate finder: train briefly with a growing learning rate and plot the loss (PNG) to pick --lr for fine-tuning')
          .summary('plot loss against learning rate to pick --lr for fine-tuning')
          .argument('<data>', 'training images (same layouts as graft train)')
          .option('--model <onnx>', 'backbone: ONNX file path or URL (required)')
          .option('--out <file.png>', 'where to write the plot', 'lr-find.png')
          .option('--finetune <n|all>', 'blocks to fine-tune, as in graft train --finetune', '1')
          .option('--min-lr <x>', 'first learning rate of the sweep', floatArg('--min-lr', 1e-12), 1e-7)
          .option('--max-lr <x>', 'last learning rate of the sweep', floatArg('--max-lr', 1e-12), 1)
          .option('--steps <n>', 'steps of the sweep', intArg('--steps', 5), 100)
          .option('--val <dir>', 'validation folder (used only to fit the starting head, as graft train does)')
          .option('--val-fraction <f>', 'validation share when splitting', floatArg('--val-fraction', 0.01, 0.9), 0.2)
          .addOption(new Option('--layout <layout>', 'dataset layout').choices(['auto', 'folder', 'oxford-pets', 'petimages']).default('auto'))
          .addOption(new Option('--label <what>', 'Oxford Pets labels').choices(['breed', 'species']))
          .option('--lr <x>', 'ignored by the sweep (it sets the rates); accepted so a train command line can be reused', floatArg('--lr', 0))
          .option('--weight-decay <x>', 'decoupled weight decay', floatArg('--weight-decay', 0))
          .option('--dropout <p>', 'dropout before the head', floatArg('--dropout', 0, 0.95))
          .option('--seed <n>', 'random seed', intArg('--seed', 0), 0),
      ),
    ),
  ).action(async (data: string, o: Flags) => {
    if (!o.model) throw new UsageError('graft lr-find needs --model');
    if (!(o.maxLr > o.minLr)) throw new UsageError(`--max-lr (${o.maxLr}) must be above --min-lr (${o.minLr})`);
    const r = cliReporter({ quiet: o.quiet });
    const { lr: _lr, epochs: _e, patience: _p, schedule: _s, warmup: _w, ...ft } = finetuneOptions(o);
    // started() is never called: the sweep keeps nothing, so Ctrl-C quits at once at any point (also while the
    // prefix runs over the images, which can take minutes; the abort signal would only be looked at by the sweep).
    const res = await interruptible((signal) => {
      return lrFindRun({
        ...finetuneDataOptions(data, o, r),
        out: o.out,
        signal,
        sweep: { ...ft, minLr: o.minLr, maxLr: o.maxLr, steps: o.steps },
      });
    });
    if (o.json) {
      const { lrs, losses, smoothed, ...rest } = res;
      return printJson({ ...rest, sweep: lrs.map((lr, i) => ({ lr, loss: losses[i], smoothed: smoothed[i] })) });
    }
    out(`swept ${res.lrs.length} steps from ${res.lrs[0]!.toExponential(1)} to ${res.lrs[res.lrs.length - 1]!.toExponential(1)}${res.stoppedEarly ? ' (stopped when the loss diverged)' : ''}`);
    out(`suggested --lr ${res.suggested.toExponential(1)}  (minimum/10 ${res.minimumOver10.toExponential(1)}, steepest ${res.steepest.toExponential(1)})`);
    out(`plot written to ${displayPath(res.png)}`);
  });
}
