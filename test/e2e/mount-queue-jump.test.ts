/**
 * Issue 11 acceptance, on-demand reads jump the queue: real docker-registry, `starlight proxy` (warm),
 * the WAN emulator throttling the worker's link so that the whole image takes well over 10 s, and
 * `starlight mount` (FUSE), as child processes. A read of the last file of the planned order, made
 * while the stream is early, returns the right bytes long before the stream would have reached that
 * file — judged by the stream's own progress (bytes the link delivered), not by a wall-clock limit —
 * and it came by the stream's session (POST /v1/sessions/<id>/next), not by a second transfer
 * (no GET /v1/content, no jump fallback).
 * Needs root, FUSE, docker-registry (as the other mount tests).
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LayerSpec } from '../../fixtures/image-writer.js';
import { metrics } from './proxy-support.js';
import { mountSupported, plannedHeader, pushLayers, sleep, startMount, startRegistryFor, startStack, warmProxy } from './mount-support.js';

const serial = mountSupported ? test.serial : (test.skip as typeof test.serial);

const MIB = 1024 * 1024;
/** 64 incompressible files of 1 MiB at 48 Mbit/s: the stream needs ≥ 11 s for the image. */
const FILES = 64;
const BANDWIDTH_BPS = 48_000_000;
/** The read starts once the link has delivered this share of the image. */
const START_SHARE = 0.1;
/**
 * When the read returns, the link must have delivered less than this share of the bytes planned
 * before the file (what the stream needs to reach it). What it delivers meanwhile is the bytes
 * already queued ahead of the bump (socket buffers, the link: a few MB) and the file itself.
 */
const MAX_SHARE_AT_RETURN = 0.6;

const sha256 = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

serial('a read of the last planned file, while the stream is early, jumps the queue over the stream session', async (t) => {
  t.timeout(240_000);
  const reg = await startRegistryFor(t);
  const data = new Map<string, Buffer>();
  for (let i = 0; i < FILES; i++) data.set(`data/f${String(i).padStart(3, '0')}.bin`, randomBytes(MIB));
  const layers: LayerSpec[] = [{ compression: 'gzip', entries: [{ path: 'data', type: 'dir' }, ...[...data].map(([path, content]) => ({ path, type: 'reg' as const, content }))] }];
  const img = await pushLayers(t, reg, 'jump', layers);
  const stack = await startStack(t, reg, { bandwidthBps: BANDWIDTH_BPS });
  await warmProxy(stack, img.ref);
  const header = await plannedHeader(stack, img.ref);
  const total = header.items.reduce((a, it) => a + it.encodedSize, 0);
  t.true((total * 8) / BANDWIDTH_BPS >= 10, `the whole image needs ≥ 10 s on the link (${total} bytes)`);
  const last = header.items.length - 1;
  const target = header.items[last]!;
  const path = [...data.keys()].find((p) => sha256(data.get(p)!) === target.digest);
  t.truthy(path, 'the last planned item is one of the files');
  const beforeTarget = total - target.encodedSize;

  const m = await startMount(t, stack.proxyUrl, img.ref);
  const before = await metrics(stack.proxy.url);
  const deadline = Date.now() + 120_000;
  while (stack.wan.stats().bytesDown < START_SHARE * total && Date.now() < deadline) await sleep(20);
  const atStart = stack.wan.stats().bytesDown;
  t.true(atStart < beforeTarget / 2, `the stream is early when the read starts (${atStart} of ${beforeTarget} bytes before the file)`);

  const got = await readFile(join(m.mountpoint, path!));
  const atReturn = stack.wan.stats().bytesDown;
  const after = await metrics(stack.proxy.url);
  t.log(`read started at ${(atStart / MIB).toFixed(1)} MiB, returned at ${(atReturn / MIB).toFixed(1)} MiB of the ${(beforeTarget / MIB).toFixed(1)} MiB the stream sends before the file`);

  t.true(got.equals(data.get(path!)!), `${path} has the right bytes`);
  t.true(atReturn < MAX_SHARE_AT_RETURN * beforeTarget, `the read returned when the stream had delivered ${atReturn} of the ${beforeTarget} bytes ahead of the file`);
  t.false(m.lines().includes('complete'), 'the stream was still running');
  const delta = (name: string): number => (after.get(name) ?? 0) - (before.get(name) ?? 0);
  t.true(delta('starlight_proxy_session_bumps_total') >= 1, 'the worker bumped the item on its stream session');
  t.is(delta('starlight_proxy_content_requests_total'), 0, 'no out-of-order GET /v1/content');
  t.is(m.logs().filter((l) => l.msg === 'content-jump-fallback' || l.msg === 'content-jump-failed').length, 0, 'the jump neither failed nor fell back');
  t.true(stack.wan.stats().connections <= 2, `at most two connections over the link, the stream and the bump (${stack.wan.stats().connections})`);
});
