import { InvalidArgumentError, Option, type Command } from 'commander';
import { GraftError, UsageError } from '../../errors.js';
import { attackTask } from '../../tasks/attack.js';
import { dreamTask } from '../../tasks/dream.js';
import { parseEps } from '../../vision/attack.js';
import { DREAM_DEFAULTS } from '../../vision/dream.js';
import { floatArg, intArg } from '../options.js';
import { displayPath, out, printJson, withCommon, type Common } from '../output.js';
import { cliReporter } from '../progress.js';


function epsList(v: string): number[] {
  const list = v.split(',').map((s) => parseEps(s));
  if (list.some((e) => e === undefined)) throw new InvalidArgumentError('eps is a number in (0, 1] or a fraction like 4/255; several with commas');
  return list as number[];
}

const commaList = (v: string): string[] => v.split(',').map((s) => s.trim()).filter(Boolean);

export function registerDream(program: Command): void {
  withCommon(
    program
      .command('dream')
      .description(
        "the 'ideal' image of a class (or of a layer's channel, a neuron, a direction), in Lucid's manner: Fourier-space, " +
          'decorrelated-colour parameterisation, random pad/jitter/scale/rotation each step; --compare shows why each matters',
      )
      .summary("the 'ideal' image of a class, by feature visualisation")
      .argument('<model|run>', 'classifier model (ImageNet classes) or a run folder (its classes)')
      .option('--class <name|index>', 'class to dream of, e.g. "tabby" or 281 (or give --objective)')
      .option('--objective <spec>', 'what to maximise: "tabby", "logit:tabby", "prob:tabby", "<layer>:<channel>", "neuron:<layer>:<c>[@y,x]", "direction:<layer>:<v0,v1,...>"; "+" sums terms, "0.5*" weighs one')
      .requiredOption('--out <file.png>', 'PNG to write (a JSON with settings and results goes beside it); with --compare, the sheet (its four pictures go beside it as <name>-1..4.png)')
      .addOption(new Option('--param <kind>', 'parameterisation').choices(['fourier', 'pixel']).default(DREAM_DEFAULTS.param))
      .option('--no-decorrelate', 'plain RGB instead of the decorrelated colour space')
      .option('--no-transforms', 'no random pad/scale/rotation each step (only --jitter)')
      .addOption(new Option('--class-score <s>', 'class score maximised').choices(['logit', 'logprob']).default(DREAM_DEFAULTS.classScore))
      .option('--models <a,b>', 'more networks to optimise for at the same time (the mean of their objectives)', commaList)
      .option('--judges <a,b>', 'other networks whose top-5 of the result is reported (and drawn on the --compare sheet)', commaList)
      .option('--compare', 'write one sheet: plain gradient ascent | + total variation | + Fourier/decorrelation | + transforms')
      .option('--steps <n>', 'optimisation steps', intArg('--steps'), DREAM_DEFAULTS.steps)
      .option('--lr <x>', 'Adam learning rate', floatArg('--lr', 0), DREAM_DEFAULTS.lr)
      .option('--tv <w>', 'total-variation weight (smoothness)', floatArg('--tv', 0), DREAM_DEFAULTS.tv)
      .option('--no-tv', 'no total-variation term (to see why it matters)')
      .option('--l2 <w>', 'L2 weight pulling pixels to grey', floatArg('--l2', 0), DREAM_DEFAULTS.l2)
      .option('--jitter <px>', 'largest random shift per step', intArg('--jitter', 0), DREAM_DEFAULTS.jitter)
      .option('--batch <n>', 'images made at once (with --diversity: different ones)', intArg('--batch'), 1)
      .option('--diversity <w>', 'weight of the diversity term between the batch images (needs --diversity-layer)', floatArg('--diversity', 0), 0)
      .option('--diversity-layer <layer>', 'layer whose Gram matrices must differ between the batch images')
      .option('--seed <n>', 'random seed', intArg('--seed', 0), 0),
  ).action(async (target: string, o: Common & { class?: string; objective?: string; out: string; param: 'fourier' | 'pixel'; decorrelate: boolean; transforms: boolean; classScore: 'logit' | 'logprob'; models?: string[]; judges?: string[]; compare?: boolean; steps: number; lr: number; tv: number | boolean; l2: number; jitter: number; batch: number; diversity: number; diversityLayer?: string; seed: number }) => {
    if (o.class === undefined && o.objective === undefined) throw new UsageError('give --class <name> or --objective <spec>');
    if (o.diversity > 0 && !o.diversityLayer) throw new UsageError('--diversity needs --diversity-layer <layer>');
    const res = await dreamTask(target, {
      className: o.class,
      objective: o.objective,
      out: o.out,
      param: o.param,
      decorrelate: o.decorrelate,
      transforms: o.transforms,
      classScore: o.classScore,
      models: o.models,
      judges: o.judges,
      compare: o.compare,
      steps: o.steps,
      lr: o.lr,
      tv: o.tv === false ? 0 : (o.tv as number),
      l2: o.l2,
      jitter: o.jitter,
      batch: o.batch,
      diversity: o.diversity,
      diversityLayer: o.diversityLayer,
      seed: o.seed,
      reporter: cliReporter({ quiet: o.quiet }),
    });
    if (o.json) return printJson(res);
    const verdictLine = (v: NonNullable<typeof res.verdicts>[number]) => `  ${v.judge}: ${v.rank ? `in top-5 (#${v.rank})` : 'not in top-5'} — ${v.top5.map((t) => `${t.label.split(',')[0]} ${(100 * t.probability).toFixed(0)}%`).join(', ')}`;
    if (res.stages) {
      out(`${displayPath(res.png)}: comparison sheet${res.class ? ` for '${res.class.name}' (${res.class.index})` : ''}`);
      for (const s of res.stages) {
        out(`${s.title}: p=${s.probability.toFixed(3)} on the source network, TV ${s.totalVariation.toFixed(4)}, ${s.seconds.toFixed(1)} s`);
        for (const v of s.verdicts) out(verdictLine(v));
      }
    } else {
      const what = res.class ? `'${res.class.name}' (${res.class.index}) with probability ${res.probability.toFixed(3)} (ONNX Runtime on the saved PNG)` : `objective ${res.objective}`;
      out(`${displayPath(res.png)}: ${what}; total variation ${res.totalVariation.toFixed(4)}; ${res.steps} steps in ${res.seconds.toFixed(1)} s`);
      for (const v of res.verdicts ?? []) out(verdictLine(v));
    }
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
