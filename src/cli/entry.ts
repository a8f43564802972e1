import { handleSigint } from './interrupt.js';
import { main } from './main.js';

handleSigint();
const code = await main(process.argv.slice(2));
// Interrupted (Ctrl-C): what could be saved is saved; leave now rather than wait for worker threads to wind down.
if (code === 130) process.exit(code);
process.exitCode = code;
