/**
 * The snapshotter under a real containerd 1.6 + runc, with a real registry: pull/unpack through
 * `--snapshotter starlight`, run containers (root and uid 1000), compare with containerd's own
 * overlayfs snapshotter (the oracle), `ctr snapshots` subcommands, and a snapshotter restart.
 * Needs root; everything lives in per-test temp dirs and is torn down on failure too.
 */
import test, { type ExecutionContext } from 'ava';
import { buildTestImage, pushTestImage, startContainerd, SNAPSHOTTER_NAME, type Containerd } from '../helpers/containerd.js';
import { startRegistry } from '../helpers/registry.js';
import { tempDir } from '../helpers/tmp.js';

const run = process.getuid?.() === 0 ? test.serial : (test.skip as typeof test.serial);

/** A script that writes a new file, deletes a lower file and reports what it sees. */
const SCRIPT = 'echo hi; echo x > /tmp/f; cat /tmp/f; cat /etc/somefile; rm /etc/somefile; ls /etc; id -u';

async function withImage(t: ExecutionContext): Promise<{ c: Containerd; ref: string }> {
  const reg = await startRegistry(t);
  const img = await buildTestImage(tempDir(t));
  await pushTestImage(reg.host, 'sltest', '1', img);
  const c = await startContainerd(t);
  return { c, ref: `${reg.host}/sltest:1` };
}

function ctrRun(c: Containerd, snapshotter: string, ref: string, id: string, script: string, extra: string[] = []): Promise<string> {
  return c.ctrOk(['run', '--rm', '--snapshotter', snapshotter, '--fifo-dir', c.fifoDir, ...extra, ref, id, 'sh', '-c', script]);
}

run('pull and run through the starlight snapshotter behave as on overlayfs', async (t) => {
  const { c, ref } = await withImage(t);
  await c.ctrOk(['images', 'pull', '--plain-http', '--snapshotter', SNAPSHOTTER_NAME, ref]);
  const out = await ctrRun(c, SNAPSHOTTER_NAME, ref, 'c1', SCRIPT);
  t.is(out, 'hi\nx\nsome\nl2file\npasswd\n0\n', 'layer 2 whiteout hides /etc/other; the container deletes a lower file');
  const again = await ctrRun(c, SNAPSHOTTER_NAME, ref, 'c2', 'cat /etc/somefile; ls /tmp');
  t.is(again, 'some\n', 'a new container sees the image unchanged');

  // Oracle: containerd's own overlayfs snapshotter on the same image.
  await c.ctrOk(['images', 'pull', '--plain-http', '--snapshotter', 'overlayfs', ref]);
  t.is(await ctrRun(c, 'overlayfs', ref, 'o1', SCRIPT), out);

  // ctr 1.6 has no `run --user`: drop to uid/gid 1000 inside the container with setpriv.
  const asUser = "setpriv --reuid 1000 --regid 1000 --clear-groups sh -c 'id -u; id -g; touch /tmp/mine && echo ok; touch /etc/nope 2>/dev/null || echo denied; ls -n /tmp/mine'";
  const user = await ctrRun(c, SNAPSHOTTER_NAME, ref, 'c3', asUser);
  t.regex(user, /^1000\n1000\nok\ndenied\n-rw-r--r-- 1 1000 1000 0 /);

  const snaps = await c.ctrOk(['snapshots', '--snapshotter', SNAPSHOTTER_NAME, 'ls']);
  t.is(snaps.trim().split('\n').slice(1).filter((l) => l.includes('Committed')).length, 2, 'one committed snapshot per layer');
  t.is(snaps.trim().split('\n').length, 3, 'containers removed their active snapshots');
});

run('ctr snapshots subcommands against the starlight snapshotter', async (t) => {
  const c = await startContainerd(t);
  const snap = (...args: string[]) => c.ctr(['snapshots', '--snapshotter', SNAPSHOTTER_NAME, ...args]);
  const ok = async (...args: string[]) => {
    const r = await snap(...args);
    t.is(r.code, 0, `ctr snapshots ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const mounts = JSON.parse(await ok('prepare', '--mounts', 'k1')) as { Type: string; Options: string[] }[];
  t.deepEqual([mounts[0]!.Type, mounts[0]!.Options], ['bind', ['rw', 'rbind']]);
  await ok('commit', 'c1', 'k1');
  t.deepEqual((JSON.parse(await ok('view', '--mounts', 'v1', 'c1')) as { Options: string[] }[])[0]!.Options, ['ro', 'rbind']);
  await ok('prepare', 'k2', 'c1');
  t.regex(await ok('mounts', '/tmp/x', 'k2'), /mount -t overlay overlay .*lowerdir=/);
  const info = JSON.parse(await ok('info', 'c1')) as { Kind: number | string; Name: string };
  t.is(info.Name, 'c1');
  t.regex(await ok('usage'), /c1/);
  await ok('label', 'c1', 'containerd.io/snapshot/x=y');
  t.regex(await ok('info', 'c1'), /containerd\.io\/snapshot\/x/);
  const ls = await ok('ls');
  for (const k of ['k2', 'c1', 'v1']) t.true(ls.includes(k), `${k} listed`);

  t.not((await snap('prepare', 'k2', 'c1')).code, 0, 'duplicate key refused');
  t.not((await snap('rm', 'c1')).code, 0, 'removing a parent refused');
  t.not((await snap('commit', 'c2', 'v1')).code, 0, 'committing a view refused');
  await ok('rm', 'v1', 'k2');
  await ok('rm', 'c1');
  t.not((await snap('rm', 'c1')).code, 0, 'removing a missing snapshot fails');
  t.is((await ok('ls')).trim().split('\n').length, 1, 'only the header is left');
});

run('containers keep working across a snapshotter restart', async (t) => {
  const { c, ref } = await withImage(t);
  await c.ctrOk(['images', 'pull', '--plain-http', '--snapshotter', SNAPSHOTTER_NAME, ref]);
  t.is(await c.restartSnapshotter('SIGTERM'), 0, 'graceful exit on SIGTERM');
  t.true(c.snapshotter.logs().some((l) => l.includes('"worker-daemon-stopped"')));
  t.is(await ctrRun(c, SNAPSHOTTER_NAME, ref, 'r1', 'cat /etc/l2file'), 'from layer 2\n');
});
