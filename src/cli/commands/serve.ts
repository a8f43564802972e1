import type { Command } from 'commander';
import { startServer } from '../../server/serve.js';
import { takeSigint } from '../interrupt.js';
import { intArg } from '../options.js';
import { printJson, withCommon, type Common } from '../output.js';

export function registerServe(program: Command): void {
  withCommon(
    program
      .command('serve')
      .description('the web page and the HTTP API: projects, training with live curves, predict, feature maps, ideal images, attacks')
      .summary('the web page and HTTP API')
      .option('--port <n>', 'port (0: any free port)', intArg('--port', 0), 7860)
      .option('--host <addr>', 'address to listen on; anything but loopback needs --token', '127.0.0.1')
      .option('--token <secret>', 'require Authorization: Bearer <secret> on every API request (default: $GRAFT_TOKEN)')
      .option('--models-dir <dir...>', 'folders whose .onnx files and run folders may be named in model= (default: the current folder)')
      .option('--threads <n>', 'ONNX Runtime threads per model (default: all cores)', intArg('--threads'))
      .option('--max-upload-mb <n>', 'largest upload accepted', intArg('--max-upload-mb'), 25)
      .option('--max-megapixels <n>', 'largest image accepted, in millions of pixels', intArg('--max-megapixels'), 40)
      .option('--max-waiting-jobs <n>', 'jobs that may wait behind the running one', intArg('--max-waiting-jobs'), 8)
      .option('--int8', 'train projects\' frozen heads on an int8 version of the backbone, calibrated on each project\'s photos (~2.4x faster features)'),
  )
    .addHelpText(
      'after',
      '\nThe page is at http://127.0.0.1:7860/, the API under /api (OpenAPI: /api/openapi.json, browsable at /api/docs).\n' +
        'Example: curl --data-binary @cat.jpg "http://127.0.0.1:7860/api/predict?model=mobilenet_v2_1.0_224&top=3"\n' +
        'Ctrl-C stops gracefully: a running fine-tune saves a checkpoint, nothing is left half-written.',
    )
    .action(async (o: Common & { port: number; host: string; token?: string; modelsDir?: string[]; threads?: number; maxUploadMb: number; maxMegapixels: number; maxWaitingJobs: number; int8?: boolean }) => {
      const server = await startServer({
        port: o.port,
        host: o.host,
        token: o.token ?? (process.env.GRAFT_TOKEN || undefined),
        modelsDirs: o.modelsDir,
        threads: o.threads,
        maxWaitingJobs: o.maxWaitingJobs,
        int8: o.int8,
        limits: { bodyBytes: o.maxUploadMb * 1024 * 1024, imagePixels: o.maxMegapixels * 1e6 },
      });
      if (o.json) printJson({ url: server.url, port: server.port });
      else process.stderr.write(`graft serve: ${server.url}/  (API docs: ${server.url}/api/docs; Ctrl-C to stop)\n`);
      await new Promise<void>((resolveStop) => {
        let stopping = false;
        const stop = () => {
          if (stopping) process.exit(130);
          stopping = true;
          if (!o.quiet) process.stderr.write('\ngraft serve: stopping (running jobs checkpoint; Ctrl-C again to leave now)\n');
          void server.close().finally(() => resolveStop());
        };
        takeSigint(stop);
        process.once('SIGTERM', stop);
      });
    });
}
