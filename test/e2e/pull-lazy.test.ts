/**
 * Lazy pulls end to end: registry → `starlight proxy` → `starlight snapshotter --proxy` (FUSE views)
 * → containerd 1.6 + runc. `starlight pull` records the image in containerd through the daemon's
 * API; `ctr run --snapshotter starlight` starts it on the lazy view. Needs root; every process,
 * mount and temp dir is torn down on failure too.
 */
import test from 'ava';
import { buildTestImage, pushTestImage, SNAPSHOTTER_NAME, type Containerd } from '../helpers/containerd.js';
import { tempDir } from '../helpers/tmp.js';
import { lazyStack, pull, starlight } from './pull-support.js';

const run = process.getuid?.() === 0 ? test.serial : (test.skip as typeof test.serial);

const SCRIPT = 'echo hi; echo x > /tmp/f; cat /tmp/f; cat /etc/somefile; rm /etc/somefile; ls /etc; id -u';

function ctrRun(c: Containerd, ref: string, id: string, script: string): Promise<string> {
  return c.ctrOk(['run', '--rm', '--snapshotter', SNAPSHOTTER_NAME, '--fifo-dir', c.fifoDir, ref, id, 'sh', '-c', script]);
}

run('starlight pull + ctr run: lazy snapshots with overlay semantics, non-root, restart, status', async (t) => {
  // --no-graduate: this test is about containers on the lazy view (the tiny image completes at once
  // and would graduate; graduation.test.ts covers that path, restart included).
  const { reg, c } = await lazyStack(t, undefined, ['--no-graduate']);
  const img = await buildTestImage(tempDir(t));
  await pushTestImage(reg.host, 'sltest', '1', img);
  const ref = `${reg.host}/sltest:1`;

  const out = await pull(t, c, ref);
  t.regex(out, new RegExp(`${ref} ${img.manifestDigest}`));
  const logs = c.snapshotter.logs();
  t.true(logs.some((l) => l.includes('"image-pull-started"')), 'image-pull-started logged');
  t.is(logs.filter((l) => l.includes('"remote-snapshot-prepared"')).length, 2, 'one remote snapshot per layer');
  t.regex(await c.ctrOk(['images', 'ls', '-q']), new RegExp(ref.replace(/[.]/g, '\\.')));
  const snaps = await c.ctrOk(['snapshots', '--snapshotter', SNAPSHOTTER_NAME, 'ls']);
  t.is(snaps.trim().split('\n').slice(1).filter((l) => l.includes('Committed')).length, 2);

  t.is(await ctrRun(c, ref, 'c1', SCRIPT), 'hi\nx\nsome\nl2file\npasswd\n0\n', 'whiteout, write and delete of a lower file as on overlayfs');
  t.is(await ctrRun(c, ref, 'c2', 'cat /etc/somefile'), 'some\n', 'a new container sees the image unchanged');
  const asUser = "setpriv --reuid 1000 --regid 1000 --clear-groups sh -c 'id -u; touch /tmp/mine && echo ok; touch /etc/nope 2>/dev/null || echo denied'";
  t.is(await ctrRun(c, ref, 'c3', asUser), '1000\nok\ndenied\n');

  const st = await starlight(['status', '--daemon', c.snapshotter.apiSocket, '--json']);
  t.is(st.code, 0, st.stderr);
  const status = JSON.parse(st.stdout) as { images: { manifestDigest: string; files: number; filesPresent: number }[]; timings: { op: string; subject: string; phases: Record<string, number> }[] };
  t.is(status.images[0]?.manifestDigest, img.manifestDigest);
  // Issue 19: one timed record per pull and per view mount, with the phases the bench prints.
  const pullRec = status.timings.find((r) => r.op === 'pull' && r.subject === ref);
  t.truthy(pullRec?.phases['pull.header'] !== undefined && pullRec.phases['containerd-snapshots'] !== undefined, JSON.stringify(status.timings));
  const viewRec = status.timings.find((r) => r.op === 'view' && r.subject.startsWith(img.manifestDigest + '/'));
  // The pull built the view's inode table while containerd answered; the mount used it.
  t.true(viewRec !== undefined && viewRec.phases['inode-table-prebuilt'] !== undefined && viewRec.phases['inode-table'] === undefined && viewRec.phases['fuse-mount'] !== undefined, JSON.stringify(status.timings));
  t.true(viewRec?.phases['tree-reused'] !== undefined && viewRec.phases['merge'] === undefined, 'the top view reuses the tree the pull merged');

  // Restart: the image, its snapshots and its view come back; a new container starts.
  await c.ctrOk(['run', '-d', '--snapshotter', SNAPSHOTTER_NAME, '--fifo-dir', c.fifoDir, ref, 'long', 'sh', '-c', 'while :; do cat /etc/somefile > /dev/null; done']);
  const beforeStop = await c.ctrOk(['tasks', 'ls']);
  t.regex(beforeStop, /long\s+\d+\s+RUNNING/, 'the long-running container runs before the restart');
  t.is(await c.restartSnapshotter('SIGTERM'), 0);
  t.log(`tasks after restart: ${JSON.stringify(await c.ctrOk(['tasks', 'ls']))}`);
  t.is(await ctrRun(c, ref, 'r1', 'cat /etc/l2file'), 'from layer 2\n');
  // Issue 13: the view outlives the daemon (held by the fd holder, adopted by the new daemon), so a
  // container running across the restart keeps reading its lower files (this asserted ENOTCONN before).
  const old = await c.ctr(['tasks', 'exec', '--fifo-dir', c.fifoDir, '--exec-id', 'e1', 'long', 'cat', '/etc/l2file'], { timeoutMs: 20_000 });
  t.is(old.code, 0, `exec in the running container after the restart: ${old.stderr}`);
  t.is(old.stdout, 'from layer 2\n');
  t.regex(await c.ctrOk(['tasks', 'ls']), /long\s+\d+\s+RUNNING/, 'the long-running container survived the restart');
  t.true(c.snapshotter.logs().some((l) => l.includes('"fuse-view-adopted"')), 'the new daemon adopted the held view');
  await c.ctr(['tasks', 'kill', '-s', 'SIGKILL', 'long'], { timeoutMs: 10_000 });
  t.true(c.snapshotter.logs().some((l) => l.includes('"remote-view-mounted"')));
});
