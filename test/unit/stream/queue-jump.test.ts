/**
 * Queue jumping, worker side (issue 11): a read that parks on an item the stream has not delivered
 * asks the proxy, over the stream's session (POST /v1/sessions/<id>/next), to send it next; the
 * out-of-order GET /v1/content is only the fallback (no session header, the POST fails, or the item
 * does not start arriving in time). The proxy here is a small real HTTP server implementing that
 * contract: it sends one CONTENT frame per tick, and a jump preempts at a frame boundary, so the
 * frames of a large item interleave with the jumped one.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { contentHead, endFrame, headerFrame, preamble } from '../../../src/protocol/frames.js';
import type { ContentItem, DeltaHeader } from '../../../src/protocol/types.js';
import { LocalContentStore } from '../../../src/worker/cas/store.js';
import { ContentTracker } from '../../../src/worker/stream/content-tracker.js';
import { ProxyClient } from '../../../src/worker/stream/proxy-client.js';
import { DeltaReceiver } from '../../../src/worker/stream/receiver.js';
import { tempDir } from '../../helpers/tmp.js';

const SMALL_ITEMS = 30;
const SMALL_BYTES = 8 * 1024;
/** Item 0: large, sent in FRAME_BYTES frames (so a jump can land between its frames). */
const LARGE_BYTES = 6 * 64 * 1024;
const FRAME_BYTES = 64 * 1024;
/** One frame per tick: the whole stream takes ≥ (6 + 30) × TICK_MS. */
const TICK_MS = 40;

const digestOf = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

interface FakeProxy {
  url: string;
  contents: Buffer[];
  items: ContentItem[];
  /** Bodies of POST …/next that ask for items, in arrival order. */
  nexts: number[][];
  /** POST …/next with an empty list (the worker opening its control connection). */
  opens: number;
  /** Digests fetched through GET /v1/content. */
  fetched: string[];
  /** Frame log: item index per CONTENT frame sent, in order. */
  frames: number[];
}

interface ProxyBehaviour {
  /** Send the starlight-session header (default true). */
  session?: boolean;
  /** Status of POST …/next (default 204). */
  nextStatus?: number;
  /** Accept POST …/next but do not reorder (default false). */
  ignoreNext?: boolean;
  /** Milliseconds per frame (default TICK_MS). */
  tickMs?: number;
}

async function fakeProxy(t: ExecutionContext, b: ProxyBehaviour = {}): Promise<FakeProxy> {
  const contents = [randomBytes(LARGE_BYTES), ...Array.from({ length: SMALL_ITEMS }, () => randomBytes(SMALL_BYTES))];
  const items: ContentItem[] = contents.map((c) => ({ digest: digestOf(c), size: c.length, encodedSize: c.length, encoding: 'identity' }));
  const fp: FakeProxy = { url: '', contents, items, nexts: [], opens: 0, fetched: [], frames: [] };
  const sessions = new Map<string, { order: number[]; done: boolean }>();
  let seq = 0;
  const timers = new Set<NodeJS.Timeout>();
  const delta = (req: IncomingMessage, res: ServerResponse, from: number): void => {
    const id = `s${++seq}`;
    const sess = { order: items.map((_, i) => i).filter((i) => i >= from), done: false };
    sessions.set(id, sess);
    res.writeHead(200, { 'content-type': 'application/vnd.starlight.delta.v1', ...(b.session === false ? {} : { 'starlight-session': id }) });
    const h: DeltaHeader = {
      ref: 'test/q:1',
      platform: 'linux/amd64',
      manifestDigest: digestOf(Buffer.from('m')),
      manifestMediaType: 'application/vnd.oci.image.manifest.v1+json',
      manifest: Buffer.from('m'),
      config: Buffer.from('{}'),
      diffIDs: [],
      layers: [],
      items,
      firstItem: from,
    };
    res.write(Buffer.concat([preamble(), headerFrame(h)]));
    const sent = new Map<number, number>();
    let contentBytes = 0;
    const tick = (): void => {
      const i = sess.order[0];
      if (i === undefined) {
        sess.done = true;
        res.end(endFrame({ items: items.length - from, contentBytes }));
        return;
      }
      const off = sent.get(i) ?? 0;
      const n = Math.min(FRAME_BYTES, contents[i]!.length - off);
      res.write(Buffer.concat([contentHead(i, off, n), contents[i]!.subarray(off, off + n)]));
      fp.frames.push(i);
      contentBytes += n;
      sent.set(i, off + n);
      if (off + n === contents[i]!.length) sess.order.shift();
      const timer = setTimeout(tick, b.tickMs ?? TICK_MS);
      timers.add(timer);
    };
    tick();
    req.on('close', () => (sess.done = true));
  };
  const srv = createServer((req, res) => {
    const u = new URL(req.url!, 'http://x');
    const next = /^\/v1\/sessions\/([^/]+)\/next$/.exec(u.pathname);
    if (req.method === 'GET' && u.pathname === '/v1/delta') return delta(req, res, Number(u.searchParams.get('from') ?? 0));
    if (req.method === 'POST' && next) {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        const want = (JSON.parse(body) as { items: number[] }).items;
        if (want.length > 0) fp.nexts.push(want);
        else fp.opens++;
        const sess = sessions.get(next[1]!);
        const status = b.nextStatus ?? (sess === undefined || sess.done ? 404 : 204);
        if (status === 204 && sess && !b.ignoreNext) {
          // Preempt at the next frame boundary: the wanted items go first, in the order asked.
          const wanted = want.filter((i) => sess.order.includes(i));
          sess.order = [...wanted, ...sess.order.filter((i) => !wanted.includes(i))];
        }
        res.writeHead(status, status === 204 ? {} : { 'content-type': 'application/json' });
        res.end(status === 204 ? undefined : JSON.stringify({ errors: [{ code: 'SL_ERR_NOT_FOUND', message: 'no such session' }] }));
      });
      return;
    }
    const content = /^\/v1\/content\/(sha256:[0-9a-f]{64})$/.exec(u.pathname);
    if (req.method === 'GET' && content) {
      const i = items.findIndex((it) => it.digest === content[1]);
      fp.fetched.push(content[1]!);
      res.writeHead(200, { 'starlight-encoding': 'identity', 'starlight-size': String(contents[i]!.length) });
      res.end(contents[i]);
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(async () => {
    for (const tm of timers) clearTimeout(tm);
    srv.closeAllConnections();
    await new Promise<void>((r) => srv.close(() => r()));
  });
  fp.url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  return fp;
}

async function worker(t: ExecutionContext, fp: FakeProxy, queueJumpFallbackMs: number | undefined = 10_000, readDeadlineMs = 60_000) {
  const client = new ProxyClient({ url: fp.url });
  const store = await new LocalContentStore(tempDir(t)).open();
  const tracker = new ContentTracker(store, { readDeadlineMs, fetchItem: (d, s) => client.content(d, s), fetchRetryMs: 20, queueJumpFallbackMs });
  const rx = new DeltaReceiver({ client, tracker, request: { ref: 'test/q:1', have: [] } });
  t.teardown(() => {
    rx.close();
    tracker.close();
    client.close();
  });
  await rx.header;
  return { rx, tracker };
}

test('a parked read gets its item sent next on the stream, not fetched; a large item interleaves around it', async (t) => {
  const fp = await fakeProxy(t);
  const { rx, tracker } = await worker(t, fp);
  const last = fp.items.length - 1;
  const path = await tracker.waitFor(fp.items[last]!.digest, 0, SMALL_BYTES);
  t.true(readFileSync(path).equals(fp.contents[last]!));
  t.true(rx.progress().itemsDone < fp.items.length / 2, `the stream itself was far from it (${rx.progress().itemsDone}/${fp.items.length} done)`);
  t.deepEqual(fp.nexts, [[last]]);
  t.is(fp.opens, 1, 'the control connection was opened when the stream started (an empty bump)');
  t.deepEqual(fp.fetched, [], 'no out-of-order fetch');
  await rx.done;
  // The jump landed between frames of item 0: frames of different items interleaved.
  const firstOfLast = fp.frames.indexOf(last);
  t.true(fp.frames.slice(0, firstOfLast).includes(0) && fp.frames.slice(firstOfLast).includes(0), `frames ${fp.frames.join(',')}`);
  for (const [i, c] of fp.contents.entries()) t.true(readFileSync(tracker.locate(fp.items[i]!.digest)!).equals(c), `item ${i}`);
});

test('reads parked in the same turn go out as one request', async (t) => {
  const fp = await fakeProxy(t);
  const { rx, tracker } = await worker(t, fp);
  const want = [fp.items.length - 1, fp.items.length - 2, fp.items.length - 3];
  const paths = await Promise.all(want.map((i) => tracker.waitFor(fp.items[i]!.digest, 0, SMALL_BYTES)));
  t.deepEqual(fp.nexts, [want]);
  t.deepEqual(fp.fetched, []);
  want.forEach((i, k) => t.true(readFileSync(paths[k]!).equals(fp.contents[i]!)));
  await rx.done;
});

test('without a session header the read is fetched out of order (GET /v1/content)', async (t) => {
  const fp = await fakeProxy(t, { session: false });
  const { tracker } = await worker(t, fp);
  const last = fp.items.length - 1;
  t.true(readFileSync(await tracker.waitFor(fp.items[last]!.digest, 0, SMALL_BYTES)).equals(fp.contents[last]!));
  t.deepEqual(fp.nexts, []);
  t.deepEqual(fp.fetched, [fp.items[last]!.digest]);
});

test('a refused jump (404) falls back to GET /v1/content at once', async (t) => {
  const fp = await fakeProxy(t, { nextStatus: 404 });
  const { tracker } = await worker(t, fp);
  const last = fp.items.length - 1;
  t.true(readFileSync(await tracker.waitFor(fp.items[last]!.digest, 0, SMALL_BYTES)).equals(fp.contents[last]!));
  t.deepEqual(fp.nexts, [[last]]);
  t.deepEqual(fp.fetched, [fp.items[last]!.digest]);
  // The session is considered gone: a later parked read goes straight to the fallback.
  const other = fp.items.length - 2;
  t.true(readFileSync(await tracker.waitFor(fp.items[other]!.digest, 0, SMALL_BYTES)).equals(fp.contents[other]!));
  t.is(fp.nexts.length, 1);
  t.deepEqual(fp.fetched, [fp.items[last]!.digest, fp.items[other]!.digest]);
});

test('an accepted jump whose item does not come in time is fetched after the fallback deadline', async (t) => {
  const fp = await fakeProxy(t, { ignoreNext: true });
  const { rx, tracker } = await worker(t, fp, 300);
  const last = fp.items.length - 1;
  const t0 = Date.now();
  t.true(readFileSync(await tracker.waitFor(fp.items[last]!.digest, 0, SMALL_BYTES)).equals(fp.contents[last]!));
  t.true(Date.now() - t0 >= 300, 'not before the deadline');
  t.deepEqual(fp.nexts, [[last]]);
  t.deepEqual(fp.fetched, [fp.items[last]!.digest]);
  t.false(rx.progress().done, 'the stream had not reached it');
});

test('the fallback fires well before the read deadline, even when configured at or past it', async (t) => {
  // A jump the proxy accepts can still land behind MiBs already on the link; with the fallback at
  // the deadline the read failed before the fetch was tried (mount-faults "killed", 3 s / 3 s).
  // Deadline 20 s, so the fallback (a quarter of it, 5 s) has 15 s of margin on a loaded machine.
  for (const fallback of [undefined, 20_000]) {
    const fp = await fakeProxy(t, { ignoreNext: true, tickMs: 1_000 });
    // The stream reaches the last item after ≥ 36 ticks (36 s): only the fetch can beat a 20 s deadline.
    const { rx, tracker } = await worker(t, fp, fallback, 20_000);
    const last = fp.items.length - 1;
    t.true(readFileSync(await tracker.waitFor(fp.items[last]!.digest, 0, SMALL_BYTES)).equals(fp.contents[last]!), `fallback ${fallback}`);
    t.deepEqual(fp.fetched, [fp.items[last]!.digest], `fetched out of order (fallback ${fallback})`);
    t.false(rx.progress().done, 'the stream had not reached it');
    rx.close();
  }
});
