/**
 * Native failures of the FUSE addon are self-diagnosing: when a complete file's content file
 * vanishes or shrinks after the mount marked it present, the addon answers natively (EIO / short
 * data) without asking JS, and FuseViewManager logs `fuse-native-error` naming the mountpoint, the
 * file, the cause and the errno; the per-cause stats count it. Root only (FUSE).
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdirSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createLogger } from '../../src/log.js';
import type { MergedTree, TocEntry } from '../../src/layers/toc.js';
import { FuseViewManager, type FuseViewOptions } from '../../src/worker/fs/fuse-views.js';
import type { ContentProvider } from '../../src/worker/fs/view.js';
import { tempDir } from '../helpers/tmp.js';
import { pollUntil } from '../helpers/poll.js';

/** How long to wait for an asynchronously delivered native-error event, in ms. */
const EVENT_WAIT_MS = 3000;

interface Rec {
  msg: string;
  level: string;
  mountpoint?: string;
  path?: string;
  cause?: string;
  errno?: string;
}

interface Fixture {
  mnt: string;
  cas: string;
  views: FuseViewManager;
  data: Map<string, Buffer>;
  records: Rec[];
}

/** A view of complete files `gone`, `short` and `ok`, all present (located) at mount time. */
async function setup(t: ExecutionContext, opts: FuseViewOptions): Promise<Fixture> {
  const dir = tempDir(t, 'starlight-fs-diag-');
  const cas = join(dir, 'cas');
  const mnt = join(dir, 'mnt');
  mkdirSync(cas);
  mkdirSync(mnt);
  const data = new Map<string, Buffer>([
    ['gone', randomBytes(64 * 1024)],
    ['ok', Buffer.from('still fine\n')],
    ['short', randomBytes(32 * 1024)],
  ]);
  const entries: TocEntry[] = [{ path: '', type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0 }];
  for (const [path, bytes] of data) {
    writeFileSync(join(cas, path), bytes);
    entries.push({ path, type: 'reg', mode: 0o644, uid: 0, gid: 0, size: bytes.length, mtime: 0, digest: path });
  }
  // Present files: locate() and waitFor() both answer the CAS path, as the real store does.
  const content: ContentProvider = {
    locate: (d) => join(cas, d),
    waitFor: (d) => Promise.resolve(join(cas, d)),
  };
  const records: Rec[] = [];
  const log = createLogger({ level: 'warn', sink: (line) => void records.push(JSON.parse(line) as Rec) });
  const views = new FuseViewManager({ handleSignals: false, log, ...opts });
  t.teardown(() => views.destroy());
  const tree: MergedTree = { diffIDs: [], entries };
  await views.mount(mnt, { tree, content });
  return { mnt, cas, views, data, records };
}

function waitForRecord(records: Rec[], match: (r: Rec) => boolean): Promise<Rec | undefined> {
  return pollUntil('a fuse-native-error record', () => records.find(match), { timeoutMs: EVENT_WAIT_MS }).catch(() => undefined);
}

const nativeError = (path: string, cause: string) => (r: Rec): boolean => r.msg === 'fuse-native-error' && r.path === path && r.cause === cause;

for (const passthrough of [false, true]) {
  test.serial(`a vanished content file fails with EIO and is logged as fuse-native-error (passthrough ${passthrough})`, async (t) => {
    const fx = await setup(t, { passthrough });
    unlinkSync(join(fx.cas, 'gone'));
    const err = await readFile(join(fx.mnt, 'gone')).then(() => undefined, (e: unknown) => e as NodeJS.ErrnoException);
    t.is(err?.code, 'EIO');
    const rec = await waitForRecord(fx.records, nativeError('gone', 'content-open'));
    t.truthy(rec, JSON.stringify(fx.records));
    t.is(rec?.level, 'warn');
    t.is(rec?.mountpoint, fx.mnt);
    t.is(rec?.errno, 'ENOENT');
    const st = fx.views.stats(fx.mnt)!;
    t.true(st.failedContentOpen >= 1);
    t.true(st.failed >= 1);
    if (st.passthrough === 1) {
      // The backing file could not be registered either: said once, for this file.
      t.truthy(await waitForRecord(fx.records, nativeError('gone', 'passthrough-backing')), JSON.stringify(fx.records));
      t.true(st.failedBackingOpen >= 1);
    }
    // Other files are unaffected.
    t.deepEqual(await readFile(join(fx.mnt, 'ok')), fx.data.get('ok'));
    // A storm on the same file is reported once (per inode and cause).
    for (let i = 0; i < 5; i++) await readFile(join(fx.mnt, 'gone')).catch(() => undefined);
    // Events reach JS in order: once a later file's event is in, any repeat of 'gone' would be too.
    unlinkSync(join(fx.cas, 'short'));
    await readFile(join(fx.mnt, 'short')).catch(() => undefined);
    t.truthy(await waitForRecord(fx.records, nativeError('short', 'content-open')), JSON.stringify(fx.records));
    t.is(fx.records.filter(nativeError('gone', 'content-open')).length, 1);
  });
}

test.serial('a content file shorter than its inode is logged as a short content read', async (t) => {
  const fx = await setup(t, { passthrough: false });
  truncateSync(join(fx.cas, 'short'), 1000);
  const got = await readFile(join(fx.mnt, 'short'));
  t.true(got.length < fx.data.get('short')!.length);
  const rec = await waitForRecord(fx.records, nativeError('short', 'content-read'));
  t.truthy(rec, JSON.stringify(fx.records));
  t.is(rec?.errno, 'short-read');
  t.true(fx.views.stats(fx.mnt)!.failedContentRead >= 1);
});
