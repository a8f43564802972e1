/** `graft quantize`: static int8 (QDQ) quantisation of an ONNX model, calibrated on a folder of images. */
import { Command, Option } from 'commander';
import { CALIBRATION_METHODS, DEFAULT_METHOD, type CalibrationMethod } from '../../engine/quantize/index.js';
import { quantizeTask } from '../../tasks/quantize.js';
import { addModelOptions, floatArg, intArg, preprocessOverrides, type ModelFlags } from '../options.js';
import { displayPath, out, printJson, withCommon, type Common } from '../output.js';
import { cliReporter } from '../progress.js';

/** The model flags that matter here: preprocessing (calibration images go in as extraction feeds them) and threads. */
const MODEL_FLAGS = new Set(['--size', '--crop', '--interpolation', '--range', '--mean', '--std', '--input-layout', '--channel-order', '--feature-node', '--threads']);

type Flags = Omit<ModelFlags, 'batchSize' | 'cache'> &
  Common & {
    calibrate: string;
    out: string;
    images: number;
    method: CalibrationMethod;
    percentile: number;
    keepFloat?: string[];
    skipFirst?: boolean;
    skipLast?: boolean;
    activations: 'uint8' | 'int8';
    biasCorrection: boolean;
    equalize?: boolean;
  };

const HELP_AFTER = `
What it does: folds batch norm (and Mul/Add by per-channel constants) and zero Pads into the convs, calibrates the
activations on the images (preprocessed exactly as extraction does), then writes QuantizeLinear/DequantizeLinear
pairs around Conv, Gemm and MatMul with int8 per-channel weights and int32 biases; ONNX Runtime fuses them into
integer kernels (QLinearConv, QGemm, ...). Ops with no int8 path stay float and are listed. A model with nothing to
quantise is written unchanged, with a warning. The result is checked against the float model on the calibration
images: mean cosine similarity of the features (and top-1 agreement of the class scores, for a classifier).

Methods: minmax (the observed range; default, best on the shared MobileNet), percentile (--percentile of |x|,
default 99.99; for models with rare outliers), entropy (KL divergence, as TensorRT; clips ReLU6 networks far too
hard: cosine 0.62 on the shared MobileNet, see docs/benchmarks.md).

Example:
  graft quantize ../shared/models/mobilenet_v1_0.75_224.onnx --calibrate ../shared/data/cats_vs_dogs/train --out m.int8.onnx`;

export function register(program: Command): void {
  const cmd = withCommon(
    program
      .command('quantize')
      .description('static int8 quantisation (QDQ, per-channel weights) of an ONNX model, calibrated on images')
      .summary('int8-quantise an ONNX model, calibrated on a folder of images')
      .argument('<model>', 'float ONNX model (path, URL or catalog name)')
      .requiredOption('--calibrate <dir>', 'folder of calibration images (searched recursively, e.g. the training set)')
      .requiredOption('--out <file.onnx>', 'where to write the int8 model')
      .option('--images <n>', 'calibration images, spread evenly over the sorted folder', intArg('--images'), 100)
      .addOption(new Option('--method <m>', 'how activation ranges are chosen').choices([...CALIBRATION_METHODS]).default(DEFAULT_METHOD))
      .option('--percentile <p>', 'for --method percentile: share of |x| kept', floatArg('--percentile', 50, 100), 99.99)
      .option('--keep-float <node>', 'leave this node in float (repeatable; names as in graft layers)', (v: string, prev: string[] = []) => [...prev, v])
      .option('--skip-first', 'leave the first weighted layer(s) in float')
      .option('--skip-last', 'leave the last weighted layer(s) (those feeding a model output) in float')
      .addOption(new Option('--activations <type>', 'activation integer type').choices(['uint8', 'int8']).default('uint8'))
      .option('--no-bias-correction', 'do not correct conv biases for the mean error of the int8 weights')
      .option('--equalize', 'equalise channel ranges between consecutive convs before quantising'),
  );
  const modelFlags = addModelOptions(new Command());
  for (const o of modelFlags.options) if (MODEL_FLAGS.has(o.long ?? '')) cmd.addOption(o);
  cmd.addHelpText('after', HELP_AFTER);

  cmd.action(async (model: string, o: Flags) => {
    const r = cliReporter({ quiet: o.quiet || o.json });
    const res = await quantizeTask(model, {
      calibrate: o.calibrate,
      out: o.out,
      images: o.images,
      method: o.method,
      percentile: o.percentile,
      keepFloat: o.keepFloat,
      skipFirst: o.skipFirst,
      skipLast: o.skipLast,
      activationType: o.activations,
      biasCorrection: o.biasCorrection,
      equalize: o.equalize ?? false,
      threads: o.threads,
      featureNode: o.featureNode,
      preprocess: preprocessOverrides({ ...o, batchSize: 1, cache: false }),
      reporter: r,
    });
    if (o.json) return printJson(res);
    if (!res.quantized) {
      out(`${displayPath(res.model)}: not quantised (${res.fallback}); float model written to ${displayPath(res.out)}`);
      return;
    }
    const ops = Object.entries(res.nodes.byOp).map(([op, k]) => `${k} ${op}`).join(', ');
    out(`${displayPath(res.model)} -> ${displayPath(res.out)}: ${res.nodes.quantized} nodes int8 (${ops}; ${res.nodes.depthwise} depthwise), ${(res.bytes.before / 1e6).toFixed(1)} MB -> ${(res.bytes.after / 1e6).toFixed(1)} MB`);
    out(`folded ${res.folded.affine} batch-norm ops and ${res.folded.pads} pads into convs; ${res.removedActivations} Relu/Clip absorbed by the int8 ranges`);
    out(`calibration: ${res.calibration.images} images from ${displayPath(res.calibration.dir)}, ${res.method}, ${res.calibration.seconds.toFixed(1)} s${res.calibration.skipped.length ? ` (${res.calibration.skipped.length} unreadable skipped)` : ''}`);
    if (res.float.length) out(`stayed float: ${res.float.map((f) => `${f.op} ${f.node} (${f.reason})`).join('; ')}`);
    else out('stayed float: nothing');
    for (const a of res.agreement) {
      out(`${a.tensor}: cosine similarity to float ${a.meanCosine.toFixed(4)} mean, ${a.minCosine.toFixed(4)} min${a.top1Agreement !== undefined ? `; top-1 agreement ${(100 * a.top1Agreement).toFixed(1)}%` : ''} (calibration images)`);
    }
    if (!o.quiet) process.stderr.write(`done in ${res.seconds.toFixed(1)} s\n`);
  });
}
