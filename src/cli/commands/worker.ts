import type { Command } from 'commander';
import { InterruptedError } from '../../errors.js';
import { runWorker } from '../../queue/worker.js';
import { exitInterrupted, takeSigint } from '../interrupt.js';
import { floatArg, intArg } from '../options.js';
import { printJson, withCommon, type Common } from '../output.js';
import { cliReporter } from '../progress.js';

export function registerWorker(program: Command): void {
  withCommon(
    program
      .command('worker')
      .description(
        'take shards of images from a Redis queue (BullMQ) and compute their features into the shared feature cache, ' +
          'for `graft extract|predict|train --queue` run elsewhere; one worker per machine',
      )
      .summary('compute features for --queue runs on other machines')
      .requiredOption('--queue <redis-url>', 'the queue, e.g. redis://10.0.0.5:6379 (the same URL the coordinator uses)')
      .option('--concurrency <n>', 'shards at once (default 1: one shard keeps the ONNX Runtime sessions busy)', intArg('--concurrency'), 1)
      .option('--cache-dir <dir>', 'feature cache folder all machines share, e.g. on NFS (default: $GRAFT_HOME/features)')
      .option('--threads <n>', 'ONNX Runtime threads (default: all cores)', intArg('--threads'))
      .option('--lock-seconds <s>', 'a shard whose worker goes silent this long is handed to another worker', floatArg('--lock-seconds', 1, 3600), 30),
  )
    .addHelpText(
      'after',
      '\nRuns until Ctrl-C: the first finishes the running shard(s) and exits 130; a second leaves at once (the shard\n' +
        'is handed to another worker after --lock-seconds). A shard run twice writes the same cache entries.',
    )
    .action(async (o: Common & { queue: string; concurrency: number; cacheDir?: string; threads?: number; lockSeconds: number }) => {
      const r = cliReporter({ quiet: o.quiet });
      const ac = new AbortController();
      const release = takeSigint(() => {
        if (ac.signal.aborted) return exitInterrupted();
        process.stderr.write('\nCtrl-C: finishing the running shard(s), then stopping (Ctrl-C again to leave now)\n');
        ac.abort();
      });
      try {
        const summary = await runWorker({ queue: o.queue, concurrency: o.concurrency, cacheDir: o.cacheDir, threads: o.threads, lockSeconds: o.lockSeconds, reporter: r, signal: ac.signal });
        if (o.json) printJson(summary);
        else process.stderr.write(`worker: ${summary.shards} shards, ${summary.images} images (${summary.computed} computed) in ${summary.seconds.toFixed(1)} s\n`);
        throw new InterruptedError('worker stopped (Ctrl-C)');
      } finally {
        release();
      }
    });
}
