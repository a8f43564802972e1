import { Option, type Command } from 'commander';
import { GraftError } from '../../errors.js';
import { explainTask } from '../../tasks/explain.js';
import { CAM_METHODS, type CamMethod } from '../../vision/cam.js';
import { intArg } from '../options.js';
import { displayPath, out, printJson, withCommon, type Common } from '../output.js';
import { cliReporter } from '../progress.js';

export function registerExplain(program: Command): void {
  withCommon(
    program
      .command('explain')
      .description('why an image got its class: a class activation map (Grad-CAM and kin) per image, over the photo, with deletion/insertion checks')
      .summary('heat maps of where the evidence for a class lies (Grad-CAM and kin)')
      .argument('<model|run>', 'classifier model (ImageNet classes) or a run folder')
      .argument('<images...>', 'image files or folders')
      .requiredOption('--out <dir>', 'folder for <name>-heatmap.png, <name>-cam.png, <name>.json, summary.json and faithfulness.png')
      .addOption(new Option('--method <m>', 'map').choices([...CAM_METHODS]).default('gradcam'))
      .option('--class <class>', 'class to explain (name or index); default: the predicted class of each image')
      .option('--layer <node>', 'node or tensor to explain at (default: the last spatial feature map before pooling; graft layers lists them)')
      .option('--no-metrics', 'skip the deletion/insertion curves (about 0.5 s an image)')
      .option('--threads <n>', 'ONNX Runtime threads (default: all cores)', intArg('--threads'))
      .option('--seed <n>', 'seed of the random-order baseline', intArg('--seed', 0), 0),
  )
    .addHelpText(
      'after',
      '\n<name>-heatmap.png is 8-bit grayscale in the photo\'s own pixel grid (after EXIF orientation), brighter = more\n' +
        'relevant; outside a centre crop the model did not see, it is 0. gradcam, gradcam++ use the gradient engine;\n' +
        'scorecam (one forward pass per channel, ~10 s an image on MobileNet) and eigencam only forward passes.',
    )
    .action(async (target: string, images: string[], o: Common & { out: string; method: CamMethod; class?: string; layer?: string; metrics: boolean; threads?: number; seed: number }) => {
      const res = await explainTask(target, images, {
        method: o.method,
        class: o.class,
        layer: o.layer,
        out: o.out,
        metrics: o.metrics,
        threads: o.threads,
        seed: o.seed,
        reporter: cliReporter({ quiet: o.quiet }),
      });
      for (const s of res.skipped) process.stderr.write(`skipped ${displayPath(s.path)}: ${displayPath(s.reason)}\n`);
      if (o.json) printJson(res);
      else {
        for (const r of res.results) {
          const pts = (drop: number) => `${drop > 0 ? '-' : '+'}${Math.abs(100 * drop).toFixed(1)}`;
          const f = r.faithfulness ? `  (20% most relevant removed: ${pts(r.faithfulness.drop20)} pts, a random 20%: ${pts(r.faithfulness.drop20Random)})` : '';
          out(`${displayPath(r.image)}: ${displayPath(r.class)} ${(100 * r.probability).toFixed(1)}%${f}`);
        }
        if (res.summary) out(`average over ${res.summary.n}: removing the 20% most relevant pixels costs ${(100 * res.summary.drop20).toFixed(1)} points of probability, a random 20% ${(100 * res.summary.drop20Random).toFixed(1)}; chart ${displayPath(res.summary.chart)}`);
        if (res.results.length) out(`maps written to ${displayPath(o.out)} (layer ${displayPath(res.layer)})`);
      }
      if (!res.results.length) throw new GraftError(images.length === 1 ? `no image could be read in ${displayPath(images[0]!)}` : 'no image could be read');
    });
}
