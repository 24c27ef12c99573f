/**
 * Worker failover between proxy replicas (issue 15): `starlight mount --proxy A,B` where A and B are
 * `starlight proxy --db …` on one real PostgreSQL. A (behind the WAN emulator, so the stream is slow)
 * is SIGKILLed mid-stream; the worker resumes from B at the item where it stopped, and the mounted
 * tree, every file's sha256 included, equals the overlayfs oracle (GNU-tar-extracted layers) and the
 * merged TOC. Needs root, FUSE, overlayfs, docker-registry, PostgreSQL; torn down on failure too.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import type { LayerSpec } from '../../fixtures/image-writer.js';
import { FIXTURES } from '../helpers/fixtures.js';
import { startPostgres } from '../helpers/postgres.js';
import { tempDir } from '../helpers/tmp.js';
import { diffShapes, shapeOfDir } from '../helpers/tree-shape.js';
import { metrics, startProxyProcess } from './proxy-support.js';
import { ignoredMtimes, mountSupported, pushLayers, referenceShapes, sleep, startMount, startRegistryFor, startStack, treeShapes } from './mount-support.js';

const MIB = 1024 * 1024;
/** Link to A, bits/s: 8 MiB of incompressible bytes take ~17 s, so A dies mid-stream. */
const BANDWIDTH_BPS = 4_000_000;
const COMPLETE_MS = 180_000;

(mountSupported ? test.serial : test.skip)('replica A killed mid-stream: the pull completes from B, the tree equals the overlay oracle', async (t) => {
  t.timeout(300_000);
  const db = await startPostgres(t);
  const reg = await startRegistryFor(t);
  const layers: LayerSpec[] = [
    ...FIXTURES.find((f) => f.name === 'rootfs')!.layers,
    { compression: 'gzip', entries: [{ path: 'data', type: 'dir' }, { path: 'data/noise.bin', type: 'reg', content: randomBytes(8 * MIB) }] },
  ];
  const img = await pushLayers(t, reg, 'failover', layers);
  const reference = await referenceShapes(t, img);

  const a = await startStack(t, reg, { bandwidthBps: BANDWIDTH_BPS, proxyArgs: ['--db', db.url] });
  const b = await startProxyProcess(t, ['--registry', reg.url, '--listen', '127.0.0.1:0', '--data', tempDir(t, 'sl-proxy-b-'), '--db', db.url]);
  const m = await startMount(t, `${a.proxyUrl},${b.url}`, img.ref);
  await sleep(1000);
  t.false(m.lines().includes('complete'), 'still streaming from A when it dies');
  await a.proxy.stop('SIGKILL');

  await m.waitForLine(/^complete$/, COMPLETE_MS);
  const done = m.logs().filter((l) => l.msg === 'delta-complete');
  t.is(done.length, 1);
  t.true(Number(done[0]!.connections) >= 2, 'the stream resumed on a new connection');
  t.true(m.logs().some((l) => l.msg === 'delta-reconnect'), 'the worker saw its stream drop');
  t.is((await metrics(b.url)).get('starlight_proxy_deltas_served_total'), 1, 'B served the rest of the stream');

  const full = await shapeOfDir(m.mountpoint, { nlink: true });
  const vsOracle = diffShapes(full, reference, { names: ['mount', 'overlay'], ignoreMtime: ignoredMtimes(img) });
  t.deepEqual(vsOracle, [], `mount vs overlayfs after failover:\n${vsOracle.join('\n')}`);
  const vsTree = diffShapes(full, treeShapes(img), { names: ['mount', 'toc'] });
  t.deepEqual(vsTree, [], `mount vs merged TOC after failover:\n${vsTree.join('\n')}`);
  t.true([...full.values()].filter((s) => s.type === 'reg').every((s) => s.sha256 !== undefined), 'every file hashed');
});
