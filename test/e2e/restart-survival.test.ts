/**
 * Issue 13: running containers survive a daemon restart, crash or upgrade. A container on a lazy view
 * hashes files in a loop (some still streaming behind the WAN emulator) while the daemon is
 * SIGKILLed, SIGTERMed and restarted from another build dir; the fd holder keeps the views' FUSE
 * connections and the new daemon adopts them. Also: a read issued while no daemon runs completes
 * after the restart, one with no restart fails EIO at the read deadline, and 20 SIGKILL restarts
 * leak no fds, mounts or holders. Needs root; everything is torn down on failure too.
 */
import test, { type ExecutionContext } from 'ava';
import { copyFileSync, cpSync, existsSync, readFileSync, readdirSync, readlinkSync, realpathSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { SNAPSHOTTER_NAME, type Containerd } from '../helpers/containerd.js';
import { tempDir } from '../helpers/tmp.js';
import { exec, fails, holders, loopAdvances as advances, loopScript, loopStack, type LoopStack } from './container-loop-support.js';
import { pull, starlight } from './pull-support.js';

const run = process.getuid?.() === 0 ? test.serial : (test.skip as typeof test.serial);

const DATA_FILES = 4;
const DATA_BYTES = 1536 << 10;
/** The daemons' read deadline, s: also how long the holder waits for a daemon before answering EIO. */
const READ_DEADLINE_S = 15;
const POLL_TIMEOUT_MS = 90_000;
const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

function stack(t: ExecutionContext, slow: boolean): Promise<LoopStack> {
  return loopStack(t, { slow, readDeadlineS: READ_DEADLINE_S, dataFiles: DATA_FILES, dataBytes: DATA_BYTES });
}

/** Polls until the loop has completed `more` further iterations (its reads go on after a restart). */
async function loopAdvances(t: ExecutionContext, c: Containerd, tag: string, more = 2): Promise<void> {
  const now = await advances(c, tag, more, POLL_TIMEOUT_MS);
  t.log(`${tag}: loop at iteration ${now}`);
}

async function pollUntil(cond: () => boolean, ms = 10_000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(50)) if (cond()) return true;
  return cond();
}

function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

function fuseMountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(' - fuse') && l.split(' ')[4]?.startsWith(dir))
    .map((l) => l.split(' ')[4]!);
}

/** A copy of this build (bin, dist, build, proto, package.json) in a temp dir: a simulated upgrade. */
function otherBuild(t: ExecutionContext): string {
  const dir = tempDir(t, 'sl-upgrade-');
  for (const d of ['bin', 'dist', 'build', 'proto']) cpSync(join(REPO_ROOT, d), join(dir, d), { recursive: true });
  copyFileSync(join(REPO_ROOT, 'package.json'), join(dir, 'package.json'));
  symlinkSync(realpathSync(join(REPO_ROOT, 'node_modules')), join(dir, 'node_modules'));
  return join(dir, 'bin', 'starlight.js');
}

run('a container hashing files keeps running across SIGKILL, SIGTERM and an upgrade; reads wait for the restart; EIO at the deadline without one', async (t) => {
  t.timeout(600_000);
  const { c, ref, hashes } = await stack(t, true);
  await pull(t, c, ref);
  await c.ctrOk(['run', '-d', '--snapshotter', SNAPSHOTTER_NAME, '--fifo-dir', c.fifoDir, ref, 'loop', 'sh', '-c', loopScript(hashes)]);
  const st = await c.ctrOk(['tasks', 'ls']);
  t.regex(st, /loop\s+\d+\s+RUNNING/);

  // (b) SIGKILL while the data still streams.
  const streaming = !c.snapshotter.logs().some((l) => l.includes('"delta-complete"'));
  t.log(`killed ${streaming ? 'while streaming' : 'after the stream completed (slow machine?)'}`);
  t.is(await c.restartSnapshotter('SIGKILL'), null);
  t.true(c.snapshotter.logs().some((l) => l.includes('"fuse-view-adopted"')), 'the new daemon adopted the view');
  if (streaming) t.true(c.snapshotter.logs().some((l) => l.includes('"image-pull-resumed"')), 'the unfinished stream resumed');
  const id = await exec(c, 'fresh-id', ['id', '-u']);
  t.is(id.code, 0, `a never-run binary after SIGKILL: ${id.stderr}`);
  t.is(id.stdout, '0\n');
  await loopAdvances(t, c, 'kill');

  // (a) SIGTERM: a clean stop leaves the views mounted.
  t.is(await c.restartSnapshotter('SIGTERM'), 0);
  const ls = await exec(c, 'fresh-ls', ['ls', '/fresh']);
  t.is(ls.code, 0, `a never-run binary after SIGTERM: ${ls.stderr}`);
  t.is(ls.stdout, 'down1\ndown2\ndown3\n');
  await loopAdvances(t, c, 'term');

  // (c) restart into another build dir (simulated upgrade).
  t.is(await c.restartSnapshotter('SIGTERM', otherBuild(t)), 0);
  const mk = await exec(c, 'fresh-mkdir', ['mkdir', '/tmp/upgraded']);
  t.is(mk.code, 0, `a never-run binary after the upgrade: ${mk.stderr}`);
  await loopAdvances(t, c, 'upgrade');
  t.is(await fails(c, 'fails-1'), '', 'zero failed reads and identical hashes across the three restarts');

  // A read issued while no daemon runs waits and completes after the restart.
  await c.snapshotter.stop('SIGKILL');
  const waiting = exec(c, 'down-read', ['cat', '/fresh/down1'], 120_000);
  const early = await Promise.race([waiting.then(() => 'done'), sleep(1_000).then(() => 'waiting')]);
  t.is(early, 'waiting', 'the read waits while no daemon runs');
  await c.restartSnapshotter('SIGKILL');
  const down = await waiting;
  t.is(down.code, 0, down.stderr);
  t.is(down.stdout, 'down1\n');
  t.is(await fails(c, 'fails-2'), '', 'zero failed reads after a read during the downtime');

  // With no restart within the read deadline, a read fails with EIO (the holder answers), not a hang.
  // (The loop's own opens fail from then on too: its failures are no longer counted.)
  await c.snapshotter.stop('SIGKILL');
  const t0 = Date.now();
  // An absolute path: runc's PATH search would turn an EIO on a not-yet-cached lookup of another PATH
  // dir (/usr/local/sbin/cat…) into "executable file not found" (seen once in 3 runs).
  const eio = await exec(c, 'eio-read', ['/usr/bin/cat', '/fresh/down2'], 120_000);
  t.log(`read with no daemon: exit ${eio.code} after ${Date.now() - t0} ms: ${eio.stdout.trim()} ${eio.stderr.trim()}`);
  t.not(eio.code, 0);
  t.regex(eio.stdout + eio.stderr, /input\/output error/i);
  await c.restartSnapshotter('SIGKILL');
  // The loop's own task may not outlive the EIO phase: a page fault of its shell answered EIO while
  // no daemon ran kills it with SIGBUS (seen when other work dropped the page cache every few
  // seconds, session 9). That is the EIO contract at work, not the view failing: then the view is
  // read where the container's overlay reads it, at its mountpoint.
  const tasks = (await c.ctr(['tasks', 'ls'])).stdout;
  if (/loop\s+\d+\s+RUNNING/.test(tasks)) {
    const after = await exec(c, 'after-eio', ['cat', '/fresh/down3']);
    t.is(after.code, 0, `the view serves again after the restart: ${after.stderr}`);
    t.is(after.stdout, 'down3\n');
  } else {
    t.log(`the loop stopped during the EIO phase; tasks: ${tasks.trim()}`);
    const views = fuseMountsUnder(c.dir).filter((m) => existsSync(join(m, 'fresh')));
    t.is(views.length, 1, `one view holds /fresh after the restart: ${views.join(', ')}`);
    t.is(readFileSync(join(views[0]!, 'fresh', 'down3'), 'utf8'), 'down3\n', 'the view serves again after the restart');
  }
});

run('SIGKILL + restart 20 times: no leaked fds, mounts or holders; the container keeps reading', async (t) => {
  t.timeout(900_000);
  const { c, ref, hashes } = await stack(t, false);
  await pull(t, c, ref);
  await c.ctrOk(['run', '-d', '--snapshotter', SNAPSHOTTER_NAME, '--fifo-dir', c.fifoDir, ref, 'loop', 'sh', '-c', loopScript(hashes)]);
  await loopAdvances(t, c, 'start', 1);
  await c.restartSnapshotter('SIGKILL');
  const [holder] = holders(c);
  t.truthy(holder, 'a holder runs');
  const base = { holderFds: fdCount(holder!), daemonFds: fdCount(c.snapshotter.pid()!), mounts: fuseMountsUnder(c.dir).length };
  t.log(`baseline: ${JSON.stringify(base)}`);
  for (let i = 0; i < 20; i++) {
    await c.restartSnapshotter('SIGKILL');
    const r = await exec(c, `cat-${i}`, ['cat', `/fresh/down${(i % 3) + 1}`]);
    t.is(r.code, 0, `round ${i}: ${r.stderr}`);
  }
  await loopAdvances(t, c, 'end', 1);
  t.deepEqual(holders(c), [holder!], 'one holder, the same one');
  const end = { holderFds: fdCount(holder!), daemonFds: fdCount(c.snapshotter.pid()!), mounts: fuseMountsUnder(c.dir).length };
  t.log(`after 20 rounds: ${JSON.stringify(end)}`);
  t.is(end.holderFds, base.holderFds, 'the holder leaks no fds');
  t.is(end.mounts, base.mounts, 'no extra FUSE mounts');
  t.true(end.daemonFds <= base.daemonFds + 4, `the daemon's fds stay flat (${base.daemonFds} → ${end.daemonFds})`);
  t.is(await fails(c, 'fails'), '', 'zero failed reads across 20 crashes');
  // The daemon's own fd of each adopted view: exactly one /dev/fuse per held view.
  const devFuse = readdirSync(`/proc/${c.snapshotter.pid()!}/fd`).filter((fd) => {
    try {
      return readlinkSync(`/proc/${c.snapshotter.pid()!}/fd/${fd}`) === '/dev/fuse';
    } catch {
      return false;
    }
  }).length;
  t.is(devFuse, end.mounts, 'one /dev/fuse fd per mounted view in the daemon');

  // A clean stop leaves the view mounted and held; --shutdown-views is the explicit unmount of all.
  t.is(await c.snapshotter.stop('SIGTERM'), 0);
  t.is(fuseMountsUnder(c.dir).length, end.mounts, 'a clean stop leaves the views mounted');
  const shut = await starlight(['snapshotter', '--root', c.snapshotter.root, '--shutdown-views']);
  t.is(shut.code, 0, shut.stderr);
  t.regex(shut.stdout, /1 held view\(s\) released/);
  t.deepEqual(fuseMountsUnder(c.dir), [], '--shutdown-views unmounts every view');
  t.true(await pollUntil(() => holders(c).length === 0), 'and ends the holder');
});
