import { InvalidArgumentError, Option, type Command } from 'commander';
import { GraftError } from '../../errors.js';
import { attackTask } from '../../tasks/attack.js';
import { dreamTask } from '../../tasks/dream.js';
import { parseEps } from '../../vision/attack.js';
import { floatArg, intArg } from '../options.js';
import { displayPath, out, printJson, withCommon, type Common } from '../output.js';
import { cliReporter } from '../progress.js';


function epsList(v: string): number[] {
  const list = v.split(',').map((s) => parseEps(s));
  if (list.some((e) => e === undefined)) throw new InvalidArgumentError('eps is a number in (0, 1] or a fraction like 4/255; several with commas');
  return list as number[];
}

export function registerDream(program: Command): void {
  withCommon(
    program
      .command('dream')
      .description("the 'ideal' image of a class: from noise, follow the gradient of the class score (TV-regularised, jittered)")
      .summary('the \'ideal\' image of a class, by gradient ascent from noise')
      .argument('<model|run>', 'classifier model (ImageNet classes) or a run folder (its classes)')
      .requiredOption('--class <name|index>', 'class to dream of, e.g. "tabby" or 281')
      .requiredOption('--out <file.png>', 'PNG to write (a JSON with settings and results goes beside it)')
      .option('--steps <n>', 'optimisation steps', intArg('--steps'), 200)
      .option('--lr <x>', 'Adam learning rate', floatArg('--lr', 0), 0.05)
      .option('--tv <w>', 'total-variation weight (smoothness)', floatArg('--tv', 0), 0.2)
      .option('--no-tv', 'no total-variation term (to see why it matters)')
      .option('--l2 <w>', 'L2 weight pulling pixels to grey', floatArg('--l2', 0), 0)
      .option('--jitter <px>', 'random shift per step', intArg('--jitter', 0), 8)
      .option('--seed <n>', 'random seed', intArg('--seed', 0), 0),
  ).action(async (target: string, o: Common & { class: string; out: string; steps: number; lr: number; tv: number | boolean; l2: number; jitter: number; seed: number }) => {
    const res = await dreamTask(target, {
      className: o.class,
      out: o.out,
      steps: o.steps,
      lr: o.lr,
      tv: o.tv === false ? 0 : (o.tv as number),
      l2: o.l2,
      jitter: o.jitter,
      seed: o.seed,
      reporter: cliReporter({ quiet: o.quiet }),
    });
    if (o.json) return printJson(res);
    out(`${displayPath(res.png)}: '${res.class.name}' (${res.class.index}) with probability ${res.probability.toFixed(3)} (ONNX Runtime on the saved PNG); total variation ${res.totalVariation.toFixed(4)}; ${res.steps} steps in ${res.seconds.toFixed(1)} s`);
    out(`settings and history: ${displayPath(res.json)}`);
  });
}

export function registerAttack(program: Command): void {
  withCommon(
    program
      .command('attack')
      .description('adversarial examples (FGSM, L-inf PGD), targeted or not; verified on the saved 8-bit PNGs')
      .summary('adversarial examples (FGSM, PGD), verified on the saved PNGs')
      .argument('<model|run>', 'classifier model (ImageNet classes) or a run folder')
      .argument('<images...>', 'image files or folders')
      .requiredOption('--out <dir>', 'folder for <name>-adv.png, <name>-compare.png, <name>.json and summary.json')
      .option('--target <class>', 'class to reach (name or index); without it: untargeted')
      .addOption(new Option('--method <m>', 'attack').choices(['fgsm', 'pgd']).default('pgd'))
      .option('--eps <list>', 'L-inf budget(s), e.g. 4/255 or 0.0157 or 1/255,2/255,4/255', epsList, [4 / 255])
      .option('--steps <n>', 'PGD iterations (stops early once the saved picture fools the model)', intArg('--steps'), 40)
      .option('--step-size <x>', 'PGD step (default eps/4)', floatArg('--step-size', 0, 1))
      .option('--random-start', 'PGD: start from a random point in the eps ball')
      .option('--seed <n>', 'random seed', intArg('--seed', 0), 0),
  ).action(async (target: string, images: string[], o: Common & { out: string; target?: string; method: 'fgsm' | 'pgd'; eps: number[]; steps: number; stepSize?: number; randomStart?: boolean; seed: number }) => {
    const res = await attackTask(target, images, {
      out: o.out,
      target: o.target,
      method: o.method,
      eps: o.eps,
      steps: o.steps,
      stepSize: o.stepSize,
      randomStart: o.randomStart,
      seed: o.seed,
      reporter: cliReporter({ quiet: o.quiet }),
    });
    for (const s of res.skipped) process.stderr.write(`skipped ${displayPath(s.path)}: ${displayPath(s.reason)}\n`);
    if (!res.results.length) throw new GraftError('no image could be read');
    if (o.json) return printJson(res);
    if (res.results.length <= 10) {
      for (const r of res.results) out(`${displayPath(r.image)} (eps ${(r.eps * 255).toFixed(1)}/255): ${r.before[0]!.class} -> ${r.after[0]!.class} (p=${r.after[0]!.probability.toFixed(3)}) ${r.success ? 'fooled' : 'not fooled'}; L-inf ${r.linfLevels}/255, L2 ${r.l2.toFixed(3)}, PSNR ${r.psnr.toFixed(1)} dB, ${r.steps} steps`);
    }
    out(`${o.method.toUpperCase()}${res.target ? ` targeted at '${res.target.name}'` : ' untargeted'}:`);
    for (const e of res.perEps) out(`  eps ${(e.eps * 255).toFixed(2)}/255: success ${(100 * e.successRate).toFixed(1)}%  robust accuracy ${(100 * e.robustAccuracy).toFixed(1)}%  (${e.n} images)`);
    out(`results in ${displayPath(o.out)}`);
  });
}
