/**
 * A new user's first steps, from a clean clone of this repository: the README's install command with no
 * environment variables of ours set, then the README's first command verbatim; and graft installed from its packed
 * tarball into an empty project set up as the README tells such a project to.
 *
 * Nothing but the npm registry may be reached. onnxruntime-node's install step downloads through global-agent,
 * which honours GLOBAL_AGENT_HTTPS_PROXY: the test points it at a closed loopback port, so on a machine that does
 * have the internet the GPU download fails loudly instead of silently succeeding.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { SHARED, SKIP_SHARED } from './helpers/shared.js';

const run = promisify(execFile);
const REPO = resolve(import.meta.dirname, '..');

/** The environment a user's shell would have: none of npm's, ONNX Runtime's or graft's variables. */
function cleanEnv(closedPort: number): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(npm_|ONNXRUNTIME_NODE_INSTALL|GRAFT_|NODE_OPTIONS$|INIT_CWD$)/i.test(k)) continue;
    env[k] = v;
  }
  env.GLOBAL_AGENT_HTTP_PROXY = `http://127.0.0.1:${closedPort}`;
  env.GLOBAL_AGENT_HTTPS_PROXY = `http://127.0.0.1:${closedPort}`;
  return env;
}

/** A loopback port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((ok) => srv.listen(0, '127.0.0.1', ok));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((ok) => srv.close(() => ok()));
  return port;
}

/** Runs a shell command line as a user would type it; resolves with its exit code and output. */
function sh(line: string, cwd: string, env: NodeJS.ProcessEnv): Promise<{ code: number; out: string }> {
  return new Promise((ok) => {
    const p = spawn('bash', ['-c', line], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('close', (code) => ok({ code: code ?? 1, out }));
  });
}

/** The README's `sh` block under "Set up and run": its install command and the command after it. */
async function readmeFirstCommands(): Promise<{ install: string; first: string }> {
  const readme = await readFile(join(REPO, 'README.md'), 'utf8');
  const section = readme.split('## Set up and run')[1];
  assert.ok(section, 'README has a "Set up and run" section');
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(block, 'the section starts with a sh block');
  const commands = block.replace(/\\\n\s*/g, ' ').split('\n').map((l) => l.replace(/\s+#.*$/, '').trim()).filter(Boolean);
  assert.ok(commands.length >= 2, 'install command and a first command');
  return { install: commands[0]!, first: commands[1]! };
}

/** CUDA provider libraries that onnxruntime-node's install step would have fetched. */
async function cudaFiles(nodeModules: string): Promise<string[]> {
  const bin = join(nodeModules, 'onnxruntime-node', 'bin');
  const found: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else if (/cuda|tensorrt/i.test(e.name)) found.push(join(d, e.name));
    }
  };
  await walk(bin);
  return found;
}

const COMMANDS = ['train', 'eval', 'predict', 'extract', 'layers', 'convert', 'export', 'report', 'dream', 'attack',
  'models', 'pull', 'rm', 'featuremaps', 'lr-find', 'worker', 'explain'];

function assertHelpListsCommands(help: string): void {
  const listing = help.split('Commands:')[1] ?? '';
  for (const c of COMMANDS) {
    const lines = listing.split('\n').filter((l) => l.trimStart().startsWith(`${c} `));
    assert.equal(lines.length, 1, `graft --help lists '${c}' on one line`);
    assert.ok(lines[0]!.length <= 120, `'${c}' fits on one 120-column line: ${lines[0]}`);
  }
}

describe('fresh install (clean clone, README commands, no environment variables)', { timeout: 15 * 60_000 }, () => {
  let dir: string;
  let clone: string;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'graft-fresh-'));
    env = cleanEnv(await closedPort());
    env.HOME = process.env.HOME; // npm's cache: the registry is reached as usual, and reused when it can be
    // The clone sits in <dir>/main with shared/ beside it, so the README's ../shared paths resolve as for a user.
    clone = join(dir, 'main');
    await run('git', ['clone', '--quiet', REPO, clone]);
    if (SHARED) await symlink(SHARED, join(dir, 'shared'));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  test("the README's install command succeeds and downloads no GPU binaries", async () => {
    const { install } = await readmeFirstCommands();
    assert.match(install, /^npm (install|ci)\b/);
    const r = await sh(`${install} --no-audit --no-fund --foreground-scripts`, clone, env);
    assert.equal(r.code, 0, `'${install}' failed in a clean clone:\n${r.out.slice(-3000)}`);
    assert.deepEqual(await cudaFiles(join(clone, 'node_modules')), []);
    assert.ok(existsSync(join(clone, 'dist', 'index.js')), 'the install built dist/');
    const help = await sh('npx graft --help', clone, env);
    assert.equal(help.code, 0, help.out);
    assertHelpListsCommands(help.out);
  });

  test("the README's first command works verbatim", { skip: SKIP_SHARED }, async () => {
    const { first } = await readmeFirstCommands();
    assert.match(first, /^npx graft train /);
    // Its own feature cache, so the command really extracts (as on a user's first run).
    const r = await sh(first, clone, { ...env, GRAFT_HOME: join(dir, 'graft-home') });
    assert.equal(r.code, 0, `'${first}' failed:\n${r.out.slice(-3000)}`);
    const out = /--out\s+(\S+)/.exec(first)![1]!;
    const metrics = JSON.parse(await readFile(join(clone, out, 'metrics.json'), 'utf8'));
    assert.ok(metrics.validation.accuracy >= 0.98, `validation accuracy ${metrics.validation.accuracy}`);
  });

  test('graft as a dependency: packed, installed into an empty project set up as the README says', async () => {
    const pack = await sh('npm pack --silent --pack-destination ..', clone, env);
    assert.equal(pack.code, 0, pack.out);
    const tarball = join(dir, pack.out.trim().split('\n').pop()!);
    assert.ok(existsSync(tarball), `npm pack wrote ${tarball}`);
    const app = join(dir, 'app');
    await mkdir(app);
    await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', type: 'module', private: true }));
    // What the README tells a depending project to set (a package's own .npmrc does not travel with it).
    const readme = await readFile(join(REPO, 'README.md'), 'utf8');
    assert.match(readme, /onnxruntime-node-install=skip/);
    await writeFile(join(app, '.npmrc'), 'onnxruntime-node-install=skip\n');
    const r = await sh(`npm install --no-audit --no-fund --foreground-scripts ${JSON.stringify(tarball)}`, app, env);
    assert.equal(r.code, 0, `installing the packed graft failed:\n${r.out.slice(-3000)}`);
    assert.deepEqual(await cudaFiles(join(app, 'node_modules')), []);
    const lib = await sh(`node -e "import('graft').then((g) => console.log(typeof g.train))"`, app, env);
    assert.equal(lib.code, 0, lib.out);
    assert.match(lib.out, /function/);
    const help = await sh('npx graft --help', app, env);
    assert.equal(help.code, 0, help.out);
    assertHelpListsCommands(help.out);
  });
});
