/**
 * Guard for the EIO investigation (intermittent `exec …: input/output error` on lazy views): every
 * path ContentTracker.waitFor resolves with must be openable and hold the requested bytes at the
 * moment the FUSE addon uses it. fuse-views.ts calls provide() in the promise's first reaction and
 * the addon opens and preads the path synchronously inside provide() (native/session.cc
 * ReplyFromFile: an open failure there is an EIO that nothing logs). These tests do the same with
 * openSync/readSync while ingests are written, committed (rename), aborted (connection lost) and
 * taken over by an out-of-order fetch, with reads of random ranges arriving all the time.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { Readable } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { LocalContentStore } from '../../../src/worker/cas/store.js';
import { ContentTracker, type Ingest } from '../../../src/worker/stream/content-tracker.js';
import type { ContentResponse } from '../../../src/worker/stream/proxy-client.js';
import { tempDir } from '../../helpers/tmp.js';

/** Content size, bytes; chunk size of the simulated stream, bytes. */
const SIZE = 1 << 20;
const CHUNK = 16 << 10;
/** Reads issued per scenario. */
const READS = 400;

const digestOf = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** What the addon does in provide(): open + pread, synchronously. Returns an error text or null. */
function readNow(path: string, data: Buffer, offset: number, length: number): string | null {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    return `open ${path}: ${(err as Error).message}`;
  }
  try {
    const buf = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
      const n = readSync(fd, buf, got, length - got, offset + got);
      if (n === 0) break;
      got += n;
    }
    if (got !== length) return `short read of ${path}: ${got}/${length} at ${offset}`;
    if (!buf.equals(data.subarray(offset, offset + length))) return `wrong bytes in ${path} at ${offset}`;
    return null;
  } finally {
    closeSync(fd);
  }
}

/**
 * Issues READS waits for random ranges (some whole-file) at random moments; checks each path like
 * provide(). Resolves with the problems found and how many reads were served from an ingest file.
 */
function readers(tracker: ContentTracker, digest: string, data: Buffer): Promise<{ problems: string[]; fromIngest: number }> {
  const problems: string[] = [];
  let fromIngest = 0;
  const all: Promise<void>[] = [];
  return (async () => {
    for (let i = 0; i < READS; i++) {
      const whole = i % 10 === 0;
      const offset = whole ? 0 : Math.floor(Math.random() * data.length);
      const length = whole ? data.length : Math.min(data.length - offset, 1 + Math.floor(Math.random() * 128 * 1024));
      all.push(
        tracker.waitFor(digest, offset, length).then(
          (path) => {
            if (path !== tracker.locate(digest)) fromIngest++;
            const p = readNow(path, data, offset, length);
            if (p) problems.push(p);
          },
          (err: unknown) => void problems.push(`waitFor rejected: ${(err as Error).message}`),
        ),
      );
      if (Math.random() < 0.5) await tick();
    }
    await Promise.all(all);
    return { problems, fromIngest };
  })();
}

async function writeAll(ing: Ingest, data: Buffer, upTo = data.length): Promise<void> {
  for (let o = 0; o < upTo; o += CHUNK) {
    await ing.write(data.subarray(o, Math.min(upTo, o + CHUNK)));
    if (Math.random() < 0.3) await tick();
  }
}

test('paths handed to readers stay valid while an ingest is written and committed', async (t) => {
  const store = await new LocalContentStore(tempDir(t)).open();
  const tracker = new ContentTracker(store, { readDeadlineMs: 20_000 });
  t.teardown(() => tracker.close());
  const data = randomBytes(SIZE);
  const digest = digestOf(data);
  const reading = readers(tracker, digest, data);
  await tick();
  const ing = (await tracker.begin(digest, 'stream', data.length))!;
  t.truthy(ing);
  await writeAll(ing, data);
  await ing.finish(data.length);
  const { problems, fromIngest } = await reading;
  t.deepEqual(problems, []);
  t.is(fromIngest, 0, 'no read is served from the (unverified) ingest file');
  t.is(tracker.waiting(), 0);
});

test('paths handed to readers stay valid when the stream drops mid-item and a fetch takes over', async (t) => {
  const data = randomBytes(SIZE);
  const digest = digestOf(data);
  let fetches = 0;
  const fetchItem = async (d: string): Promise<ContentResponse> => {
    t.is(d, digest);
    fetches++;
    const chunks: Buffer[] = [];
    for (let o = 0; o < data.length; o += CHUNK) chunks.push(data.subarray(o, o + CHUNK));
    return { encoding: 'identity', size: data.length, body: Readable.from(chunks) };
  };
  const store = await new LocalContentStore(tempDir(t)).open();
  const tracker = new ContentTracker(store, { readDeadlineMs: 20_000, fetchItem, fetchRetryMs: 10 });
  t.teardown(() => tracker.close());
  const ing = (await tracker.begin(digest, 'stream', data.length))!;
  const reading = readers(tracker, digest, data);
  await writeAll(ing, data, SIZE / 2);
  await ing.abort(); // connection lost: readers keep waiting, the tracker fetches out of order
  t.deepEqual((await reading).problems, []);
  t.true(fetches >= 1);
  t.true(tracker.has(digest));
});
