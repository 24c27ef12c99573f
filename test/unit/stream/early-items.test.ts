/**
 * Worker side of early items (docs/protocol.md "Early items"): the receiver asks `early=1` on a
 * stream's first connection, stores each EARLY content through the item pool only once verified (a
 * content whose bytes do not match its digest is dropped and logged), then takes the header and its
 * items as usual.
 */
import test from 'ava';
import { createServer } from 'node:http';
import { brotliCompressSync } from 'node:zlib';
import { PassThrough } from 'node:stream';
import { createLogger } from '../../../src/log.js';
import { sha256Digest } from '../../../src/oci/digest.js';
import { DeltaEncoder } from '../../../src/protocol/index.js';
import { LocalContentStore } from '../../../src/worker/cas/store.js';
import { ContentTracker } from '../../../src/worker/stream/content-tracker.js';
import { ProxyClient } from '../../../src/worker/stream/proxy-client.js';
import { DeltaReceiver } from '../../../src/worker/stream/receiver.js';
import { deltaHeader, identityItems } from '../../helpers/delta-header.js';
import { tempDir } from '../../helpers/tmp.js';

const early = Buffer.from('an early library '.repeat(500));
const liar = Buffer.from('bytes that are not what the digest says');
const later = Buffer.from('an item of the header');

async function stream(): Promise<Buffer> {
  const out = new PassThrough();
  const parts: Buffer[] = [];
  out.on('data', (b: Buffer) => parts.push(b));
  const enc = new DeltaEncoder(out);
  await enc.writeEarly(sha256Digest(early), 'br', early.length, brotliCompressSync(early));
  await enc.writeEarly(sha256Digest(Buffer.from('something else')), 'identity', liar.length, liar);
  await enc.writeHeader(deltaHeader(identityItems([later])));
  await enc.writeItem(0, later);
  await enc.writeEnd();
  out.end();
  await new Promise((r) => out.on('end', r));
  return Buffer.concat(parts);
}

test('EARLY contents are stored verified before the header; a lying one is dropped; the header items follow', async (t) => {
  const body = await stream();
  const queries: string[] = [];
  const srv = createServer((req, res) => {
    queries.push(req.url ?? '');
    if (!(req.url ?? '').startsWith('/v1/delta')) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'application/vnd.starlight.delta.v1' }).end(body);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  const { port } = srv.address() as { port: number };
  const client = new ProxyClient({ url: `http://127.0.0.1:${port}`, earlyItems: true });
  t.teardown(() => client.close());
  const tracker = new ContentTracker(await new LocalContentStore(tempDir(t)).open());
  const msgs: string[] = [];
  const log = createLogger({ level: 'warn', sink: (l) => msgs.push((JSON.parse(l) as { msg: string }).msg) });
  const rx = new DeltaReceiver({ client, tracker, request: { ref: 'x/y:1', have: [] }, log });
  t.teardown(() => rx.close());
  await rx.done;
  t.true(new URL(queries[0]!, 'http://x').searchParams.get('early') === '1', 'the first connection asks early=1');
  t.true(tracker.has(sha256Digest(early)), 'the early content is in the CAS');
  t.false(tracker.has(sha256Digest(Buffer.from('something else'))), 'the lying one is not');
  t.false(tracker.has(sha256Digest(liar)));
  t.true(msgs.includes('delta-early-failed'));
  t.true(tracker.has(sha256Digest(later)));
  t.is(rx.progress().earlyItems, 2);
  t.is(rx.progress().itemsDone, 1);
});

test('a client asks early=1 only with earlyItems: true (the daemon\'s --early-items on; off by default)', async (t) => {
  const queries: string[] = [];
  const srv = createServer((req, res) => {
    queries.push(req.url ?? '');
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  const { port } = srv.address() as { port: number };
  for (const earlyItems of [undefined, true]) {
    const client = new ProxyClient({ url: `http://127.0.0.1:${port}`, earlyItems });
    await client.delta({ ref: 'x/y:1', have: [] }).then((r) => r.body.destroy(), () => undefined);
    client.close();
  }
  t.is(queries.length, 2);
  t.is(new URL(queries[0]!, 'http://x').searchParams.get('early'), null, 'default: no early=1');
  t.is(new URL(queries[1]!, 'http://x').searchParams.get('early'), '1', 'on: early=1');
  t.is(new URL(queries[0]!, 'http://x').searchParams.get('deferred'), '1', 'deferred items are still asked');
});
