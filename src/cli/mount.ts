/**
 * `starlight mount --proxy URL REF DIR` mounts an image lazily with no containerd: the tree answers at
 * once, reads of content that has not arrived block until it does. Runs in the foreground until
 * SIGINT/SIGTERM or `starlight umount DIR`, then unmounts. Prints `mounted REF at DIR` on stdout when
 * the tree answers and `complete` when every item is present.
 *
 * `starlight umount DIR` detaches a view (also a stale one left by a crash).
 */
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { StarlightError } from '../errors.js';
import { createLogger } from '../log.js';
import { FuseViewManager } from '../worker/fs/fuse-views.js';
import { cleanupStaleMount, detachMount, fuseMountsAt } from '../worker/fs/mount-table.js';
import { openLazyPull } from '../worker/pull/lazy-pull.js';
import { DEFAULT_READ_DEADLINE_MS } from '../worker/stream/content-tracker.js';
import { createProgress, formatBytes } from './progress.js';
import { untilSignal } from './signals.js';

const USAGE = `usage: starlight mount --proxy URL [--root DIR] [--platform os/arch] [--token T] [--read-deadline SECONDS] REF DIR
       starlight umount DIR`;

/** Default worker state dir of `starlight mount` (separate from the daemon's, which owns its own). */
const DEFAULT_MOUNT_ROOT = '/var/lib/starlight/mount';
/** How often the foreground process checks that its mount is still there, in ms. */
const ALIVE_POLL_MS = 1000;

function usageError(msg: string): StarlightError {
  return new StarlightError('SL_ERR_INVALID_ARGUMENT', `${msg}\n${USAGE}`);
}

export async function runMountCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      proxy: { type: 'string' },
      root: { type: 'string', default: DEFAULT_MOUNT_ROOT },
      platform: { type: 'string' },
      token: { type: 'string' },
      'read-deadline': { type: 'string', default: String(DEFAULT_READ_DEADLINE_MS / 1000) },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (!values.proxy) throw usageError('--proxy URL is required');
  if (positionals.length !== 2) throw usageError('expected REF and DIR');
  const [ref, dirArg] = positionals as [string, string];
  const deadlineS = Number(values['read-deadline']);
  if (!(deadlineS > 0)) throw usageError(`--read-deadline must be a positive number of seconds, got '${values['read-deadline']}'`);
  const dir = resolve(dirArg);
  const root = resolve(values.root!);

  const log = createLogger({ fields: { component: 'mount' } });
  if ((await cleanupStaleMount(dir)) === 'cleaned') log.warn('stale-mount-cleaned', { mountpoint: dir });
  await mkdir(dir, { recursive: true });

  const lazy = await openLazyPull({ root, proxy: values.proxy!, token: values.token ?? process.env.STARLIGHT_PROXY_TOKEN, readDeadlineMs: deadlineS * 1000, log });
  const views = new FuseViewManager({ log, handleSignals: false });
  const progress = createProgress();
  const stop = new AbortController();
  let poll: NodeJS.Timeout | undefined;
  try {
    const pulled = await lazy.puller.pull(ref, values.platform);
    await views.mount(dir, { tree: pulled.tree, content: lazy.tracker });
    process.stdout.write(`mounted ${ref} at ${dir}\n`);
    pulled.receiver.done.then(
      () => {
        progress.done();
        process.stdout.write('complete\n');
      },
      (err: unknown) => log.error('delta-failed', { ref, err }),
    );
    poll = setInterval(() => {
      const p = pulled.receiver.progress();
      progress.update(`${ref}: ${p.itemsDone}/${p.items} files, ${formatBytes(p.bytesDone)}/${formatBytes(p.bytes)}`);
      views.check(dir).catch(() => stop.abort());
    }, ALIVE_POLL_MS);
    const why = await untilSignal(stop.signal);
    log.info('mount-stopping', { mountpoint: dir, reason: why });
    pulled.receiver.close();
  } finally {
    clearInterval(poll);
    progress.done();
    await lazy.close(); // parked reads fail (canceled) before the views go
    await views.close();
  }
  return 0;
}

export async function runUmountCommand(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({ args: argv, allowPositionals: true, options: { help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (positionals.length !== 1) throw usageError('expected DIR');
  const dir = resolve(positionals[0]!);
  if ((await fuseMountsAt(dir)).length === 0) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `nothing is mounted at ${dir}`, { details: { mountpoint: dir } });
  }
  await detachMount(dir, 'the view');
  return 0;
}
