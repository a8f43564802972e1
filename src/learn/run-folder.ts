/**
 * The life of a run folder (`--out`): checked before any work starts, held by one writer at a time, and completed
 * all at once, so that a folder either is a whole run (config, weights, metrics, pictures) or is not one at all.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, realpath, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { UsageError, GraftError } from '../errors.js';
import { withLock } from '../models/store-lock.js';

async function statOrUndefined(path: string) {
  try {
    return await stat(path);
  } catch {
    return undefined;
  }
}

/** The real path of `path`, resolving links in the part that exists (the rest may not exist yet). */
async function realPathOf(path: string): Promise<string> {
  let p = resolve(path);
  const rest: string[] = [];
  for (;;) {
    try {
      return join(await realpath(p), ...rest.reverse());
    } catch {
      const parent = dirname(p);
      if (parent === p) return resolve(path);
      rest.push(basename(p));
      p = parent;
    }
  }
}

function within(inner: string, outer: string): boolean {
  const rel = relative(outer, inner);
  return rel === '' || (rel !== '..' && !rel.startsWith('..' + sep) && !isAbsolute(rel));
}

/**
 * Refuse an `--out` that cannot be a run folder, before the minutes of extraction that come first: an existing
 * file, a path through a file, a folder inside one of the input folders (the next `graft train` on that data would
 * take the run's PNGs for images and the run for a class), or a folder holding an input (writing the run would
 * replace it). Returns the resolved path.
 */
export async function checkRunOut(out: string, inputs: { flag: string; path: string }[]): Promise<string> {
  const abs = resolve(out);
  const st = await statOrUndefined(abs);
  if (st && !st.isDirectory()) throw new UsageError(`--out ${out} is an existing file, not a folder; choose a folder for the run`);
  // The nearest part of the path that exists must be a folder (`--out notes.txt/run` fails with ENOTDIR later).
  for (let p = dirname(abs); ; p = dirname(p)) {
    const s = await statOrUndefined(p);
    if (s) {
      if (!s.isDirectory()) throw new UsageError(`--out ${out}: ${p} is a file, not a folder`);
      break;
    }
    if (dirname(p) === p) break;
  }
  const realOut = await realPathOf(abs);
  for (const input of inputs) {
    const realIn = await realPathOf(input.path);
    if (within(realOut, realIn)) {
      throw new UsageError(
        `--out ${out} is inside the ${input.flag} folder ${input.path}: the next run on that folder would take the ` +
          `run's pictures for images and the run folder for a class; choose a folder outside it`,
      );
    }
    if (within(realIn, realOut)) {
      throw new UsageError(`--out ${out} holds the ${input.flag} folder ${input.path}: writing the run there would replace it; choose another folder`);
    }
  }
  return abs;
}

/** Where the lock of a run folder lives: beside it, so that completing the run (a rename) does not move it. */
export function runLockPath(out: string): string {
  const abs = resolve(out);
  return join(dirname(abs), `.${basename(abs)}.graft-lock`);
}

/**
 * Run `fn` as the only writer of run folder `out`. A second graft process on the same folder is refused at once
 * (two runs writing one folder mixed one's JSON with the other's PNGs); a lock left by a killed process is taken
 * over (its pid is gone).
 */
export async function withRunLock<T>(out: string, fn: () => Promise<T>): Promise<T> {
  const lock = runLockPath(out);
  try {
    await mkdir(dirname(lock), { recursive: true });
  } catch (err) {
    throw new GraftError(`cannot create the folder of --out ${out} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  return withLock(lock, fn, {
    onWait: (holder) => {
      throw new GraftError(
        `run folder ${out} is being written by another graft process` +
          (holder ? ` (pid ${holder.pid} on ${holder.host}, since ${holder.since})` : '') +
          '; wait for it to finish or choose another --out',
      );
    },
  });
}

/**
 * Write a run's files into a hidden staging folder beside `out`, move the `carry` entries of the current `out`
 * (checkpoints made while training) into it, then put it in place of `out` with renames. A failure on the way (disk
 * full, file-size limit) removes the staging folder and leaves the previous `out` as it was.
 */
export async function commitRunFolder(out: string, write: (dir: string) => Promise<void>, carry: string[] = []): Promise<void> {
  const abs = resolve(out);
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const staging = join(dirname(abs), `.${basename(abs)}.graft-new-${tag}`);
  const old = join(dirname(abs), `.${basename(abs)}.graft-old-${tag}`);
  await mkdir(staging, { recursive: true });
  const moved: string[] = [];
  try {
    await write(staging);
    for (const name of carry) {
      if (!(await statOrUndefined(join(abs, name)))) continue;
      await rename(join(abs, name), join(staging, name));
      moved.push(name);
    }
  } catch (err) {
    for (const name of moved) await rename(join(staging, name), join(abs, name)).catch(() => {});
    await rm(staging, { recursive: true, force: true });
    throw err;
  }
  const existed = (await statOrUndefined(abs)) !== undefined;
  if (existed) await rename(abs, old);
  try {
    await rename(staging, abs);
  } catch (err) {
    if (existed) await rename(old, abs).catch(() => {});
    await rm(staging, { recursive: true, force: true });
    throw err;
  }
  if (existed) await rm(old, { recursive: true, force: true });
}
