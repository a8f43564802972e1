/** The server under load, in its own process (bench/serve.bench.ts starts it): prints its URL, runs until killed. */
import { startServer } from '../src/server/serve.js';

const s = await startServer({ port: 0, modelsDirs: [process.argv[2]!], rateLimit: 1e9 });
process.stdout.write(`${s.url}\n`);
process.on('SIGTERM', () => void s.close().then(() => process.exit(0)));
