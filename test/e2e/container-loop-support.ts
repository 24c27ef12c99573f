/**
 * A container reading a lazy view in a loop, shared by the restart e2e tests (issue 13) and the
 * fault suite's containerd row (bench/faults.ts, issue 14): registry + proxy (optionally behind the
 * WAN emulator, so data still streams) + containerd with the starlight snapshotter, an image whose
 * data files a dash loop hashes forever, appending FAIL (read error) or BAD (wrong hash) lines to
 * /tmp/fails and its iteration count to /tmp/iter; helpers to poll it and to find the FUSE fd holder.
 * Cleanup: containerd's own teardown (tasks, containers, mounts) plus the holder, killed in teardown.
 */
import type { ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { WanEmulator } from '../../bench/wan/emulator.js';
import { HOLDER_SOCKET_NAME } from '../../src/worker/daemon.js';
import { buildTestImage, type Containerd, type CtrResult } from '../helpers/containerd.js';
import { tempDir } from '../helpers/tmp.js';
import { makeLayer, pushLayers, sha256, type BuiltLayer } from './proxy-support.js';
import { lazyStack } from './pull-support.js';

/** Emulated link: the data files take a few seconds to stream. */
const BANDWIDTH_BPS = 8_000_000;
const RTT_MS = 20;

export interface LoopStackOptions {
  /** Put the WAN emulator (8 Mbit/s, 20 ms) between the daemon and the proxy. */
  slow: boolean;
  /** The daemons' read deadline, s. */
  readDeadlineS: number;
  /** Data files the loop hashes, and bytes each (random). */
  dataFiles: number;
  dataBytes: number;
}

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

export interface LoopStack {
  c: Containerd;
  ref: string;
  /** path in the image → sha256 hex of its content (data/f<i> and fresh/down1..3). */
  hashes: Map<string, string>;
}

export async function loopStack(t: ExecutionContext, o: LoopStackOptions): Promise<LoopStack> {
  const { reg, c } = await lazyStack(
    t,
    async (url) => {
      if (!o.slow) return url;
      const emu = await WanEmulator.start({ target: new URL(url).host, rttMs: RTT_MS, bandwidthBps: BANDWIDTH_BPS });
      t.teardown(() => emu.close());
      return `http://${emu.address}`;
    },
    ['--read-deadline', String(o.readDeadlineS)],
  );
  t.teardown(() => killHolder(c));
  const img = await buildTestImage(tempDir(t));
  const files: Record<string, Buffer> = {};
  for (let i = 0; i < o.dataFiles; i++) files[`data/f${i}`] = randomBytes(o.dataBytes);
  for (const name of ['down1', 'down2', 'down3']) files[`fresh/${name}`] = Buffer.from(`${name}\n`);
  const layers = [...img.layers.map((l) => ({ gz: l.blob, diffID: l.diffId })), hashToolLayer(t), makeLayer(t, files)];
  await pushLayers(reg.host, 'slrestart', layers, ['/bin/sh']);
  const hashes = new Map(Object.entries(files).map(([p, b]) => [`/${p}`, createHash('sha256').update(b).digest('hex')]));
  return { c, ref: `${reg.host}/slrestart:latest`, hashes };
}

/** dash loop: hashes every data file, appends FAIL (read error) or BAD (wrong hash) lines to /tmp/fails. */
export function loopScript(hashes: Map<string, string>): string {
  const data = [...hashes].filter(([p]) => p.startsWith('/data/'));
  const ok = data.map(([p, h]) => `"${h}  ${p}"`).join('|');
  return `n=0; : > /tmp/fails; while :; do for f in ${data.map(([p]) => p).join(' ')}; do ` +
    `h=$(sha256sum $f) || { echo "FAIL $f" >> /tmp/fails; continue; }; ` +
    `case "$h" in ${ok}) ;; *) echo "BAD $h" >> /tmp/fails ;; esac; done; n=$((n+1)); echo $n > /tmp/iter; done`;
}

/** `ctr tasks exec` in the container `loop`. */
export async function exec(c: Containerd, id: string, args: string[], timeoutMs = 60_000): Promise<CtrResult> {
  return c.ctr(['tasks', 'exec', '--fifo-dir', c.fifoDir, '--exec-id', id, 'loop', ...args], { timeoutMs });
}

export async function iterations(c: Containerd, id: string): Promise<number> {
  const r = await exec(c, id, ['cat', '/tmp/iter']);
  return r.code === 0 ? Number(r.stdout.trim()) || 0 : 0;
}

/** Polls until the loop has completed `more` further iterations (its reads go on after a restart); returns the count. */
export async function loopAdvances(c: Containerd, tag: string, more = 2, timeoutMs = 90_000): Promise<number> {
  let seq = 0;
  const start = await iterations(c, `${tag}-${seq++}`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const now = await iterations(c, `${tag}-${seq++}`);
    if (now >= start + more) return now;
    if (Date.now() > deadline) throw new Error(`${tag}: the loop did not advance from ${start} within ${timeoutMs} ms (now ${now})`);
    await sleep(300);
  }
}

export async function fails(c: Containerd, id: string): Promise<string> {
  const r = await exec(c, id, ['cat', '/tmp/fails']);
  if (r.code !== 0) throw new Error(`cannot read /tmp/fails: ${r.stderr}`);
  return r.stdout;
}

/** Pids of holder processes serving `c`'s root (their command line names its socket). */
export function holders(c: Containerd): number[] {
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

export function killHolder(c: Containerd): void {
  for (const pid of holders(c)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}
