/**
 * Pure helpers of lazy pulls (chain.ts), the image records (records.ts) with LayerStore's
 * complete markers, and the daemon API's request validation (api/server.ts) on a real unix socket.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { chainIds, imageName, parseRemoteId, pinnedRef, remoteIdFor } from '../../../src/worker/images/chain.js';
import { ImageRecords } from '../../../src/worker/images/records.js';
import { LayerStore } from '../../../src/worker/pull/layer-store.js';
import { DaemonClient } from '../../../src/worker/api/client.js';
import { serveApi, type TraceRequest } from '../../../src/worker/api/server.js';
import { nullLogger } from '../../../src/log.js';
import { sha256Digest } from '../../../src/oci/digest.js';
import type { DeltaHeader } from '../../../src/protocol/types.js';
import { tempDir } from '../../helpers/tmp.js';

const A = 'sha256:' + 'a'.repeat(64);
const B = 'sha256:' + 'b'.repeat(64);
const M = 'sha256:' + 'c'.repeat(64);

test('chainIds follow the OCI image-spec ChainID definition', (t) => {
  t.deepEqual(chainIds([]), []);
  const two = chainIds([A, B]);
  t.is(two[0], A);
  t.is(two[1], 'sha256:' + createHash('sha256').update(`${A} ${B}`).digest('hex'));
});

test('image names and pinned refs are normalized as containerd stores them', (t) => {
  t.is(imageName('busybox'), 'docker.io/library/busybox:latest');
  t.is(imageName('127.0.0.1:5000/app:v1'), '127.0.0.1:5000/app:v1');
  t.regex(pinnedRef('127.0.0.1:5000/app:v1', M), new RegExp(`^127\\.0\\.0\\.1:5000/app(:v1)?@${M}$`));
});

test('remote ids round-trip; malformed ones are refused with a code', (t) => {
  t.deepEqual(parseRemoteId(remoteIdFor(M, 3)), { manifestDigest: M, index: 3 });
  for (const bad of ['', M, `${M}/x`, 'sha256:abc/1']) t.is((t.throws(() => parseRemoteId(bad)) as { code?: string } | undefined)?.code, 'SL_ERR_IMAGE_NOT_PULLED');
});

test('records: put/all/header/remove; LayerStore complete markers can be withdrawn', async (t) => {
  const root = tempDir(t, 'sl-rec-');
  const layers = await new LayerStore(join(root, 'layers')).open();
  const records = await new ImageRecords(join(root, 'images'), layers).open();
  // A header that checks (records.ts reads it back only if its manifest hashes to its name).
  const config = Buffer.from(JSON.stringify({ rootfs: { diff_ids: [A, B] } }));
  const manifest = Buffer.from(JSON.stringify({ config: { digest: sha256Digest(config) }, layers: [{}, {}] }));
  const M = sha256Digest(manifest);
  const rec = { ref: 'r/app:v1', name: 'docker.io/r/app:v1', manifestDigest: M, complete: false, pulledAt: 1 };
  await records.put(rec);
  const header: DeltaHeader = {
    ref: 'r/app:v1',
    platform: 'linux/amd64',
    manifestDigest: M,
    manifestMediaType: 'application/vnd.oci.image.manifest.v1+json',
    manifest,
    config,
    diffIDs: [A, B],
    layers: [{ diffID: A, toc: new Uint8Array(3) }],
    items: [],
    firstItem: 0,
  };
  await records.putHeader(header);
  t.deepEqual(await records.all(), [rec]);
  const back = await records.header(M);
  t.deepEqual(back?.diffIDs, [A, B]);
  t.deepEqual(back?.layers, [], 'TOCs are not stored with the header');

  await layers.markComplete([A, B]);
  t.deepEqual(await layers.completeLayers(), [A, B]);
  await layers.unmarkComplete([B]);
  await layers.unmarkComplete([B]);
  t.deepEqual(await layers.completeLayers(), [A]);
  t.false(await layers.isComplete(B));

  await records.remove(M);
  await records.remove(M);
  t.deepEqual(await records.all(), []);
  t.is(await records.header(M), undefined);
});

test('daemon API: trace requests are validated; errors keep their code across the socket', async (t) => {
  const socket = join(tempDir(t, 'sl-api-'), 'd.sock');
  const seen: (TraceRequest | undefined)[] = [];
  const state = { manual: { on: false }, autoWindowMs: 30_000, open: 0, upload: 'auto' as const, pending: 0 };
  const api = await serveApi(
    {
      pull: async () => {
        throw new Error('not used');
      },
      status: async () => ({ images: [], views: [], mounts: [], timings: [] }),
      trace: async (r) => {
        seen.push(r);
        return { ...state, manual: r ? { on: r.on, ...(r.group ? { group: r.group } : {}) } : state.manual };
      },
      report: async () => ({ uploaded: 2, pending: 0, failures: [] }),
    },
    socket,
    nullLogger,
  );
  t.teardown(() => api.close());
  const c = new DaemonClient(socket);
  t.deepEqual((await c.trace({ on: true, group: 'web-1' })).manual, { on: true, group: 'web-1' });
  t.deepEqual((await c.trace()).manual, { on: false });
  t.is((await c.report()).uploaded, 2);
  const bad = await t.throwsAsync(c.trace({ on: true, group: '../x' }));
  t.is((bad as { code?: string }).code, 'SL_ERR_INVALID_ARGUMENT');
  const notBool = await t.throwsAsync(c.trace({ on: 'yes' } as unknown as TraceRequest));
  t.is((notBool as { code?: string }).code, 'SL_ERR_INVALID_ARGUMENT');
  t.deepEqual(seen, [{ on: true, group: 'web-1' }, undefined]);
  const gone = await t.throwsAsync(new DaemonClient(join(tempDir(t, 'sl-api-'), 'none.sock')).status());
  t.is((gone as { code?: string }).code, 'SL_ERR_DAEMON_UNREACHABLE');
});
