/**
 * Issue 14 "never wrong bytes": no byte of content reaches a reader before the content's digest was
 * checked. A stream whose item is corrupted early (a bit flip in the first KiB of a large file) must
 * not satisfy a read of the first 4 KiB from its ingest file while the rest is still arriving; the
 * read waits, then fails with the digest mismatch (EIO at the FUSE boundary) when the item ends.
 * Failed before the fix (ranges ending before the last byte were served from the ingest file).
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { setImmediate as tick } from 'node:timers/promises';
import { LocalContentStore } from '../../../src/worker/cas/store.js';
import { ContentTracker } from '../../../src/worker/stream/content-tracker.js';
import { tempDir } from '../../helpers/tmp.js';

const SIZE = 4 << 20;
const CHUNK = 64 << 10;
const digestOf = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

test('a read of the head of a corrupted, still-streaming item is never answered with its bytes', async (t) => {
  const store = await new LocalContentStore(tempDir(t)).open();
  const tracker = new ContentTracker(store, { readDeadlineMs: 30_000 });
  t.teardown(() => tracker.close());
  const data = randomBytes(SIZE);
  const digest = digestOf(data);
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
  const store = await new LocalContentStore(tempDir(t)).open();
  const tracker = new ContentTracker(store, { readDeadlineMs: 30_000 });
  t.teardown(() => tracker.close());
  const data = randomBytes(SIZE);
  const digest = digestOf(data);
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
