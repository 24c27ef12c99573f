/**
 * syncfs(2) of a file system, and a batcher that lets the worker's stores share one.
 *
 * Why shared: a pull's end makes its content (cas/store.ts "Durability") and its TOC files
 * (pull/layer-store.ts) durable before the layers are marked complete; both live under the daemon's
 * root, so one syncfs covers both (issue 19: one flush per pull, in the background, not an fsync per
 * file at 6 ms each on this VM, docs/design-notes.md "Durable content").
 *
 * Not here: what must be flushed before what (the callers' contracts say it).
 */
import { execFile } from 'node:child_process';
import { StarlightError, errnoError } from '../../errors.js';
import { blobAddon as addon } from './blob-addon.js';

/** Flushes the file system holding `dir` to stable storage. */
export type Syncfs = (dir: string) => Promise<void>;

/**
 * syncfs(2) of the file system holding `dir`: through the blob addon on the libuv pool, or, without
 * it (not built), through coreutils `sync -f`. Why not always `sync -f`: spawning it forks the daemon
 * on the main thread, ~5 ms of a pull's event loop (issue 19, docs/design-notes.md).
 */
export function syncFileSystem(dir: string): Promise<void> {
  const failed = (how: string, cause: Error): StarlightError =>
    new StarlightError('SL_ERR_INTERNAL', `cannot flush ${dir} to disk (${how}): ${cause.message}`, { cause, details: { dir } });
  return new Promise((resolve, reject) => {
    if (addon !== null) {
      return addon.syncfs(dir, (errno) => (errno === 0 ? resolve() : reject(failed('syncfs', errnoError(errno, 'syncfs', dir)))));
    }
    execFile('sync', ['-f', dir], (err) => (err ? reject(failed('sync -f', err)) : resolve()));
  });
}

/**
 * A Syncfs for callers that all write to ONE file system (the caller checks that: lazy-pull.ts).
 * Every call resolves after a run of `syncfs` that started after the call (so it covers every write
 * that settled before the call). Calls made before a run starts share it; a run starts one event
 * loop turn after its first call (calls of the same turn join it: a pull's content sync and its TOC
 * flush), and not while the previous run is still going. A failed run rejects the calls it served.
 */
export function batchedSyncfs(syncfs: Syncfs): Syncfs {
  let queued: Promise<void> | null = null;
  let running: Promise<void> | null = null;
  return (dir) =>
    (queued ??= (async () => {
      await new Promise<void>((r) => setImmediate(r));
      while (running !== null) await running.catch(() => undefined);
      queued = null;
      const run = syncfs(dir);
      running = run;
      try {
        await run;
      } finally {
        running = null;
      }
    })());
}
