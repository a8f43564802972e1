/** `graft export`: a run as one ONNX file (backbone + head) with a sidecar that says how to feed it. */
import type { Command } from 'commander';
import { exportRun } from '../../tasks/export.js';
import { displayPath, out, printJson, withCommon, type Common } from '../output.js';

const HELP_AFTER = `
Writes one ONNX graph: the run's backbone (its fine-tuned weights for a --finetune run) cut at the feature tensor,
then the head (standardisation, Gemm, ReLU for mlp heads, Softmax). Outputs, all [batch, ...] float32:
  probabilities  softmax over the classes, in the order of the run's labels
  logits         the same before the softmax
  features       the backbone features the head reads

Beside it, <file.onnx>.json holds the preprocessing (size, crop, interpolation, mean/std, layout, channel order)
and the class names; 'graft predict <file.onnx> images...' reads it, so no flags are needed. The class names are
also in the ONNX metadata (key graft.labels). kNN heads cannot be exported.

Before writing, the graph is checked against the run on a seeded random batch (probabilities within 1e-4).

Examples:
  graft export runs/cats-dogs --out cats-dogs.onnx
  graft predict cats-dogs.onnx photo.jpg`;

export function registerExport(program: Command): void {
  withCommon(
    program
      .command('export')
      .description('export a run (backbone + head) as one ONNX file with probabilities/logits outputs and a sidecar config')
      .summary('export a run as one ONNX file (backbone + head)')
      .argument('<run>', 'run folder written by graft train')
      .requiredOption('--out <file.onnx>', 'ONNX file to write (its sidecar goes to <file.onnx>.json)')
      .option('--no-verify', 'skip the check against the run before writing')
      .addHelpText('after', HELP_AFTER),
  ).action(async (run: string, o: Common & { out: string; verify: boolean }) => {
    const res = await exportRun(run, o.out, { verify: o.verify });
    if (o.json) return printJson(res);
    const outputs = res.outputs.map((t) => `${t.name} [${t.shape.join(', ')}]`).join(', ');
    const classes = res.classes.length <= 10 ? res.classes.join(', ') : `${res.classes.slice(0, 10).join(', ')}, ...`;
    out(`${displayPath(res.run)} -> ${displayPath(res.out)}: ${(res.bytes / 1e6).toFixed(1)} MB, ${res.head} head${res.backbone.finetuned ? ' on the fine-tuned backbone' : ''}`);
    out(`  outputs: ${outputs}`);
    out(`  classes (${res.classes.length}): ${classes}`);
    out(`  sidecar: ${displayPath(res.sidecar)} (preprocessing ${res.preprocess.size.join('x')} ${res.preprocess.layout} ${res.preprocess.channelOrder}, labels)`);
    if (res.verified) out(`  checked against the run: max |Δp| ${res.verified.maxAbsDiff.toExponential(2)} on ${res.verified.images} random inputs`);
  });
}
