/**
 * View takeover (issue 13) at the fs seam, without containerd: a FuseViewManager hands its views to a
 * real fd holder, release()s them (a daemon's clean stop) with a read parked and a file open, and a
 * second manager adopts the held connection (a daemon's restart). The parked read is resent
 * (FUSE_NOTIFY_RESEND) and served by the successor; the file opened before the takeover still reads
 * and closes. With resend unavailable (STARLIGHT_TEST_NO_RESEND, as on Linux < 6.9) the parked read
 * fails with EIO instead of hanging. Reads go through child processes (cat), never the test process.
 */
import test, { type ExecutionContext } from 'ava';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MergedTree, TocEntry } from '../../src/layers/toc.js';
import { FdHolderClient } from '../../src/worker/fs/fd-holder.js';
import { FuseViewManager } from '../../src/worker/fs/fuse-views.js';
import { FuseAddonLoader } from '../../src/worker/fs/native.js';
import { unmountAllUnder } from '../../src/worker/fs/mount-table.js';
import { TestContent } from '../helpers/test-content.js';
import { tempDir } from '../helpers/tmp.js';

const run = process.getuid?.() === 0 ? test.serial : (test.skip as typeof test.serial);
const sha = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

interface Fx {
  dir: string;
  mnt: string;
  tree: MergedTree;
  files: Map<string, Buffer>;
  holderSocket: string;
  fifo: string;
}

function fixture(t: ExecutionContext, content: TestContent): Fx {
  const dir = tempDir(t, 'sl-takeover-');
  const cas = join(dir, 'cas');
  const mnt = join(dir, 'mnt');
  mkdirSync(cas);
  mkdirSync(mnt);
  const base = { uid: 0, gid: 0, size: 0, mtime: 1700000000 };
  const entries: TocEntry[] = [{ ...base, path: '', type: 'dir', mode: 0o755 }];
  const files = new Map<string, Buffer>();
  const add = (path: string, bytes: Buffer, missing: boolean): void => {
    const digest = sha(bytes);
    writeFileSync(join(cas, digest.slice(7)), bytes);
    content.files.set(digest, join(cas, digest.slice(7)));
    if (missing) content.missing.add(digest);
    files.set(path, bytes);
    entries.push({ ...base, path, type: 'reg', mode: 0o644, size: bytes.length, digest });
  };
  add('present', randomBytes(200_000), false);
  add('parked', randomBytes(70_000), true);
  entries.sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
  t.teardown(() => unmountAllUnder(dir).then(() => undefined));
  return { dir, mnt, tree: { diffIDs: ['sha256:test'], entries }, files, holderSocket: join(dir, 'holder.sock'), fifo: join(dir, 'go') };
}

function child(t: ExecutionContext, cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): { proc: ChildProcess; done: Promise<{ code: number | null; out: Buffer; err: string }> } {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const out: Buffer[] = [];
  let err = '';
  proc.stdout!.on('data', (c: Buffer) => out.push(c));
  proc.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const done = new Promise<{ code: number | null; out: Buffer; err: string }>((res) => proc.on('close', (code) => res({ code, out: Buffer.concat(out), err })));
  t.teardown(() => void (proc.exitCode === null && proc.kill('SIGKILL')));
  return { proc, done };
}

async function until(cond: () => boolean, ms = 10_000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 20))) if (cond()) return true;
  return cond();
}

/** First manager: mounts with a holder, parks a read, opens a file, then releases (a clean daemon stop). */
async function firstDaemon(t: ExecutionContext, fx: Fx, content: TestContent, loader: FuseAddonLoader) {
  const holder = await FdHolderClient.connect(loader, { socket: fx.holderSocket, readDeadlineMs: 60_000 });
  t.teardown(() => {
    try {
      FdHolderClient.end(loader, fx.holderSocket);
    } catch {
      // already gone
    }
  });
  const views = new FuseViewManager({ handleSignals: false, loader, holder });
  await views.mount(fx.mnt, { tree: fx.tree, content });
  // A reader holding `present` open across the takeover: reads part, says so, waits on a FIFO, reads the rest.
  const ready = join(fx.dir, 'ready');
  execFileSync('mkfifo', [fx.fifo]);
  const opened = child(t, 'sh', ['-c', `exec 3< ${join(fx.mnt, 'present')}; head -c 100000 <&3 > /dev/null; touch ${ready}; read x < ${fx.fifo}; cat <&3 | wc -c; exec 3<&-`]);
  t.true(await until(() => existsSync(ready)), 'the reader has the file open');
  const parked = child(t, 'cat', [join(fx.mnt, 'parked')], { ...process.env });
  t.true(await until(() => content.pending() > 0), 'the read of absent content is parked');
  await views.release();
  holder.close();
  return { opened, parked };
}

run('a parked read and an open file survive a takeover; the successor serves them', async (t) => {
  const loader = new FuseAddonLoader();
  const content = new TestContent();
  const fx = fixture(t, content);
  const { opened, parked } = await firstDaemon(t, fx, content, loader);
  t.is(parked.proc.exitCode, null, 'the parked read still waits after the first daemon released the view');
  t.is(content.pending(), 0, 'release() aborted the wait without answering the read');

  const holder = await FdHolderClient.connect(loader, { socket: fx.holderSocket, readDeadlineMs: 60_000 });
  t.teardown(() => holder.close());
  const views = new FuseViewManager({ handleSignals: false, loader, holder });
  t.teardown(() => views.close());
  views.adoptFrom(holder.takeAll());
  t.deepEqual(views.heldMountpoints(), [fx.mnt]);
  await views.mount(fx.mnt, { tree: fx.tree, content });
  const st = views.stats(fx.mnt)!;
  t.is(st.epoch, 1, 'one takeover');
  t.is(st.resend, 1, 'FUSE_NOTIFY_RESEND accepted (Linux >= 6.9)');
  t.true(await until(() => content.pending() > 0), 'the resent read is parked again in the successor');
  content.release(sha(fx.files.get('parked')!));
  const p = await parked.done;
  t.is(p.code, 0, p.err);
  t.is(sha(p.out), sha(fx.files.get('parked')!), 'the parked read got the right bytes from the successor');
  writeFileSync(fx.fifo, 'go\n');
  const o = await opened.done;
  t.is(o.code, 0, o.err);
  t.is(o.out.toString().trim(), String(200_000 - 100_000), 'a file opened before the takeover reads on');
  const cat = await child(t, 'cat', [join(fx.mnt, 'present')]).done;
  t.is(sha(cat.out), sha(fx.files.get('present')!), 'new opens after the takeover read right');
  const after = views.stats(fx.mnt)!;
  if (after.passthrough === 1) {
    // Kernel passthrough survived the takeover: the backing file registered by the first daemon serves it.
    t.true(after.passthroughOpens > 0, 'a complete file opens through passthrough after the takeover');
    t.is(after.failedBackingOpen + after.failedPassthroughOpen, 0);
  } else {
    t.log(`passthrough off on this kernel (errno ${after.passthroughOff}): nothing to check`);
  }
});

run('without FUSE_NOTIFY_RESEND (Linux < 6.9) the read the predecessor parked is answered (EIO), never left hanging', async (t) => {
  const loader = new FuseAddonLoader();
  const content = new TestContent();
  const fx = fixture(t, content);
  const { parked } = await firstDaemon(t, fx, content, loader);
  process.env.STARLIGHT_TEST_NO_RESEND = '1';
  t.teardown(() => void delete process.env.STARLIGHT_TEST_NO_RESEND);
  const holder = await FdHolderClient.connect(loader, { socket: fx.holderSocket, readDeadlineMs: 60_000 });
  t.teardown(() => holder.close());
  const views = new FuseViewManager({ handleSignals: false, loader, holder });
  t.teardown(() => views.close());
  views.adoptFrom(holder.takeAll());
  await views.mount(fx.mnt, { tree: fx.tree, content });
  delete process.env.STARLIGHT_TEST_NO_RESEND;
  const st = views.stats(fx.mnt)!;
  t.true(st.resend < 0);
  t.is(st.failedUnmount, 1, 'the predecessor-parked read was answered with EIO by the successor');
  // The kernel retries a failed page-cache read with a fresh request, which the successor parks and serves.
  t.true(await until(() => content.pending() > 0), 'the retried read reaches the successor');
  content.release(sha(fx.files.get('parked')!));
  const p = await parked.done;
  t.is(p.code, 0, p.err);
  t.is(sha(p.out), sha(fx.files.get('parked')!));
});
