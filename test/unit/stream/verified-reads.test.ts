/**
 * Issue 14 "never wrong bytes": no byte of content reaches a reader before the content's digest was
 * checked. A stream whose item is corrupted early (a bit flip in the first KiB of a large file) must
 * not satisfy a read of the first 4 KiB from its ingest file while the rest is still arriving; the
 * read waits, then fails with the digest mismatch (EIO at the FUSE boundary) when the item ends.
 * With the file's chunk digests (TOC version 2) the head is served as soon as its chunk is verified,
 * and a bad chunk fails the item at once. The first two tests failed before the fix (ranges ending
 * before the last byte were served from the ingest file).
 */
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { setImmediate as tick } from 'node:timers/promises';
import { readFileSync } from 'node:fs';
import { ChunkDigests } from '../../../src/layers/chunks.js';
import { CHUNK_BYTES } from '../../../src/layers/toc.js';
import { LocalContentStore } from '../../../src/worker/cas/store.js';
import { ContentTracker } from '../../../src/worker/stream/content-tracker.js';
import { tempDir } from '../../helpers/tmp.js';

const SIZE = 4 << 20;
const CHUNK = 64 << 10;
const digestOf = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** A tracker over a fresh store and SIZE random bytes (with their chunk digests registered if `chunked`). */
async function setup(t: ExecutionContext, chunked: boolean): Promise<{ tracker: ContentTracker; data: Buffer; digest: string }> {
  const store = await new LocalContentStore(tempDir(t)).open();
  const tracker = new ContentTracker(store, { readDeadlineMs: 30_000 });
  t.teardown(() => tracker.close());
  const data = randomBytes(SIZE);
  const digest = digestOf(data);
  if (chunked) tracker.addChunkDigests(digest, chunksOf(data));
  return { tracker, data, digest };
}

test('a read of the head of a corrupted, still-streaming item is never answered with its bytes', async (t) => {
  const { tracker, data, digest } = await setup(t, false);
  const bad = Buffer.from(data);
  bad[100]! ^= 0x01;

  const ing = (await tracker.begin(digest, 'stream', SIZE))!;
  t.truthy(ing);
  let answered: string | undefined;
  const read = tracker.waitFor(digest, 0, 4096).then(
    (path) => {
      answered = path;
      return path;
    },
    (err: unknown) => Promise.reject(err),
  );
  read.catch(() => {});
  // Everything but the last chunk arrives: the head is on disk, unverified.
  for (let o = 0; o < SIZE - CHUNK; o += CHUNK) {
    await ing.write(bad.subarray(o, o + CHUNK));
    await tick();
  }
  await tick();
  t.is(answered, undefined, 'the read is not answered from unverified bytes');
  t.is(tracker.waiting(), 1, 'the read waits for the verified content');
  await ing.write(bad.subarray(SIZE - CHUNK));
  await t.throwsAsync(ing.finish(SIZE), { code: 'SL_ERR_CAS_DIGEST_MISMATCH' } as never);
  await t.throwsAsync(read, { code: 'SL_ERR_CAS_DIGEST_MISMATCH' } as never);
  t.is(answered, undefined);
  t.is(tracker.locate(digest), null, 'nothing committed');
});

test('a read of the head of a good item is answered with verified content only', async (t) => {
  const { tracker, data, digest } = await setup(t, false);
  const ing = (await tracker.begin(digest, 'stream', SIZE))!;
  let answered: string | undefined;
  const read = tracker.waitFor(digest, 0, 4096).then((p) => (answered = p));
  for (let o = 0; o < SIZE; o += CHUNK) {
    await ing.write(data.subarray(o, o + CHUNK));
    await tick();
    if (o + CHUNK < SIZE) t.is(answered, undefined, `not answered before the item ended (at ${o})`);
  }
  await ing.finish(SIZE);
  t.is(await read, tracker.locate(digest)!, 'answered with the committed, verified file');
});

test('an item that decodes to more than its announced size fails before the excess is written (decompression bomb)', async (t) => {
  const { gzipSync } = await import('node:zlib');
  const { Readable } = await import('node:stream');
  const { readdirSync } = await import('node:fs');
  // 64 MiB of zeros gzip to ~64 KiB; the proxy announces 1 MiB for it.
  const announced = 1 << 20;
  const bomb = gzipSync(Buffer.alloc(64 << 20));
  const digest = digestOf(Buffer.alloc(announced));
  let fetches = 0;
  const store = await new LocalContentStore(tempDir(t)).open();
  const tracker = new ContentTracker(store, {
    readDeadlineMs: 30_000,
    fetchRetryMs: 10,
    fetchItem: async () => {
      fetches++;
      return { encoding: 'gzip', size: announced, body: Readable.from([bomb]) };
    },
  });
  t.teardown(() => tracker.close());
  await t.throwsAsync(tracker.waitFor(digest, 0, 4096), { code: 'SL_ERR_CAS_SIZE_MISMATCH' } as never);
  t.is(fetches, 1, 'a bad item is not fetched again in a loop');
  t.deepEqual(readdirSync(store.ingestDir), [], 'the ingest file was dropped');
  t.is(tracker.locate(digest), null);
});

function chunksOf(data: Buffer): Uint8Array {
  const c = new ChunkDigests();
  c.update(data);
  return c.finish();
}

test('with chunk digests, the head of a large item is served once its chunk is verified, before the item ends', async (t) => {
  const { tracker, data, digest } = await setup(t, true);
  const ing = (await tracker.begin(digest, 'stream', SIZE))!;
  let answeredAt = -1;
  let written = 0;
  const read = tracker.waitFor(digest, 0, 4096).then((p) => {
    answeredAt = written;
    return readFileSync(p).subarray(0, 4096);
  });
  for (let o = 0; o < SIZE; o += CHUNK) {
    written = o + CHUNK; // the bytes written once this write() resolves
    await ing.write(data.subarray(o, o + CHUNK));
    await tick();
  }
  t.deepEqual(await read, data.subarray(0, 4096), 'the right bytes');
  t.is(answeredAt, CHUNK_BYTES, 'answered as soon as the first chunk was verified');
  await ing.finish(SIZE);
  t.is(tracker.locate(digest) !== null, true);
});

test('with chunk digests, a bit flip in the first chunk fails the item when that chunk ends; nothing is served', async (t) => {
  const { tracker, data, digest } = await setup(t, true);
  const bad = Buffer.from(data);
  bad[100]! ^= 0x01;
  const ing = (await tracker.begin(digest, 'stream', SIZE))!;
  let answered = false;
  const read = tracker.waitFor(digest, 0, 4096).then(() => void (answered = true));
  read.catch(() => {});
  let failedAt = -1;
  for (let o = 0; o < SIZE; o += CHUNK) {
    try {
      await ing.write(bad.subarray(o, o + CHUNK));
    } catch (err) {
      t.is((err as { code?: string }).code, 'SL_ERR_CAS_DIGEST_MISMATCH');
      failedAt = o + CHUNK;
      await ing.fail(err);
      break;
    }
  }
  t.is(failedAt, CHUNK_BYTES, 'refused when the first chunk completed, not at the end of the item');
  await t.throwsAsync(read, { code: 'SL_ERR_CAS_DIGEST_MISMATCH' } as never);
  t.false(answered);
  t.is(tracker.locate(digest), null);
});

test('an out-of-order fetch announcing another size than the TOC says is refused before a byte is written', async (t) => {
  const { Readable } = await import('node:stream');
  const data = Buffer.from('twelve bytes');
  const digest = digestOf(data);
  let fetches = 0;
  const store = await new LocalContentStore(tempDir(t)).open();
  const tracker = new ContentTracker(store, {
    readDeadlineMs: 30_000,
    fetchItem: async () => {
      fetches++;
      return { encoding: 'identity', size: 1 << 30, body: Readable.from([data]) };
    },
  });
  t.teardown(() => tracker.close());
  tracker.expectSize(digest, data.length);
  await t.throwsAsync(tracker.waitFor(digest, 0, 12), { code: 'SL_ERR_CAS_SIZE_MISMATCH' } as never);
  t.is(fetches, 1);
  t.is(tracker.locate(digest), null);
});
