/**
 * Fault-injection suite (issue 14): real docker-registry, `starlight proxy`, the WAN emulator and
 * `starlight mount` (FUSE) as child processes; each fault is injected while a reader reads, and every
 * read is checked against the bytes the test wrote into the image. Prints one table row per fault:
 * outcome, wrong bytes served (reads that returned bytes other than the image's), hangs (reads or
 * waits past their deadline), data lost (files not right once the fault is over).
 *
 *   npm run faults                      (= npm run build && node dist/bench/faults.js)
 *   node dist/bench/faults.js --only killed,bitflip
 *
 * Needs root, FUSE, docker-registry, zstd, GNU tar (as the e2e mount tests). Everything started is
 * stopped and every mount detached at the end of each fault, also when it fails. Exit code 1 if any
 * row has wrong bytes, hangs or lost data.
 *
 * Not here: proxy-side hostile layers (tar/zstd bombs: the proxy's own tests), speed (bench/run.ts).
 */
import type { ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { open, readFile, writeFile } from 'node:fs/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls';
import { parseArgs, promisify } from 'node:util';
import type { LayerSpec } from '../fixtures/image-writer.js';
import { LocalContentStore } from '../src/worker/cas/store.js';
import { startCli, startProxyCli, type CliProcess } from '../test/helpers/cli.js';
import { FIXTURES } from '../test/helpers/fixtures.js';
import { blobDataPath, startRegistry } from '../test/helpers/registry.js';
import { tempDir } from '../test/helpers/tmp.js';
import { selfSignedCert } from '../test/helpers/tls.js';
import { teardownContext } from './lib/teardown-context.js';
import { detachMount, pushLayers, startMount, startStack, warmProxy, type TestImage } from '../test/e2e/mount-support.js';
import { exec, fails, loopAdvances, loopScript, loopStack } from '../test/e2e/container-loop-support.js';
import { starlight } from '../test/e2e/pull-support.js';
import { SNAPSHOTTER_NAME, TEST_NAMESPACE } from '../test/helpers/containerd.js';

const run = promisify(execFile);
const MIB = 1024 * 1024;
/** --read-deadline of every mount, s. */
const DEADLINE_S = 3;
/** A read (or wait) taking longer than this is a hang, ms: the read deadline plus room for a loaded machine. */
const HANG_MS = DEADLINE_S * 1000 + 30_000;
const sha256 = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

interface Row {
  fault: string;
  outcome: string;
  wrongBytes: number;
  hangs: number;
  dataLost: number;
}

/** What a fault records while it runs. */
class Tally {
  wrongBytes = 0;
  hangs = 0;
  dataLost = 0;
  notes: string[] = [];
  note(s: string): void {
    this.notes.push(s);
  }
}

type ReadResult = { code: string; bytes?: Buffer; ms: number };

/**
 * Reads [offset, offset+length) of `path` (whole file if length is undefined), bounded by HANG_MS:
 * a read still pending then counts as a hang (it is left to the unmount). Bytes that differ from
 * `expected` count as wrong bytes.
 */
async function checkedRead(tally: Tally, path: string, expected: Buffer, offset = 0, length?: number): Promise<ReadResult> {
  const t0 = Date.now();
  const want = length ?? expected.length - offset;
  const attempt = (async (): Promise<ReadResult> => {
    const fh = await open(path, 'r');
    try {
      const buf = Buffer.alloc(want);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await fh.read(buf, got, want - got, offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return { code: '', bytes: buf.subarray(0, got), ms: Date.now() - t0 };
    } finally {
      await fh.close();
    }
  })().catch((err: unknown): ReadResult => ({ code: (err as NodeJS.ErrnoException).code ?? String(err), ms: Date.now() - t0 }));
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<ReadResult>((resolve) => (timer = setTimeout(() => resolve({ code: 'HANG', ms: Date.now() - t0 }), HANG_MS)));
  const r: ReadResult = await Promise.race([attempt, hang]);
  clearTimeout(timer);
  if (r.code === 'HANG') tally.hangs++;
  if (r.bytes !== undefined && !r.bytes.equals(expected.subarray(offset, offset + r.bytes.length))) {
    tally.wrongBytes++;
    tally.note(`WRONG BYTES from ${path} at ${offset}`);
  }
  if (r.bytes !== undefined && r.bytes.length !== Math.min(want, expected.length - offset)) tally.note(`short read of ${path}`);
  return r;
}

/** Waits for a line/log with HANG-style accounting; false (and a hang counted) on timeout. */
async function waitOrHang(tally: Tally, what: string, p: Promise<unknown>): Promise<boolean> {
  try {
    await p;
    return true;
  } catch (err) {
    tally.hangs++;
    tally.note(`${what}: ${(err as Error).message.split('\n')[0]}`);
    return false;
  }
}

/** Every file of `files` read whole through the mount must be right (else: data lost). */
async function verifyAll(tally: Tally, mnt: string, files: Map<string, Buffer>): Promise<void> {
  for (const [p, data] of files) {
    const r = await checkedRead(tally, join(mnt, p), data);
    if (r.code !== '' || r.bytes === undefined || !r.bytes.equals(data)) {
      tally.dataLost++;
      tally.note(`${p}: ${r.code || 'wrong'} after the fault`);
    }
  }
}

/** The image every fault uses: the rootfs fixture, a 64 MiB incompressible file and a few small ones. */
interface FaultImage {
  img: TestImage;
  big: Buffer;
  /** Regular files by path with their bytes (what the mount must show). */
  files: Map<string, Buffer>;
}

const BIG_PATH = 'data/big.bin';

async function faultImage(t: ExecutionContext, reg: Awaited<ReturnType<typeof startRegistry>>, name: string, bigBytes = 64 * MIB): Promise<FaultImage> {
  const big = randomBytes(bigBytes);
  const small = new Map<string, Buffer>([
    ['data/a.txt', Buffer.from('alpha\n')],
    ['data/b.bin', randomBytes(200_000)],
  ]);
  const layers: LayerSpec[] = [
    ...FIXTURES.find((f) => f.name === 'rootfs')!.layers,
    {
      compression: 'gzip',
      entries: [
        { path: 'data', type: 'dir' },
        ...[...small].map(([path, content]) => ({ path, type: 'reg' as const, content })),
        { path: BIG_PATH, type: 'reg', content: big },
      ],
    },
  ];
  const img = await pushLayers(t, reg, name, layers);
  const files = new Map(small);
  files.set(BIG_PATH, big);
  return { img, big, files };
}

// ---------------------------------------------------------------------------------------------
// Faults

async function proxyKilled(t: ExecutionContext, tally: Tally): Promise<string> {
  const reg = await startRegistry(t);
  const fi = await faultImage(t, reg, 'killed');
  const stack = await startStack(t, reg, { bandwidthBps: 16_000_000 });
  const m = await startMount(t, stack.proxyUrl, fi.img.ref, { readDeadlineS: DEADLINE_S });
  // The big file streams for ~35 s at 16 Mbit/s: kill the proxy while it is mid-item.
  await checkedRead(tally, join(m.mountpoint, 'data/a.txt'), fi.files.get('data/a.txt')!);
  const mid = Date.now() + 60_000;
  while (!m.logs().some((l) => l.msg === 'image-pull-started') && Date.now() < mid) await sleep(100);
  await sleep(4000);
  await stack.proxy.stop('SIGKILL');
  const head = await checkedRead(tally, join(m.mountpoint, BIG_PATH), fi.big, 0, 4096);
  const whole = await checkedRead(tally, join(m.mountpoint, BIG_PATH), fi.big);
  await stack.restartProxy();
  const done = await waitOrHang(tally, 'complete after restart', m.waitForLine(/^complete$/, 240_000));
  await verifyAll(tally, m.mountpoint, fi.files);
  return `head read: ${head.code || 'right bytes'}; whole file while down: ${whole.code || 'right bytes'} (${(whole.ms / 1000).toFixed(1)} s); restart: ${done ? 'resumed to complete' : 'NOT complete'}`;
}

async function bitFlip(t: ExecutionContext, tally: Tally): Promise<string> {
  const reg = await startRegistry(t);
  const fi = await faultImage(t, reg, 'bitflip');
  const stack = await startStack(t, reg, { bandwidthBps: 64_000_000 });
  await warmProxy(stack, fi.img.ref);
  // The proxy's cached copy gets one bit flipped at byte 100; its layer blob in the registry is
  // damaged too, so the proxy cannot heal the item and sends the bad bytes.
  const d = fi.img.merged.entries.find((e) => e.path === BIG_PATH)!.digest!;
  const cached = join(stack.dataDir, 'content/sha256', d.slice(7, 9), d.slice(7));
  const c = await readFile(cached);
  if (!c.equals(fi.big)) throw new Error(`${cached} is not stored identity; cannot flip a bit of it`);
  c[100]! ^= 0x01;
  await writeFile(cached, c);
  const blob = blobDataPath(reg, sha256(await readFile(fi.img.blobs.at(-1)!)));
  const b = await readFile(blob);
  b[b.length >> 1]! ^= 0xff;
  await writeFile(blob, b);
  const m = await startMount(t, stack.proxyUrl, fi.img.ref, { readDeadlineS: DEADLINE_S });
  const head = await checkedRead(tally, join(m.mountpoint, BIG_PATH), fi.big, 0, 4096);
  const again = await checkedRead(tally, join(m.mountpoint, BIG_PATH), fi.big, 0, 4096);
  await verifyAll(tally, m.mountpoint, new Map([...fi.files].filter(([p]) => p !== BIG_PATH)));
  const logged = await m.waitForLog('content-verify-failed', 30_000).then(
    () => true,
    () => false,
  );
  return `first 4 KiB: ${head.code || 'bytes'} in ${(head.ms / 1000).toFixed(1)} s, again: ${again.code || 'bytes'}; content-verify-failed ${logged ? 'logged' : 'NOT logged'}; other files right`;
}

/** A TCP relay whose connections can be frozen (no data, no FIN/RST: a half-open peer). */
async function freezableRelay(target: string): Promise<{ url: string; freeze(): void; close(): Promise<void> }> {
  const [host, port] = target.split(':') as [string, string];
  const socks = new Set<Socket>();
  let frozen = false;
  const server: Server = createServer((c) => {
    const u = connect(Number(port), host);
    socks.add(c).add(u);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
    c.on('close', () => (socks.delete(c), u.destroy()));
    u.on('close', () => (socks.delete(u), c.destroy()));
    if (frozen) return; // accepted, never answered
    c.pipe(u);
    u.pipe(c);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${addr.port}`,
    freeze() {
      frozen = true;
      for (const s of socks) {
        s.unpipe();
        s.pause();
      }
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of socks) s.destroy();
        server.close(() => r());
      }),
  };
}

async function stalled(t: ExecutionContext, tally: Tally): Promise<string> {
  const reg = await startRegistry(t);
  const fi = await faultImage(t, reg, 'stalled');
  const stack = await startStack(t, reg, { bandwidthBps: 16_000_000 });
  const relay = await freezableRelay(new URL(stack.proxyUrl).host);
  t.teardown(() => relay.close());
  const m = await startMount(t, relay.url, fi.img.ref, { readDeadlineS: DEADLINE_S });
  await sleep(3000);
  relay.freeze();
  const head = await checkedRead(tally, join(m.mountpoint, BIG_PATH), fi.big, 0, 4096);
  const whole = await checkedRead(tally, join(m.mountpoint, BIG_PATH), fi.big);
  const alive = !m.hasExited();
  return `link frozen (no RST): head read ${head.code || 'right bytes'}, whole file ${whole.code || 'right bytes'} after ${(whole.ms / 1000).toFixed(1)} s; mount ${alive ? 'alive' : 'EXITED'}`;
}

async function truncatedBlob(t: ExecutionContext, tally: Tally): Promise<string> {
  const reg = await startRegistry(t);
  const fi = await faultImage(t, reg, 'truncated', 8 * MIB);
  const stack = await startStack(t, reg, { bandwidthBps: 0 });
  const first = await startMount(t, stack.proxyUrl, fi.img.ref, { readDeadlineS: DEADLINE_S });
  await waitOrHang(tally, 'complete', first.waitForLine(/^complete$/, 120_000));
  await first.stop('SIGKILL');
  await detachMount(first.mountpoint);
  // Power cut: the big blob lost its tail, the 200 kB one was zeroed (same size).
  const blobOf = (p: string): string => {
    const d = fi.img.merged.entries.find((e) => e.path === p)!.digest!;
    return new LocalContentStore(join(first.root, 'content')).blobPath(d.slice(7));
  };
  for (const [p, how] of [
    [BIG_PATH, 'truncate'],
    ['data/b.bin', 'zero'],
  ] as const) {
    const path = blobOf(p);
    chmodSync(path, 0o644);
    if (how === 'truncate') truncateSync(path, 4096);
    else writeFileSync(path, Buffer.alloc(fi.files.get(p)!.length));
  }
  const second = await startMount(t, stack.proxyUrl, fi.img.ref, { readDeadlineS: DEADLINE_S, root: first.root, mountpoint: first.mountpoint });
  const check = second.logs().find((l) => l.msg === 'cas-recovered');
  await verifyAll(tally, second.mountpoint, fi.files);
  return `restart after kill -9: ${check ? `re-verified ${String(check.verified)} blobs, dropped ${String(check.dropped)}` : 'NO start-up check'}; every file read back right`;
}

async function diskFull(t: ExecutionContext, tally: Tally): Promise<string> {
  const reg = await startRegistry(t);
  const fi = await faultImage(t, reg, 'diskfull');
  const stack = await startStack(t, reg, { bandwidthBps: 0 });
  const root = tempDir(t, 'sl-faults-tmpfs-');
  await run('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', root]);
  t.teardown(() => run('umount', ['-l', root]).catch(() => undefined));
  const m = await startMount(t, stack.proxyUrl, fi.img.ref, { readDeadlineS: DEADLINE_S, root });
  const big = await checkedRead(tally, join(m.mountpoint, BIG_PATH), fi.big);
  const head = await checkedRead(tally, join(m.mountpoint, BIG_PATH), fi.big, 0, 4096);
  const fullLogged = m.logs().some((l) => JSON.stringify(l).includes('SL_ERR_DISK_FULL'));
  await verifyAll(tally, m.mountpoint, new Map([...fi.files].filter(([p]) => p !== BIG_PATH)));
  return `24 MiB tmpfs root, 64 MiB file: whole read ${big.code || 'right bytes'}, head ${head.code || 'right bytes'}; SL_ERR_DISK_FULL ${fullLogged ? 'logged' : 'not logged'}; small files right; mount ${m.hasExited() ? 'EXITED' : 'alive'}`;
}

async function registryDown(t: ExecutionContext, tally: Tally): Promise<string> {
  const reg = await startRegistry(t);
  const fi = await faultImage(t, reg, 'regdown');
  const stack = await startStack(t, reg, { bandwidthBps: 0 });
  // The proxy indexes on first contact: the registry goes away as the mount asks for the image.
  const root = tempDir(t, 'sl-faults-root-');
  const mnt = join(tempDir(t, 'sl-faults-mnt-'), 'mnt');
  t.teardown(() => detachMount(mnt));
  const p = startCli(t, ['mount', '--proxy', stack.proxyUrl, '--root', root, '--read-deadline', String(DEADLINE_S), fi.img.ref, mnt], { env: { STARLIGHT_LOG: 'info' }, name: 'mount' });
  await sleep(300);
  await reg.stop();
  const exit = await boundedExit(tally, p);
  void fi;
  return `mount ${exit}`;
}

async function wrongToken(t: ExecutionContext, tally: Tally): Promise<string> {
  const reg = await startRegistry(t);
  const fi = await faultImage(t, reg, 'token', MIB);
  const dir = tempDir(t, 'sl-faults-proxy-');
  await writeFile(join(dir, 'tokens'), 'right-token\n');
  const proxy = await startProxyCli(t, ['--registry', reg.url, '--listen', '127.0.0.1:0', '--data', join(dir, 'data'), '--token-file', join(dir, 'tokens')], { env: { STARLIGHT_LOG: 'warn' } });
  const root = tempDir(t, 'sl-faults-root-');
  const mnt = join(tempDir(t, 'sl-faults-mnt-'), 'mnt');
  t.teardown(() => detachMount(mnt));
  const p = startCli(t, ['mount', '--proxy', proxy.url, '--root', root, '--token', 'wrong-token', fi.img.ref, mnt], { env: { STARLIGHT_LOG: 'info' }, name: 'mount' });
  const exit = await boundedExit(tally, p);
  const unauth = p.stderr().includes('UNAUTHORIZED') || p.stderr().includes('401');
  return `mount ${exit}; ${unauth ? 'unauthorized reported' : 'NO unauthorized error'}`;
}

/** A man in the middle over plain HTTP flips bytes deep in the delta stream (content of the big file). */
async function mitmContent(t: ExecutionContext, tally: Tally): Promise<string> {
  const reg = await startRegistry(t);
  const fi = await faultImage(t, reg, 'mitm', 16 * MIB);
  const stack = await startStack(t, reg, { bandwidthBps: 0 });
  await warmProxy(stack, fi.img.ref);
  // Rewrites the response stream: every byte at stream offset ≡ 0 mod 1 MiB past 64 KiB is inverted.
  const [host, port] = new URL(stack.proxyUrl).host.split(':') as [string, string];
  let tampered = 0;
  const server = createServer((c) => {
    const u = connect(Number(port), host);
    let off = 0;
    c.pipe(u);
    u.on('data', (chunk: Buffer) => {
      for (let i = 0; i < chunk.length; i++) {
        const at = off + i;
        if (at > 65536 && at % MIB === 0) {
          chunk[i]! ^= 0xff;
          tampered++;
        }
      }
      off += chunk.length;
      c.write(chunk);
    });
    u.on('end', () => c.end());
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const m = await startMount(t, url, fi.img.ref, { readDeadlineS: DEADLINE_S });
  const head = await checkedRead(tally, join(m.mountpoint, BIG_PATH), fi.big, 0, 4096);
  const whole = await checkedRead(tally, join(m.mountpoint, BIG_PATH), fi.big);
  return `${tampered} bytes changed in transit: head ${head.code || 'right bytes'}, whole ${whole.code || 'right bytes'}`;
}

/**
 * A man in the middle of the worker's TLS connection to the proxy. Over plain HTTP nothing anchors a
 * TOC to the registry's digests (the proxy derives it), so an attacker who rewrites one TOC digest
 * and that file's content consistently is not detectable: that is why a non-loopback proxy needs TLS
 * (or an explicit --insecure). Over TLS the attacker has only a certificate of its own, and the
 * worker must refuse it before reading any header; the same mount through the proxy itself works.
 */
async function mitmTls(t: ExecutionContext, tally: Tally): Promise<string> {
  const reg = await startRegistry(t);
  const fi = await faultImage(t, reg, 'mitmtls', MIB);
  const dir = tempDir(t, 'sl-faults-tls-');
  const real = selfSignedCert(dir, 'proxy');
  const fake = selfSignedCert(dir, 'mitm');
  const proxy = await startProxyCli(t, ['--registry', reg.url, '--listen', '127.0.0.1:0', '--data', join(dir, 'data'), '--tls-cert', real.cert, '--tls-key', real.key], { env: { STARLIGHT_LOG: 'warn' } });
  const trust = { NODE_EXTRA_CA_CERTS: real.cert };
  const direct = await startMount(t, proxy.url, fi.img.ref, { readDeadlineS: DEADLINE_S, env: trust });
  const viaProxy = await checkedRead(tally, join(direct.mountpoint, BIG_PATH), fi.big);

  const { hostname, port } = new URL(proxy.url);
  let connections = 0;
  const server = createTlsServer({ cert: readFileSync(fake.cert), key: readFileSync(fake.key) }, (c) => {
    const u = tlsConnect({ host: hostname, port: Number(port), ca: readFileSync(real.cert) });
    c.pipe(u).pipe(c);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  });
  server.on('connection', () => connections++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const root = tempDir(t, 'sl-faults-root-');
  const mnt = join(tempDir(t, 'sl-faults-mnt-'), 'mnt');
  t.teardown(() => detachMount(mnt));
  const url = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
  const p = startCli(t, ['mount', '--proxy', url, '--root', root, '--read-deadline', String(DEADLINE_S), fi.img.ref, mnt], { env: { ...trust, STARLIGHT_LOG: 'info' }, name: 'mount' });
  const exit = await boundedExit(tally, p);
  const mounted = p.lines().some((l) => l.startsWith('mounted '));
  if (mounted) tally.note('the worker accepted a certificate it does not trust');
  const why = /certificate|self[- ]signed/i.test(p.stderr()) ? 'the error names the certificate' : 'the error does NOT name the certificate';
  return `through the proxy: ${viaProxy.code || 'right bytes'}; through the man in the middle (${connections} connection(s)): ${mounted ? 'MOUNTED' : 'nothing mounted'}, mount ${exit}, ${why}`;
}

/**
 * containerd runs a container whose loop hashes files of a lazy view while they still stream (8 Mbit/s
 * link); the snapshotter daemon is SIGKILLed and restarted (the FUSE fd holder keeps the view, the new
 * daemon adopts it and resumes the pull). Wrong bytes: BAD lines of the loop (a hash other than the
 * image's); hangs: the loop not advancing within the bound; data lost: a data file hashing wrong once
 * the pull is complete.
 */
async function snapshotterKilled(t: ExecutionContext, tally: Tally): Promise<string> {
  if (!existsSync('/usr/bin/containerd')) return 'skipped: no containerd';
  const { c, ref, hashes } = await loopStack(t, { slow: true, readDeadlineS: 15, dataFiles: 4, dataBytes: 4 * MIB });
  const pulled = await starlight(['pull', '--daemon', c.snapshotter.apiSocket, '-n', TEST_NAMESPACE, ref]);
  if (pulled.code !== 0) throw new Error(`starlight pull ${ref}: ${pulled.stderr.trim()}`);
  await c.ctrOk(['run', '-d', '--snapshotter', SNAPSHOTTER_NAME, '--fifo-dir', c.fifoDir, ref, 'loop', 'sh', '-c', loopScript(hashes)]);
  const streaming = !c.snapshotter.logs().some((l) => l.includes('"delta-complete"'));
  const t0 = Date.now();
  await c.restartSnapshotter('SIGKILL');
  const back = ((Date.now() - t0) / 1000).toFixed(1);
  const adopted = c.snapshotter.logs().some((l) => l.includes('"fuse-view-adopted"'));
  const resumed = c.snapshotter.logs().some((l) => l.includes('"image-pull-resumed"'));
  let iteration = 0;
  const advanced = await waitOrHang(tally, 'loop after the restart', loopAdvances(c, 'after-kill', 2, 120_000).then((n) => (iteration = n)));
  const complete = await waitOrHang(
    tally,
    'pull complete after the restart',
    (async () => {
      for (const end = Date.now() + 120_000; !c.snapshotter.logs().some((l) => l.includes('"delta-complete"')); await sleep(200)) {
        if (Date.now() > end) throw new Error('no delta-complete within 120 s');
      }
    })(),
  );
  const lines = (await fails(c, 'fails')).split('\n').filter(Boolean);
  const bad = lines.filter((l) => l.startsWith('BAD')).length;
  const failed = lines.filter((l) => l.startsWith('FAIL')).length;
  tally.wrongBytes += bad;
  if (bad > 0) tally.note(`${bad} wrong hash(es) in the container`);
  // Once complete, every data file hashes right. A `ctr tasks exec` that exits 0 without output (seen
  // once under load) is asked again rather than counted; another hash is wrong bytes and data lost.
  let n = 0;
  for (const [path, hex] of hashes) {
    if (!path.startsWith('/data/')) continue;
    let r = await exec(c, `final-${n++}`, ['sha256sum', path]);
    if (r.code === 0 && r.stdout.trim() === '') {
      tally.note(`${path}: ctr exec printed nothing, asked again`);
      r = await exec(c, `final-${n++}`, ['sha256sum', path]);
    }
    if (r.code !== 0 || !r.stdout.startsWith(hex)) {
      tally.dataLost++;
      if (r.code === 0) tally.wrongBytes++;
      tally.note(`${path}: ${r.code !== 0 ? r.stderr.trim() : `wrong hash (${JSON.stringify(r.stdout.slice(0, 80))})`} after the fault`);
    }
  }
  return (
    `killed ${streaming ? 'mid-pull' : 'after the pull completed (slow machine?)'}; containerd redialed the new daemon after ${back} s; ` +
    `view ${adopted ? 'adopted' : 'NOT adopted'}, pull ${resumed ? 'resumed' : 'not resumed'}${complete ? ' to complete' : ''}; ` +
    `container loop ${advanced ? `went on (iteration ${iteration})` : 'STUCK'}, ${failed} failed read(s), ${bad} wrong hash(es)`
  );
}

/** Waits for `p` to exit (bounded); describes how. */
async function boundedExit(tally: Tally, p: CliProcess): Promise<string> {
  const t0 = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([p.exited, new Promise<null>((res) => (timer = setTimeout(() => res(null), 120_000)))]);
  clearTimeout(timer);
  if (r === null) {
    tally.hangs++;
    return 'did NOT exit within 120 s';
  }
  const code = /"code":"(SL_ERR_[A-Z_]+)"/.exec(p.stderr())?.[1] ?? /(SL_ERR_[A-Z_]+)/.exec(p.stderr())?.[1] ?? '?';
  return `exited ${r.code} after ${((Date.now() - t0) / 1000).toFixed(1)} s (${code})`;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const FAULTS: { key: string; name: string; run: (t: ExecutionContext, tally: Tally) => Promise<string> }[] = [
  { key: 'killed', name: 'proxy killed (SIGKILL) mid-item, then restarted', run: proxyKilled },
  { key: 'bitflip', name: 'proxy serves a corrupted item (bit flip at byte 100 of 64 MiB; reader reads first 4 KiB)', run: bitFlip },
  { key: 'stalled', name: 'stalled half-open stream (link frozen, no RST)', run: stalled },
  { key: 'truncated', name: 'CAS blobs truncated / zeroed after kill -9 (power cut), restart', run: truncatedBlob },
  { key: 'diskfull', name: 'disk full mid-pull (24 MiB tmpfs root)', run: diskFull },
  { key: 'regdown', name: 'registry down while the proxy indexes', run: registryDown },
  { key: 'token', name: 'wrong token', run: wrongToken },
  { key: 'mitm', name: 'man in the middle (plain HTTP) changing content bytes in transit', run: mitmContent },
  { key: 'mitmtls', name: 'man in the middle of a TLS proxy connection (own certificate; could rewrite a TOC digest and its content)', run: mitmTls },
  { key: 'snapkill', name: 'snapshotter daemon killed (SIGKILL) and restarted while containerd runs a container reading a lazy view mid-pull', run: snapshotterKilled },
];

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { only: { type: 'string' } } });
  const only = values.only?.split(',');
  const rows: Row[] = [];
  for (const f of FAULTS) {
    if (only && !only.includes(f.key)) continue;
    const tally = new Tally();
    const ctx = teardownContext();
    let outcome: string;
    const t0 = Date.now();
    try {
      outcome = await f.run(ctx.t, tally);
    } catch (err) {
      outcome = `SUITE ERROR: ${(err as Error).message.split('\n')[0]}`;
    } finally {
      await ctx.teardown();
    }
    if (tally.notes.length) outcome += ` [${tally.notes.join('; ')}]`;
    rows.push({ fault: f.name, outcome: `${outcome} (${((Date.now() - t0) / 1000).toFixed(0)} s)`, wrongBytes: tally.wrongBytes, hangs: tally.hangs, dataLost: tally.dataLost });
    console.error(`# ${f.key}: ${outcome}`);
  }
  console.log('| fault | outcome | wrong bytes served | hangs past the deadline | data lost |');
  console.log('|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.fault} | ${r.outcome} | ${r.wrongBytes} | ${r.hangs} | ${r.dataLost} |`);
  return rows.some((r) => r.wrongBytes > 0 || r.hangs > 0 || r.dataLost > 0 || r.outcome.startsWith('SUITE ERROR')) ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(2);
  },
);
