/** `graft featuremaps`: a grid PNG of a layer's channel maps for one image. */
import { Command, Option } from 'commander';
import { featureMaps } from '../../vision/featuremaps.js';
import { writeFeatureMapPngs } from '../../vision/featuremap-png.js';
import { addModelOptions, intArg, preprocessOverrides, type ModelFlags } from '../options.js';
import { displayPath, out, printJson, withCommon, type Common } from '../output.js';

/** The model flags that matter for one forward pass (preprocessing and threads; no cache, batch or feature node). */
const MODEL_FLAGS = new Set(['--size', '--crop', '--interpolation', '--range', '--mean', '--std', '--input-layout', '--channel-order', '--threads']);

type Flags = Omit<ModelFlags, 'batchSize' | 'cache'> & Common & { layer?: string[]; channels: number; select: 'strongest' | 'first'; out: string };

const HELP_AFTER = `
Output (--out):
  a path ending in .png   one layer: written there; several: used as a stem, e.g. maps.png -> maps-1.png, maps-2.png, ...
  anything else           a folder (created) holding <n>-<layer>.png per layer, e.g. maps/1-conv1_relu.png

Without --layer, three layers are picked from the graph: the end of the first downsampled stage (early), a middle
stage and the last stage before global pooling (late), one PNG each. Each PNG shows the input as the model sees it,
then the chosen channels, each scaled to its own min/max (viridis: dark = low, yellow = high), labelled with the
channel index. 'graft layers <model>' lists the layers with their output shapes.

Examples:
  graft featuremaps model.onnx cat.jpg --out maps/
  graft featuremaps model.onnx cat.jpg --layer /n/Clip_10 --channels 16 --select first --out clip10.png`;

export function register(program: Command): void {
  const cmd = withCommon(
    program
      .command('featuremaps')
      .description("render a layer's feature maps for one image as a grid PNG (default: an early, a middle and a late layer)")
      .summary('render a layer\'s feature maps for one image as a PNG grid')
      .argument('<model>', 'ONNX model (path or URL)')
      .argument('<image>', 'image file')
      .option('--layer <name>', 'node or tensor name to show (repeatable; default: an early, a middle and a late block)', (v: string, prev: string[] = []) => [...prev, v])
      .option('--channels <n>', 'channels to show per layer', intArg('--channels'), 32)
      .addOption(new Option('--select <how>', 'which channels: strongest mean activation first, or the first ones').choices(['strongest', 'first']).default('strongest'))
      .requiredOption('--out <file.png|dir>', 'PNG file (one layer), file stem (several layers) or folder; see below'),
  );
  const modelFlags = addModelOptions(new Command());
  for (const o of modelFlags.options) if (MODEL_FLAGS.has(o.long ?? '')) cmd.addOption(o);
  cmd.addHelpText('after', HELP_AFTER);

  cmd.action(async (model: string, image: string, o: Flags) => {
    const t0 = performance.now();
    const res = await featureMaps(model, image, {
      layers: o.layer,
      channels: o.channels,
      select: o.select,
      threads: o.threads,
      preprocess: preprocessOverrides({ ...o, batchSize: 1, cache: false }),
    });
    const t1 = performance.now();
    const files = await writeFeatureMapPngs(res, o.out);
    const seconds = { ...res.timings, render: (performance.now() - t1) / 1000, total: (performance.now() - t0) / 1000 };
    if (o.json) {
      return printJson({
        model: res.model,
        image: res.imagePath,
        preprocess: res.spec,
        layers: res.layers.map((l, i) => ({
          layer: l.layer,
          node: l.node,
          op: l.op,
          tensor: l.tensor,
          role: l.role,
          shape: l.shape,
          layout: l.layout,
          channelCount: l.channelCount,
          selection: l.selection,
          channels: l.channels,
          channelStats: l.channelStats,
          stats: l.stats,
          file: files[i],
        })),
        files,
        warnings: res.warnings,
        seconds,
      });
    }
    if (!o.quiet) for (const w of res.warnings) process.stderr.write(`warning: ${w}\n`);
    for (const [i, l] of res.layers.entries()) {
      const role = l.role ? `${l.role.padEnd(6)} ` : '';
      out(`${role}${l.layer} (${l.op}) [${l.shape.join(', ')}] ${l.layout}: ${l.channels.length} of ${l.channelCount} channels -> ${displayPath(files[i]!)}`);
    }
    if (!o.quiet) process.stderr.write(`done in ${seconds.total.toFixed(2)} s (forward pass ${(seconds.session + seconds.run).toFixed(2)} s, PNGs ${seconds.render.toFixed(2)} s)\n`);
  });
}
