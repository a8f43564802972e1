import type { Command } from 'commander';
import { convertModel } from '../../tasks/convert.js';
import { displayPath, out, printJson, withCommon, type Common } from '../output.js';

export function registerConvert(program: Command): void {
  withCommon(
    program
      .command('convert')
      .description('convert a model to ONNX (TF.js layers and graph models: model.json or its folder; TFLite files, float or quantised)')
      .summary('convert a TF.js or TFLite model to ONNX')
      .argument('<in>', 'model to convert')
      .requiredOption('--out <file.onnx>', 'ONNX file to write'),
  ).action(async (input: string, o: Common & { out: string }) => {
    const res = await convertModel(input, o.out);
    if (o.json) return printJson(res);
    out(`${displayPath(res.input)} (${res.format}) -> ${displayPath(res.out)}: ${(res.bytes / 1e6).toFixed(1)} MB, outputs ${res.outputs.join(', ')} (${res.seconds.toFixed(2)} s)`);
  });
}
