/**
 * Issue 13: running containers survive a daemon restart, crash or upgrade. A container on a lazy view
 * hashes files in a loop (some still streaming behind the WAN emulator) while the daemon is
 * SIGKILLed, SIGTERMed and restarted from another build dir; the fd holder keeps the views' FUSE
 * connections and the new daemon adopts them. Also: a read issued while no daemon runs completes
 * after the restart, one with no restart fails EIO at the read deadline, and 20 SIGKILL restarts
 * leak no fds, mounts or holders. Needs root; everything is torn down on failure too.
 */
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, cpSync, mkdirSync, readFileSync, readdirSync, readlinkSync, realpathSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { WanEmulator } from '../../bench/wan/emulator.js';
import { HOLDER_SOCKET_NAME } from '../../src/worker/daemon.js';
import { buildTestImage, SNAPSHOTTER_NAME, type Containerd } from '../helpers/containerd.js';
import { tempDir } from '../helpers/tmp.js';
import { makeLayer, pushLayers, sha256, type BuiltLayer } from './proxy-support.js';
import { lazyStack, pull, starlight } from './pull-support.js';

const run = process.getuid?.() === 0 ? test.serial : (test.skip as typeof test.serial);

/** Emulated link: the data files below take a few seconds to stream. */
const BANDWIDTH_BPS = 8_000_000;
const RTT_MS = 20;
const DATA_FILES = 4;
const DATA_BYTES = 1536 << 10;
/** The daemons' read deadline, s: also how long the holder waits for a daemon before answering EIO. */
const READ_DEADLINE_S = 15;
const POLL_TIMEOUT_MS = 90_000;
const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** A layer with /usr/bin/sha256sum (mode 755; makeLayer writes 644). */
function hashToolLayer(t: ExecutionContext): BuiltLayer {
  const dir = tempDir(t, 'sl-hashtool-');
  const root = join(dir, 'root');
  mkdirSync(join(root, 'usr/bin'), { recursive: true });
  copyFileSync('/usr/bin/sha256sum', join(root, 'usr/bin/sha256sum'));
  chmodSync(join(root, 'usr/bin/sha256sum'), 0o755);
  const tarPath = join(dir, 'layer.tar');
  execFileSync('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-C', root, '-cf', tarPath, '.']);
  const tar = readFileSync(tarPath);
  return { gz: gzipSync(tar), diffID: sha256(tar) };
}

interface Stack {
  c: Containerd;
  ref: string;
  /** path in the image → sha256 hex of its content. */
  hashes: Map<string, string>;
}

async function stack(t: ExecutionContext, slow: boolean): Promise<Stack> {
  const { reg, c } = await lazyStack(
    t,
    async (url) => {
      if (!slow) return url;
      const emu = await WanEmulator.start({ target: new URL(url).host, rttMs: RTT_MS, bandwidthBps: BANDWIDTH_BPS });
      t.teardown(() => emu.close());
      return `http://${emu.address}`;
    },
    ['--read-deadline', String(READ_DEADLINE_S)],
  );
  t.teardown(() => killHolder(c));
  const img = await buildTestImage(tempDir(t));
  const files: Record<string, Buffer> = {};
  for (let i = 0; i < DATA_FILES; i++) files[`data/f${i}`] = randomBytes(DATA_BYTES);
  for (const name of ['down1', 'down2', 'down3']) files[`fresh/${name}`] = Buffer.from(`${name}\n`);
  const layers = [...img.layers.map((l) => ({ gz: l.blob, diffID: l.diffId })), hashToolLayer(t), makeLayer(t, files)];
  await pushLayers(reg.host, 'slrestart', layers, ['/bin/sh']);
  const hashes = new Map(Object.entries(files).map(([p, b]) => [`/${p}`, createHash('sha256').update(b).digest('hex')]));
  return { c, ref: `${reg.host}/slrestart:latest`, hashes };
}

/** dash loop: hashes every data file, appends FAIL (read error) or BAD (wrong hash) lines to /tmp/fails. */
function loopScript(hashes: Map<string, string>): string {
  const data = [...hashes].filter(([p]) => p.startsWith('/data/'));
  const ok = data.map(([p, h]) => `"${h}  ${p}"`).join('|');
  return `n=0; : > /tmp/fails; while :; do for f in ${data.map(([p]) => p).join(' ')}; do ` +
    `h=$(sha256sum $f) || { echo "FAIL $f" >> /tmp/fails; continue; }; ` +
    `case "$h" in ${ok}) ;; *) echo "BAD $h" >> /tmp/fails ;; esac; done; n=$((n+1)); echo $n > /tmp/iter; done`;
}

async function exec(c: Containerd, id: string, args: string[], timeoutMs = 60_000) {
  return c.ctr(['tasks', 'exec', '--fifo-dir', c.fifoDir, '--exec-id', id, 'loop', ...args], { timeoutMs });
}

async function iterations(c: Containerd, id: string): Promise<number> {
  const r = await exec(c, id, ['cat', '/tmp/iter']);
  return r.code === 0 ? Number(r.stdout.trim()) || 0 : 0;
}

/** Polls until the loop has completed `more` further iterations (its reads go on after a restart). */
async function loopAdvances(t: ExecutionContext, c: Containerd, tag: string, more = 2): Promise<void> {
  let seq = 0;
  const start = await iterations(c, `${tag}-${seq++}`);
  const deadline = Date.now() + POLL_TIMEOUT_MS;
  for (;;) {
    const now = await iterations(c, `${tag}-${seq++}`);
    if (now >= start + more) return void t.log(`${tag}: loop at iteration ${now}`);
    if (Date.now() > deadline) throw new Error(`${tag}: the loop did not advance from ${start} within ${POLL_TIMEOUT_MS} ms (now ${now})`);
    await sleep(300);
  }
}

async function fails(c: Containerd, id: string): Promise<string> {
  const r = await exec(c, id, ['cat', '/tmp/fails']);
  if (r.code !== 0) throw new Error(`cannot read /tmp/fails: ${r.stderr}`);
  return r.stdout;
}

/** Pids of holder processes serving `c`'s root (their command line names its socket). */
function holders(c: Containerd): number[] {
  const socket = join(c.snapshotter.root, HOLDER_SOCKET_NAME);
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      if (cmd[0]?.endsWith('starlight-fuse-holder') && cmd[1] === socket) out.push(Number(p));
    } catch {
      // gone
    }
  }
  return out;
}

function killHolder(c: Containerd): void {
  for (const pid of holders(c)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
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
  const eio = await exec(c, 'eio-read', ['cat', '/fresh/down2'], 120_000);
  t.log(`read with no daemon: exit ${eio.code} after ${Date.now() - t0} ms: ${eio.stdout.trim()} ${eio.stderr.trim()}`);
  t.not(eio.code, 0);
  t.regex(eio.stdout + eio.stderr, /input\/output error/i);
  await c.restartSnapshotter('SIGKILL');
  const after = await exec(c, 'after-eio', ['cat', '/fresh/down3']);
  t.is(after.code, 0, `the view serves again after the restart: ${after.stderr}`);
  t.is(after.stdout, 'down3\n');
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
