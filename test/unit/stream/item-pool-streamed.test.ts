/**
 * Large items streamed through the item pool's threads (ItemPool.stream, issue 18 session 8): decoded,
 * checked against the announced size and the chunk digests before they are written, reported per
 * verified chunk (parked reads wake then), stored at their blob path only once size and sha256 match;
 * a bad item fails at the chunk that is wrong and leaves nothing behind; an aborted one neither.
 * Deterministic bytes: the assertions depend on where the corruption sits.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import zlib from 'node:zlib';
import type { StarlightError } from '../../../src/errors.js';
import { ChunkDigests } from '../../../src/layers/chunks.js';
import { CHUNK_BYTES } from '../../../src/layers/toc.js';
import { LocalContentStore } from '../../../src/worker/cas/store.js';
import { ItemPool, type StreamedItem } from '../../../src/worker/stream/item-pool.js';
import { casEntriesSync } from '../../helpers/cas.js';
import { tempDir } from '../../helpers/tmp.js';

const digestOf = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');
const SIZE = 3 * CHUNK_BYTES + 12_345;
/** Compressible but not trivial bytes (brotli output > one 64 KiB piece). */
function fill(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = (x >>> 24) % 16;
  }
  return b;
}
function chunksOf(data: Buffer): Uint8Array {
  const c = new ChunkDigests();
  c.update(data);
  return c.finish();
}

interface Outcome {
  verified: number[];
  settled: Promise<StarlightError | undefined>;
}

async function setup(t: ExecutionContext): Promise<{ store: LocalContentStore; pool: ItemPool }> {
  const store = await new LocalContentStore(tempDir(t)).open();
  const pool = new ItemPool(store, { threads: 2 });
  t.teardown(() => pool.close());
  return { store, pool };
}

/** Streams `encoded` in 64 KiB pieces, one turn apart; `verifiedBeforeEnd` records what was verified before end(). */
async function streamIt(pool: ItemPool, item: StreamedItem, encoded: Buffer, opts: { end?: boolean } = {}): Promise<Outcome & { path: string; abort: () => void; beforeEnd: number }> {
  const verified: number[] = [];
  let settle!: (e: StarlightError | undefined) => void;
  const settled = new Promise<StarlightError | undefined>((r) => (settle = r));
  const w = pool.stream(item, { verified: (n) => verified.push(n), settled: settle });
  for (let o = 0; o < encoded.length; o += 64 << 10) {
    w.push(encoded.subarray(o, o + (64 << 10)));
    await new Promise((r) => setImmediate(r));
  }
  // Let the thread catch up with what was sent (bounded: the thread answers every piece).
  const deadline = Date.now() + 20_000;
  while (pool.inFlightBytes > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  const beforeEnd = verified.at(-1) ?? 0;
  if (opts.end !== false) w.end();
  return { verified, settled, path: w.path, abort: () => w.abort(), beforeEnd };
}

for (const encoding of ['br', 'gzip', 'deflate-raw', 'identity'] as const) {
  test(`a large ${encoding} item is verified chunk by chunk, then stored with its bytes`, async (t) => {
    const { store, pool } = await setup(t);
    t.true(pool.streams(encoding));
    const data = fill(SIZE, 7);
    const encoded =
      encoding === 'br' ? zlib.brotliCompressSync(data) : encoding === 'gzip' ? zlib.gzipSync(data) : encoding === 'deflate-raw' ? zlib.deflateRawSync(data) : data;
    const digest = digestOf(data);
    const r = await streamIt(pool, { digest, size: SIZE, encoding, chunkDigests: chunksOf(data) }, encoded);
    t.is(await r.settled, undefined);
    t.true(r.beforeEnd >= CHUNK_BYTES, `chunks verified before the end (${r.beforeEnd})`);
    t.is(r.verified.at(-1), SIZE);
    const p = store.path(digest)!;
    t.true(readFileSync(p).equals(data));
    t.is(statSync(p).mode & 0o777, 0o444);
    t.deepEqual(readdirSync(store.ingestDir), [], 'no ingest file left');
    t.is(pool.inFlightBytes, 0);
  });
}

test('a bit flip in the second chunk fails the item when that chunk is decoded; nothing is stored or left', async (t) => {
  const { store, pool } = await setup(t);
  const data = fill(SIZE, 9);
  const bad = Buffer.from(data);
  bad[CHUNK_BYTES + 100]! ^= 0x01;
  const digest = digestOf(data);
  const r = await streamIt(pool, { digest, size: SIZE, encoding: 'br', chunkDigests: chunksOf(data) }, zlib.brotliCompressSync(bad), { end: false });
  const err = await r.settled;
  t.is(err?.code, 'SL_ERR_CAS_DIGEST_MISMATCH');
  t.is(err?.details.chunk, 1);
  t.true(r.verified.every((v) => v <= CHUNK_BYTES), `nothing past the first chunk was reported verified (${r.verified.join(',')})`);
  t.is(store.path(digest), null);
  t.deepEqual(readdirSync(store.ingestDir), []);
  t.deepEqual(casEntriesSync(store.root), []);
});

test('without chunk digests nothing is reported verified; a wrong digest fails at the end', async (t) => {
  const { store, pool } = await setup(t);
  const data = fill(SIZE, 11);
  const digest = digestOf(Buffer.from('another content'));
  const r = await streamIt(pool, { digest, size: SIZE, encoding: 'br' }, zlib.brotliCompressSync(data));
  t.is((await r.settled)?.code, 'SL_ERR_CAS_DIGEST_MISMATCH');
  t.deepEqual(r.verified, []);
  t.deepEqual(readdirSync(store.ingestDir), []);
  t.deepEqual(casEntriesSync(store.root), []);
});

test('more decoded bytes than announced fail before the excess is written (decompression bomb)', async (t) => {
  const { store, pool } = await setup(t);
  const announced = 1 << 20;
  const bomb = zlib.gzipSync(Buffer.alloc(64 << 20));
  const r = await streamIt(pool, { digest: digestOf(Buffer.alloc(announced)), size: announced, encoding: 'gzip' }, bomb, { end: false });
  t.is((await r.settled)?.code, 'SL_ERR_CAS_SIZE_MISMATCH');
  t.deepEqual(readdirSync(store.ingestDir), []);
});

test('bytes that do not decode fail the item as malformed; a truncated stream fails at its end', async (t) => {
  const { store, pool } = await setup(t);
  const data = fill(SIZE, 13);
  const gz = zlib.gzipSync(data);
  const garbage = Buffer.from(gz);
  garbage.fill(0x5a, 10, 200);
  const r1 = await streamIt(pool, { digest: digestOf(data), size: SIZE, encoding: 'gzip' }, garbage);
  t.is((await r1.settled)?.code, 'SL_ERR_PROTOCOL_MALFORMED');
  const r2 = await streamIt(pool, { digest: digestOf(data), size: SIZE, encoding: 'gzip' }, gz.subarray(0, gz.length - 1000));
  const e2 = await r2.settled;
  t.true(e2?.code === 'SL_ERR_PROTOCOL_MALFORMED' || e2?.code === 'SL_ERR_CAS_SIZE_MISMATCH', String(e2?.code));
  t.deepEqual(readdirSync(store.ingestDir), []);
  t.deepEqual(casEntriesSync(store.root), []);
});

test('an aborted item leaves no file and is never settled', async (t) => {
  const { store, pool } = await setup(t);
  const data = fill(SIZE, 15);
  const r = await streamIt(pool, { digest: digestOf(data), size: SIZE, encoding: 'br' }, zlib.brotliCompressSync(data).subarray(0, 200_000), { end: false });
  t.true(readdirSync(store.ingestDir).length === 1, 'its ingest file exists while it streams');
  r.abort();
  let settled = false;
  void r.settled.then(() => (settled = true));
  const deadline = Date.now() + 20_000;
  while (readdirSync(store.ingestDir).length > 0 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
  t.deepEqual(readdirSync(store.ingestDir), []);
  // A later item on the same pool still works (the thread is fine).
  const good = fill(SIZE, 17);
  const r2 = await streamIt(pool, { digest: digestOf(good), size: SIZE, encoding: 'br' }, zlib.brotliCompressSync(good));
  t.is(await r2.settled, undefined);
  t.false(settled);
  t.is(store.path(digestOf(data)), null);
});
