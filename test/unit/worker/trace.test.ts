/**
 * The worker's startup-trace recorder, spool and reporter on fixtures built here: order by first
 * access (addon timestamps), dedupe, time since container start, window, manual on/off, and
 * traces staying on disk until an upload is accepted.
 */
import test from 'ava';
import { readdir } from 'node:fs/promises';
import { StarlightError } from '../../../src/errors.js';
import type { MergedTree, TocEntry } from '../../../src/layers/toc.js';
import { TraceRecorder } from '../../../src/worker/trace/recorder.js';
import { TraceReporter } from '../../../src/worker/trace/reporter.js';
import { TraceSpool } from '../../../src/worker/trace/spool.js';
import type { TraceUpload } from '../../../src/worker/trace/types.js';
import { tempDir } from '../../helpers/tmp.js';
import { pollUntil } from '../../helpers/poll.js';

const L0 = 'sha256:' + '0'.repeat(64);
const L1 = 'sha256:' + '1'.repeat(64);
const d = (c: string) => 'sha256:' + c.repeat(64);
const IMAGE = { ref: 'reg.test/app:v1', manifestDigest: d('a'), platform: 'linux/amd64' };

function file(path: string, layer: number, digest: string): TocEntry {
  return { path, type: 'reg', mode: 0o755, uid: 0, gid: 0, size: 1, mtime: 0, digest, layer };
}
const TREE: MergedTree = {
  diffIDs: [L0, L1],
  entries: [
    { path: '', type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0 },
    { path: 'app', type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0, layer: 1 },
    file('app/start.sh', 1, d('b')),
    { path: 'bin', type: 'symlink', mode: 0o777, uid: 0, gid: 0, size: 0, mtime: 0, linkname: 'usr/bin', layer: 0 },
    { path: 'usr', type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0, layer: 0 },
    file('usr/bin/python3', 0, d('c')),
    file('usr/lib/libc.so.6', 0, d('e')),
  ],
};

/** A recorder on a fake clock; `clock.t` is the monotonic time in ms. */
async function setup(t: import('ava').ExecutionContext, opts: { autoWindowMs?: number } = {}) {
  const spool = await new TraceSpool(tempDir(t, 'sl-trace-')).open();
  const clock = { t: 1000 };
  let saved = 0;
  const rec = new TraceRecorder({ spool, autoWindowMs: opts.autoWindowMs ?? 30_000, now: () => clock.t, wallNow: () => 1_700_000_000_000 + clock.t, onSaved: () => saved++ });
  t.teardown(() => rec.close());
  return { spool, clock, rec, saved: () => saved };
}

test('auto mode: files in order of first access, once each, ms since the container start; dirs and symlinks left out', async (t) => {
  const { spool, clock, rec, saved } = await setup(t);
  rec.viewMounted('v/1', IMAGE, TREE); // mounted at mono 1000
  rec.accessed('v/1', 'usr/bin/python3', 5); // before the start: dropped
  clock.t = 1100;
  rec.containerStarted('v/1', 'ns/1/c1'); // start at mono 1100 = 100 ms after mount
  rec.accessed('v/1', 'app/start.sh', 102.5); // 2.5 ms after start
  rec.accessed('v/1', 'usr', 103); // dir: not a file
  rec.accessed('v/1', 'bin', 103); // symlink
  rec.accessed('v/1', 'usr/lib/libc.so.6', 150); // delivered before python3 but later in time
  rec.accessed('v/1', 'usr/bin/python3', 120);
  rec.accessed('v/1', 'app/start.sh', 200); // again: deduped
  rec.accessed('v/1', 'no/such', 130);
  rec.accessed('other/0', 'app/start.sh', 110); // another view, no trace open
  t.is(rec.state().open, 1);
  await rec.close();
  t.is(saved(), 1);
  const { traces } = await spool.pending();
  t.is(traces.length, 1);
  const body = traces[0]!.body;
  t.like(body, { version: 1, ref: IMAGE.ref, manifestDigest: IMAGE.manifestDigest, platform: 'linux/amd64' });
  t.false('group' in body);
  t.false('worker' in body);
  t.is(body.traces.length, 1);
  t.is(body.traces[0]!.startedAt, 1_700_000_001_100);
  t.is(body.traces[0]!.windowMs, 30_000);
  t.deepEqual(body.traces[0]!.entries, [
    { path: 'app/start.sh', layer: L1, digest: d('b'), ms: 2.5 },
    { path: 'usr/bin/python3', layer: L0, digest: d('c'), ms: 20 },
    { path: 'usr/lib/libc.so.6', layer: L0, digest: d('e'), ms: 50 },
  ]);
});

test('auto mode: accesses after the window are dropped; the trace is saved when the window ends', async (t) => {
  const { spool, clock, rec, saved } = await setup(t, { autoWindowMs: 40 });
  rec.viewMounted('v/1', IMAGE, TREE);
  rec.containerStarted('v/1', 'k');
  rec.accessed('v/1', 'app/start.sh', 10);
  rec.accessed('v/1', 'usr/bin/python3', 41); // past the window
  clock.t += 50;
  await pollUntil('the window timer to save the trace', () => saved() === 1); // a real timer
  await rec.flush();
  t.is(saved(), 1);
  t.is(rec.state().open, 0);
  const { traces } = await spool.pending();
  t.deepEqual(traces[0]!.body.traces[0]!.entries.map((e) => e.path), ['app/start.sh']);
});

test('manual mode: off by default with auto off; on --group records until off; a second start joins the open trace', async (t) => {
  const { spool, rec } = await setup(t, { autoWindowMs: 0 });
  rec.viewMounted('v/1', IMAGE, TREE);
  rec.containerStarted('v/1', 'k0');
  t.is(rec.state().open, 0, 'auto off and manual off: nothing recorded');
  t.deepEqual((await rec.setManual(true, 'web')).manual, { on: true, group: 'web' });
  rec.containerStarted('v/1', 'k1');
  rec.containerStarted('v/1', 'k2');
  t.is(rec.state().open, 1);
  rec.accessed('v/1', 'usr/bin/python3', 99_999); // no window in manual mode
  const st = await rec.setManual(false);
  t.deepEqual(st.manual, { on: false });
  t.is(st.open, 0);
  const { traces } = await spool.pending();
  t.is(traces.length, 1);
  t.is(traces[0]!.body.group, 'web');
  t.is(traces[0]!.body.traces[0]!.windowMs, 0);
});

test('an empty trace is not saved', async (t) => {
  const { spool, rec, saved } = await setup(t);
  rec.viewMounted('v/1', IMAGE, TREE);
  rec.containerStarted('v/1', 'k');
  await rec.close();
  t.is(saved(), 0);
  t.is((await spool.pending()).traces.length, 0);
});

function body(ref: string, startedAt: number): TraceUpload {
  return { version: 1, ref, manifestDigest: IMAGE.manifestDigest, platform: 'linux/amd64', traces: [{ startedAt, windowMs: 0, entries: [{ path: 'a', ms: 0 }] }] };
}

test('spool: traces stay on disk until an upload is accepted; batches per image; 4xx is not retriable', async (t) => {
  const dir = tempDir(t, 'sl-spool-');
  const spool = await new TraceSpool(dir).open();
  await spool.save(body('reg.test/a:1', 1));
  await spool.save(body('reg.test/a:1', 2));
  await spool.save(body('reg.test/b:1', 3));
  t.is((await readdir(dir)).length, 3);

  const down = await spool.upload(async () => {
    throw new StarlightError('SL_ERR_PROXY_UNREACHABLE', 'down');
  });
  t.is(down.uploaded, 0);
  t.is(down.pending, 3);
  t.deepEqual(down.failures.map((f) => [f.code, f.retriable, f.traces]), [['SL_ERR_PROXY_UNREACHABLE', true, 2], ['SL_ERR_PROXY_UNREACHABLE', true, 1]]);
  t.is((await readdir(dir)).length, 3, 'nothing deleted after a failed upload');

  const posted: TraceUpload[] = [];
  const r = await spool.upload(async (b) => {
    if (b.ref === 'reg.test/b:1') throw new StarlightError('SL_ERR_INVALID_ARGUMENT', 'refused');
    posted.push(b);
  });
  t.is(r.uploaded, 2);
  t.is(r.pending, 1);
  t.false(r.failures[0]!.retriable);
  t.is(posted.length, 1, 'two traces of one image in one POST');
  t.deepEqual(posted[0]!.traces.map((x) => x.startedAt), [1, 2]);
  t.deepEqual((await spool.pending()).traces.map((p) => p.body.ref), ['reg.test/b:1']);
});

test('reporter: automatic rounds retry retriable failures until the proxy takes the traces', async (t) => {
  const spool = await new TraceSpool(tempDir(t, 'sl-spool-')).open();
  await spool.save(body('reg.test/a:1', 1));
  let calls = 0;
  const reporter = new TraceReporter({
    spool,
    retryBaseMs: 10,
    post: async () => {
      if (++calls < 3) throw new StarlightError('SL_ERR_PROTOCOL_REMOTE', 'proxy 503');
    },
  });
  t.teardown(() => reporter.close());
  reporter.schedule();
  await pollUntil('the spool to drain', async () => (await spool.pending()).traces.length === 0);
  t.is(calls, 3);
  t.is((await spool.pending()).traces.length, 0);
  t.deepEqual(await reporter.report(), { uploaded: 0, pending: 0, failures: [] });
});
