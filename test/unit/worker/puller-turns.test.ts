/**
 * A pull's synchronous work (TOC decode, item check, merge) leaves the event loop turns while a
 * caller's early work is under way (issue 19): containerd's Prepares, started in onImageChecked, need
 * this loop at every step (each answer sends the next one; containerd calls our snapshotter back for
 * every new layer). Modelled here by a chain of setImmediate hops started in onImageChecked: it must
 * move on during the pull, not only once the pull has returned.
 */
import test from 'ava';
import { createServer } from 'node:http';
import { PassThrough } from 'node:stream';
import { sha256Digest } from '../../../src/oci/digest.js';
import { encodeToc } from '../../../src/layers/toc-codec.js';
import { TOC_VERSION, type LayerToc, type TocEntry } from '../../../src/layers/toc.js';
import { DeltaEncoder, type DeltaHeader } from '../../../src/protocol/index.js';
import { LocalContentStore } from '../../../src/worker/cas/store.js';
import { LayerStore } from '../../../src/worker/pull/layer-store.js';
import { Puller } from '../../../src/worker/pull/puller.js';
import { ContentTracker } from '../../../src/worker/stream/content-tracker.js';
import { ProxyClient } from '../../../src/worker/stream/proxy-client.js';
import { tempDir } from '../../helpers/tmp.js';

const REF = 'localhost:5000/app:v1';

/** A layer of `files` regular files under dir `name` (content digests made up: nothing is streamed). */
function layer(name: string, files: number): LayerToc {
  const entries: TocEntry[] = [{ path: name, type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0 }];
  for (let i = 0; i < files; i++) {
    entries.push({ path: `${name}/f${i}`, type: 'reg', mode: 0o644, uid: 0, gid: 0, size: 1, mtime: 0, digest: sha256Digest(Buffer.from(`${name}${i}`)) });
  }
  return { version: TOC_VERSION, diffID: sha256Digest(Buffer.from(`layer ${name}`)), uncompressedSize: 0, entries };
}

/** A header that passes checkHeaderImage: manifest and config consistent with the chain of `tocs`. */
function header(tocs: LayerToc[]): DeltaHeader {
  const config = Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: tocs.map((t) => t.diffID) } }));
  const manifest = Buffer.from(JSON.stringify({ config: { digest: sha256Digest(config) }, layers: tocs.map((t) => ({ digest: t.diffID })) }));
  return {
    ref: REF,
    platform: 'linux/amd64',
    manifestDigest: sha256Digest(manifest),
    manifestMediaType: 'application/vnd.oci.image.manifest.v1+json',
    manifest,
    config,
    diffIDs: tocs.map((t) => t.diffID),
    layers: tocs.map((t) => ({ diffID: t.diffID, toc: encodeToc(t) })),
    items: [],
    firstItem: 0,
  };
}

async function deltaBody(h: DeltaHeader): Promise<Buffer> {
  const out = new PassThrough();
  const parts: Buffer[] = [];
  out.on('data', (b: Buffer) => parts.push(b));
  const enc = new DeltaEncoder(out);
  await enc.writeHeader(h);
  await enc.writeEnd();
  out.end();
  await new Promise((r) => out.on('end', r));
  return Buffer.concat(parts);
}

test('the event loop turns between the TOC decodes, the item check and the merge while onImageChecked\'s work runs', async (t) => {
  const tocs = [layer('a', 300), layer('b', 300), layer('c', 300)];
  const body = await deltaBody(header(tocs));
  const srv = createServer((req, res) => {
    if (!(req.url ?? '').startsWith('/v1/delta')) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'application/vnd.starlight.delta.v1' }).end(body);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  const { port } = srv.address() as { port: number };
  const client = new ProxyClient({ url: `http://127.0.0.1:${port}` });
  t.teardown(() => client.close());
  const tracker = new ContentTracker(await new LocalContentStore(tempDir(t)).open());
  const puller = new Puller({ client, tracker, layers: await new LayerStore(tempDir(t)).open(), lowerTreesDelayMs: -1 });

  // The caller's early work: one hop per event-loop turn, until the pull has returned.
  let hops = 0;
  let pulled = false;
  const hop = (): void => {
    if (pulled) return;
    hops++;
    setImmediate(hop);
  };
  const p = await puller.pull(REF, undefined, { onImageChecked: () => setImmediate(hop) });
  pulled = true;
  t.teardown(() => p.receiver.close());
  const during = hops;
  t.is(p.tree.entries.filter((e) => e.type === 'reg').length, 900);
  // One turn after onImageChecked, one after each of the 3 TOC decodes, after the item check and
  // before the merge: at least 6 (the stream's own I/O may add more).
  t.true(during >= 6, `the caller's work moved ${during} hop(s) during the pull`);
});
