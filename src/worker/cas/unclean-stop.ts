/**
 * Detects content damaged by a crash or power cut (issue 14, the start-up side of durability): a run
 * marker `<store>/.running` is written when a worker opens the store and removed only after a clean
 * stop, once the file system was synced (`sync -f`). Finding the marker at start means the last run
 * did not stop cleanly, so content it committed may be truncated or zeroed on disk (written, renamed,
 * never flushed): every blob modified since that run began is re-hashed, and one that does not match
 * its name is deleted, so it is fetched again instead of served.
 *
 * Not here: fsync on the write path (cas/store.ts, item-thread.ts own how content is written).
 */
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from '../../log.js';
import type { LocalContentStore } from './store.js';

const run = promisify(execFile);
const MARKER = '.running';
/** Blobs modified this long before the crashed run began are re-checked too (clock steps, writeback). */
const MTIME_SLACK_MS = 60_000;
/** Bound on `sync -f` at a clean stop, ms. */
const SYNC_TIMEOUT_MS = 120_000;

export interface StartCheck {
  /** Whether the previous run stopped without its clean-stop mark. */
  unclean: boolean;
  /** Blobs re-hashed, and those deleted because they did not match. */
  checked: number;
  dropped: string[];
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  return 'sha256:' + h.digest('hex');
}

/**
 * Call after store.open(), before anything is served: re-verifies what an unclean stop may have
 * damaged, then marks this run. Pair with markCleanStop() at a clean stop.
 */
export async function checkAfterUncleanStop(store: LocalContentStore, log: Logger): Promise<StartCheck> {
  const marker = join(store.root, MARKER);
  const since = await readFile(marker, 'utf8').then(
    (t) => Number(t) || 0,
    () => undefined,
  );
  const out: StartCheck = { unclean: since !== undefined, checked: 0, dropped: [] };
  if (since !== undefined) {
    for await (const { digest } of store.walk()) {
      const path = store.path(digest);
      if (path === null) continue;
      const st = await stat(path).catch(() => null);
      if (st !== null && st.mtimeMs < since - MTIME_SLACK_MS) continue;
      out.checked++;
      const actual = st === null ? '' : await sha256File(path).catch(() => '');
      if (actual !== digest) {
        out.dropped.push(digest);
        await store.delete(digest);
      }
    }
    log.warn('content-unclean-stop-checked', { root: store.root, checked: out.checked, dropped: out.dropped.length, digests: out.dropped.slice(0, 20) });
  }
  await writeFile(marker, String(Date.now()), { mode: 0o600 });
  return out;
}

/** At a clean stop, once nothing writes the store any more: syncs its file system, then drops the marker. */
export async function markCleanStop(store: LocalContentStore, log: Logger): Promise<void> {
  try {
    await run('sync', ['-f', store.root], { timeout: SYNC_TIMEOUT_MS });
    await rm(join(store.root, MARKER), { force: true });
  } catch (err) {
    // Leave the marker: the next start re-verifies, which is safe.
    log.warn('content-sync-failed', { root: store.root, err });
  }
}
