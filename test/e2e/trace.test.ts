/**
 * Startup traces on the worker (issue 6), end to end: registry → `starlight proxy` → `starlight
 * snapshotter --proxy --trace-window 3 --trace-upload manual` → containerd + runc. A container runs a
 * script; the daemon records the files it read first, in order, with ms since the container start,
 * keeps the trace under <root>/traces, and `starlight report` uploads it (POST /v1/traces), after
 * which the proxy's learned order (`starlight trace show`) begins with it. `starlight trace on|off|status` drive manual mode.
 * Needs root; everything is torn down on failure too.
 */
import test from 'ava';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildTestImage, pushTestImage, SNAPSHOTTER_NAME } from '../helpers/containerd.js';
import { tempDir } from '../helpers/tmp.js';
import type { TraceUpload } from '../../src/worker/trace/types.js';
import { lazyStack, pull, starlight } from './pull-support.js';

const run = process.getuid?.() === 0 ? test.serial : (test.skip as typeof test.serial);

/** Auto-mode window the daemon is started with, s. */
const WINDOW_S = 3;
/** How long to wait for the trace to be saved after the window, ms. */
const SAVE_TIMEOUT_MS = 20_000;

run('a container start is traced: the files it read first, in order, kept until uploaded', async (t) => {
  t.timeout(120_000);
  // --no-graduate: traces record reads through the lazy view; this small image would complete (and its
  // new containers run on a plain graduated tree, untraced) before the container starts.
  const { reg, c, proxyUrl } = await lazyStack(t, async (u) => u, ['--trace-window', String(WINDOW_S), '--trace-upload', 'manual', '--worker-id', 'test-worker', '--no-graduate']);
  const img = await buildTestImage(tempDir(t));
  await pushTestImage(reg.host, 'sltrace', '1', img);
  const ref = `${reg.host}/sltrace:1`;
  await pull(t, c, ref);

  const out = await c.ctrOk(['run', '--rm', '--snapshotter', SNAPSHOTTER_NAME, '--fifo-dir', c.fifoDir, ref, 'tr1', 'sh', '-c', 'cat /etc/somefile; ls /etc > /dev/null; cat /etc/l2file']);
  t.is(out, 'some\nfrom layer 2\n');
  const dir = join(c.snapshotter.root, 'traces');
  const deadline = Date.now() + SAVE_TIMEOUT_MS;
  let files: string[] = [];
  while ((files = (await readdir(dir).catch(() => [])).filter((f) => f.endsWith('.json') && !f.startsWith('.'))).length === 0) {
    if (Date.now() > deadline) throw new Error(`no trace under ${dir} within ${SAVE_TIMEOUT_MS} ms`);
    await sleep(200);
  }
  t.is(files.length, 1);
  const body = JSON.parse(await readFile(join(dir, files[0]!), 'utf8')) as TraceUpload;
  t.like(body, { version: 1, ref, manifestDigest: img.manifestDigest, platform: 'linux/amd64', worker: 'test-worker' });
  const trace = body.traces[0]!;
  t.is(trace.windowMs, WINDOW_S * 1000);
  const paths = trace.entries.map((e) => e.path);
  t.log(paths.join(' '));
  const order = ['usr/bin/dash', 'usr/bin/cat', 'etc/somefile', 'usr/bin/ls', 'etc/l2file'];
  for (const p of order) t.true(paths.includes(p), `${p} traced`);
  const idx = order.map((p) => paths.indexOf(p));
  t.deepEqual([...idx].sort((a, b) => a - b), idx, `first-access order ${order.join(' < ')}`);
  t.is(new Set(paths).size, paths.length, 'each path once');
  t.false(paths.some((p) => p === '' || p === 'etc' || p === 'bin'), 'only files are listed');
  for (let i = 1; i < trace.entries.length; i++) t.true(trace.entries[i]!.ms >= trace.entries[i - 1]!.ms);
  t.true(trace.entries.every((e) => e.ms >= 0 && e.ms <= WINDOW_S * 1000));
  const l2 = trace.entries.find((e) => e.path === 'etc/l2file')!;
  t.is(l2.layer, img.layers[1]!.diffId, 'the layer supplying the file');
  t.regex(String(l2.digest), /^sha256:[0-9a-f]{64}$/);

  // Manual mode through the CLI.
  const on = await starlight(['trace', 'on', '--group', 'web', '--daemon', c.snapshotter.apiSocket, '--json']);
  t.is(on.code, 0, on.stderr);
  t.like(JSON.parse(on.stdout), { manual: { on: true, group: 'web' }, autoWindowMs: WINDOW_S * 1000, upload: 'manual', pending: 1 });
  const bad = await starlight(['trace', 'on', '--group', '../x', '--daemon', c.snapshotter.apiSocket]);
  t.not(bad.code, 0);
  const off = await starlight(['trace', 'off', '--daemon', c.snapshotter.apiSocket, '--json']);
  t.like(JSON.parse(off.stdout), { manual: { on: false }, open: 0 });

  // Upload: the proxy takes it, the worker's copy is deleted, and the proxy's learned order starts
  // with the files the container read first, in that order.
  const rep = await starlight(['report', '--daemon', c.snapshotter.apiSocket]);
  t.is(rep.code, 0, rep.stderr);
  t.regex(rep.stdout, /uploaded 1 trace/);
  const left = (await readdir(dir)).filter((f) => f.endsWith('.json') && !f.startsWith('.'));
  t.deepEqual(left, [], 'the trace is deleted once the proxy took it');
  const show = await starlight(['trace', 'show', ref, '--proxy', proxyUrl, '--json']);
  t.is(show.code, 0, show.stderr);
  const learned = (JSON.parse(show.stdout) as { entries: { path: string; rank: number }[] }).entries.map((e) => e.path);
  const tracedFiles = paths.filter((p) => learned.includes(p));
  t.deepEqual(learned.slice(0, tracedFiles.length), tracedFiles, 'the learned order begins with the trace');
});
