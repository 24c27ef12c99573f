/**
 * Kernel FUSE passthrough of complete files (native/passthrough.*): complete files are read
 * correctly without daemon reads, also through an overlayfs mounted on top (the container rootfs
 * shape); a file that completes while it is open in cached mode stays readable; passthrough off and
 * a refused backing file (content on a stacked filesystem) fall back to daemon reads, logged once.
 * Root only (FUSE, overlayfs).
 */
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createLogger } from '../../src/log.js';
import type { MergedTree, TocEntry } from '../../src/layers/toc.js';
import { FuseViewManager, type FuseViewOptions } from '../../src/worker/fs/fuse-views.js';
import type { ContentProvider } from '../../src/worker/fs/view.js';
import { tempDir } from '../helpers/tmp.js';
import { pollUntil } from '../helpers/poll.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const isMounted = (mnt: string): boolean => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === mnt);

interface Fixture {
  dir: string;
  mnt: string;
  views: FuseViewManager;
  data: Map<string, Buffer>;
  /** Makes a file that was absent at mount complete and wakes its waiters. */
  release: (path: string) => void;
  warnings: string[];
}

/** A view of big (4 MiB + 1), small and empty files, plus `late` (absent until release('late')). */
async function setup(t: ExecutionContext, opts: FuseViewOptions = {}, casDir?: string): Promise<Fixture> {
  const dir = tempDir(t, 'starlight-fs-pt-');
  const cas = casDir ?? join(dir, 'cas');
  const mnt = join(dir, 'mnt');
  mkdirSync(cas, { recursive: true });
  mkdirSync(mnt);
  const data = new Map<string, Buffer>([
    ['big', randomBytes(4 * 1024 * 1024 + 1)],
    ['small', Buffer.from('hello, passthrough\n')],
    ['empty', Buffer.alloc(0)],
    ['late', randomBytes(300 * 1024 + 3)],
  ]);
  const files = new Map<string, string>();
  const absent = new Set(['late']);
  const waiters: { digest: string; resolve: (p: string) => void }[] = [];
  const entries: TocEntry[] = [{ path: '', type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0 }];
  for (const [path, bytes] of data) {
    writeFileSync(join(cas, path), bytes);
    files.set(path, join(cas, path));
    entries.push({ path, type: 'reg', mode: 0o644, uid: 0, gid: 0, size: bytes.length, mtime: 0, digest: path });
  }
  entries.sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
  const content: ContentProvider = {
    locate: (d) => (absent.has(d) ? null : (files.get(d) ?? null)),
    waitFor: (d) => (absent.has(d) ? new Promise((resolve) => waiters.push({ digest: d, resolve })) : Promise.resolve(files.get(d)!)),
  };
  const warnings: string[] = [];
  const log = createLogger({ level: 'warn', sink: (line) => void warnings.push(String((JSON.parse(line) as { msg?: unknown }).msg)) });
  const views = new FuseViewManager({ handleSignals: false, log, ...opts });
  t.teardown(() => views.destroy());
  const tree: MergedTree = { diffIDs: [], entries };
  await views.mount(mnt, { tree, content });
  const release = (path: string): void => {
    absent.delete(path);
    for (const w of waiters.splice(0)) w.resolve(files.get(w.digest)!);
  };
  return { dir, mnt, views, data, release, warnings };
}

/** Reads every complete file through `root` in a child process (sha256sum), compares with data. */
function checkAll(t: ExecutionContext, root: string, data: Map<string, Buffer>, paths: string[]): void {
  const out = execFileSync('sha256sum', paths.map((p) => join(root, p)), { encoding: 'utf8', timeout: 30_000 });
  const got = new Map(out.trim().split('\n').map((l) => [l.slice(66).slice(root.length + 1), l.slice(0, 64)]));
  for (const p of paths) t.is(got.get(p), sha(data.get(p)!), p);
}

test.serial('complete files are read through passthrough, correctly, also under overlayfs', async (t) => {
  const fx = await setup(t);
  checkAll(t, fx.mnt, fx.data, ['big', 'small', 'empty']);
  const st = fx.views.stats(fx.mnt)!;
  t.is(st.passthrough, 1, 'the kernel accepted FUSE_PASSTHROUGH');
  t.true(st.passthroughOpens >= 2);
  t.is(st.reads, 0, 'no read reached the daemon');
  t.deepEqual(fx.warnings, []);

  // The container rootfs shape: overlay(lower = view, upper = local dir).
  const ovl = join(fx.dir, 'ovl');
  for (const d of ['ovl', 'upper', 'work']) mkdirSync(join(fx.dir, d));
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${fx.mnt},upperdir=${join(fx.dir, 'upper')},workdir=${join(fx.dir, 'work')}`, ovl]);
  t.teardown(() => void (isMounted(ovl) && execFileSync('umount', ['-l', ovl])));
  checkAll(t, ovl, fx.data, ['big', 'small', 'empty']);
  // A write through the overlay copies the file up and leaves the view's content untouched.
  await writeFile(join(ovl, 'small'), 'changed\n', { flag: 'a' });
  t.is(await readFile(join(ovl, 'small'), 'utf8'), 'hello, passthrough\nchanged\n');
  t.is(sha(await readFile(join(fx.mnt, 'small'))), sha(fx.data.get('small')!));
  execFileSync('umount', [ovl]);
  t.is(fx.views.stats(fx.mnt)!.reads, 0);
});

test.serial('a file that completes while open in cached mode stays readable, then goes passthrough', async (t) => {
  const fx = await setup(t);
  const late = fx.data.get('late')!;
  const first = await open(join(fx.mnt, 'late'), 'r'); // cached open: content absent
  t.teardown(() => first.close().catch(() => {}));
  const reading = first.read(Buffer.alloc(late.length), 0, late.length, 0);
  await pollUntil('the read of late to park', () => fx.views.stats(fx.mnt)!.parkedNow > 0);
  fx.release('late');
  t.is(sha((await reading).buffer.subarray(0, late.length)), sha(late));
  // Complete now, but an open in cached mode is live: the next open must not be passthrough (the
  // kernel would refuse it with EIO).
  const before = fx.views.stats(fx.mnt)!.passthroughOpens;
  t.is(sha(await readFile(join(fx.mnt, 'late'))), sha(late));
  t.is(fx.views.stats(fx.mnt)!.passthroughOpens, before);
  await first.close();
  // The kernel sends RELEASE asynchronously: until it is served, opens stay cached (still correct).
  await pollUntil('an open of late in passthrough mode', () => {
    checkAll(t, fx.mnt, fx.data, ['late']);
    return fx.views.stats(fx.mnt)!.passthroughOpens > before;
  });
  t.is(fx.views.stats(fx.mnt)!.passthroughOpens, before + 1);
});

test.serial('passthrough off: complete files are read through the daemon', async (t) => {
  const fx = await setup(t, { passthrough: false });
  checkAll(t, fx.mnt, fx.data, ['big', 'small']);
  const st = fx.views.stats(fx.mnt)!;
  t.is(st.passthrough, 0);
  t.is(st.passthroughOpens, 0);
  t.true(st.reads > 0);
});

test.serial('a backing file the kernel refuses (content on overlayfs) falls back, logged once', async (t) => {
  // Content on an overlayfs mount: its stack depth (1) is not below the view's max_stack_depth (1).
  const base = tempDir(t, 'starlight-fs-pt-cas-');
  for (const d of ['lower', 'upper', 'work', 'cas']) mkdirSync(join(base, d));
  const cas = join(base, 'cas');
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${join(base, 'lower')},upperdir=${join(base, 'upper')},workdir=${join(base, 'work')}`, cas]);
  t.teardown(() => void (isMounted(cas) && execFileSync('umount', ['-l', cas])));
  const fx = await setup(t, {}, cas);
  checkAll(t, fx.mnt, fx.data, ['big', 'small']);
  await pollUntil('the passthrough-off warning', () => fx.warnings.includes('fuse-passthrough-off')); // the event reaches JS asynchronously
  const st = fx.views.stats(fx.mnt)!;
  t.is(st.passthroughOpens, 0);
  t.true(st.passthroughOff > 0, 'the errno of the refusal is reported');
  t.true(st.reads > 0);
  t.deepEqual(fx.warnings.filter((w) => w === 'fuse-passthrough-off'), ['fuse-passthrough-off']);
  await fx.views.unmount(fx.mnt); // before the overlay teardown
});
