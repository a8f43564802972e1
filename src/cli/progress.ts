import cliProgress from 'cli-progress';
import type { DownloadProgress } from '../models/download.js';
import type { Reporter } from '../tasks/reporter.js';
import { displayPath } from './output.js';

/**
 * The CLI's reporter: progress bars with rate and ETA on a TTY (stderr), plain start/end lines otherwise, so that
 * logs stay readable and stdout stays free for results (and for --json).
 */
export function cliReporter(opts: { quiet?: boolean } = {}): Reporter {
  const tty = process.stderr.isTTY === true;
  type Entry = { bar?: cliProgress.SingleBar; total: number; done: number; t0: number; unit: string };
  const bars = new Map<string, Entry>();
  const log = (s: string) => {
    if (!opts.quiet) process.stderr.write(s + '\n');
  };
  return {
    start(task, total, unit) {
      const entry: Entry = { total, done: 0, t0: performance.now(), unit };
      if (tty && !opts.quiet && total > 0) {
        entry.bar = new cliProgress.SingleBar(
          {
            format: `${task.padEnd(15)} {bar} {percentage}% | {value}/{total} ${unit} | {rate} ${unit}/s | ETA {eta_formatted} {note}`,
            barsize: 24,
            hideCursor: true,
            clearOnComplete: false,
            etaBuffer: 50,
            stream: process.stderr,
          },
          cliProgress.Presets.shades_classic,
        );
        entry.bar.start(total, 0, { rate: '-', note: '' });
      }
      bars.set(task, entry);
    },
    update(task, done, note) {
      const e = bars.get(task);
      if (!e) return;
      e.done = done;
      if (!e.bar) return;
      const secs = (performance.now() - e.t0) / 1000;
      e.bar.update(done, { rate: secs > 0 ? (done / secs).toFixed(1) : '-', note: note ?? '' });
    },
    end(task) {
      const e = bars.get(task);
      if (!e) return;
      e.bar?.stop();
      const secs = (performance.now() - e.t0) / 1000;
      if (!e.bar) log(`${task}: ${e.done} ${e.unit} in ${secs.toFixed(1)} s (${(e.done / Math.max(secs, 1e-9)).toFixed(1)} ${e.unit}/s)`);
      bars.delete(task);
    },
    // Messages name files (the cache folder, skipped.json, the model): escaped like any path printed for people.
    info: (m) => log(displayPath(m)),
    warn: (m) => log(`warning: ${displayPath(m)}`),
  };
}

/** A download as a progress bar in kB (started once the size is known). */
export function downloadProgress(r: Reporter, task: string): { onProgress: (p: DownloadProgress) => void; end: () => void } {
  let started = false;
  return {
    onProgress(p) {
      if (!started && p.total) {
        r.start?.(task, Math.max(1, Math.ceil(p.total / 1000)), 'kB');
        started = true;
      }
      if (started) r.update?.(task, Math.ceil(p.received / 1000), p.file ?? '');
    },
    end() {
      if (started) r.end?.(task);
      started = false;
    },
  };
}
