/**
 * FramedRuns with real parts (metadata store, content cache and its memory tier): runs tile the small
 * items of a table and their frames are the bytes per-item writes produce; a run is built only from
 * items in memory. DeltaSessions that write shared runs send byte-identical streams to sessions that
 * frame each item themselves: from the start, from a resume point, with items bumped before the
 * start, concurrently, and with frames smaller than a run's items; a bump mid-stream still overtakes the planned items.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { brotliDecompressSync } from 'node:zlib';
import { CONTENT_HEAD_BYTES, DeltaDecoder, DeltaEncoder, FRAME_HEAD_BYTES, type DeltaHeader } from '../../../src/protocol/index.js';
import { contentHead } from '../../../src/protocol/frames.js';
import { ContentCache } from '../../../src/proxy/content-cache.js';
import type { IndexerService } from '../../../src/proxy/indexer-service.js';
import { FramedRunStore, RUN_BYTES, RUN_ITEM_BYTES, type FramedRuns } from '../../../src/proxy/session/framed-runs.js';
import { announce, type ItemSourceDeps } from '../../../src/proxy/session/item-source.js';
import { DeltaSession } from '../../../src/proxy/session/session.js';
import { MetadataStore, STORE_FILE } from '../../../src/proxy/store.js';
import { deltaHeader } from '../../helpers/delta-header.js';
import { tempDir } from '../../helpers/tmp.js';

const dg = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** `n` deterministic incompressible bytes (sha256 in counter mode). */
function noise(seed: string, n: number): Buffer {
  const parts: Buffer[] = [];
  for (let k = 0; k * 32 < n; k++) parts.push(createHash('sha256').update(`${seed}/${k}`).digest());
  return Buffer.concat(parts).subarray(0, n);
}

/** Compressible text (stored brotli), incompressible items (identity), an empty one and one too large for a run. */
function contentsOf(): Buffer[] {
  const text = Array.from({ length: 30 }, (_, i) => Buffer.from(`line ${i} of a config file\n`.repeat(800)));
  const small = Array.from({ length: 40 }, (_, i) => noise(`s${i}`, 12 * 1024));
  return [...text.slice(0, 10), Buffer.alloc(0), noise('large', 100 * 1024), ...text.slice(10), ...small, noise('tail', 3000)];
}

async function cached(t: ExecutionContext, contents: Buffer[]): Promise<{ deps: ItemSourceDeps; header: DeltaHeader; dir: string; store: MetadataStore }> {
  const dir = tempDir(t, 'starlight-runs-');
  const store = new MetadataStore(join(dir, STORE_FILE));
  t.teardown(() => store.close());
  const cache = new ContentCache({ dir, maxBytes: 256 * 1024 * 1024, store });
  for (const c of contents) await cache.put(Readable.from([c]), c.length, 'sha256:l');
  const deps: ItemSourceDeps = { store, cache, indexer: undefined as unknown as IndexerService };
  return { deps, header: deltaHeader(contents.map((c) => announce(deps, dg(c), 'test'))), dir, store };
}

/** The whole stream of one session (`runs` shared, or none), with `bump` applied before it starts. */
async function stream(deps: ItemSourceDeps, header: DeltaHeader, runs: FramedRuns | undefined, bump: number[] = [], chunkBytes?: number): Promise<Buffer> {
  const out = new PassThrough();
  const parts: Buffer[] = [];
  out.on('data', (b: Buffer) => parts.push(b));
  const s = new DeltaSession({ id: 'test', header, sources: header.items.map(() => 'sha256:l'), deps, encoder: new DeltaEncoder(out), refetchBudget: 0, runs, chunkBytes });
  if (bump.length > 0) s.bump(bump);
  const failed = await s.run(new AbortController().signal);
  if (failed !== undefined) throw failed;
  out.end();
  await new Promise((r) => out.on('end', r));
  return Buffer.concat(parts);
}

/** Decodes a stream: items in the order they completed, and their decoded bytes. */
function decode(buf: Buffer, header: DeltaHeader): { order: number[]; data: Map<number, Buffer> } {
  const dec = new DeltaDecoder();
  const order: number[] = [];
  const parts = new Map<number, Buffer[]>();
  for (const ev of dec.push(buf)) {
    if (ev.type !== 'chunk') continue;
    parts.set(ev.index, [...(parts.get(ev.index) ?? []), ev.data]);
    if (ev.last) order.push(ev.index);
  }
  if (!dec.isDone()) throw new Error('stream did not end');
  const data = new Map<number, Buffer>();
  for (const [i, ps] of parts) {
    const raw = Buffer.concat(ps);
    data.set(i, header.items[i]!.encoding === 'br' ? brotliDecompressSync(raw) : raw);
  }
  return { order, data };
}

test('runs tile the small items; their frames are the per-item frames; built only from items in memory', async (t) => {
  const contents = contentsOf();
  const { deps, header, dir, store } = await cached(t, contents);
  const items = header.items;
  t.true(items.some((it) => it.encoding === 'br') && items.some((it) => it.encoding === 'identity'));
  const runs = new FramedRunStore().runsOf(items, (d) => deps.cache.inMemory(d))!;
  const covered = new Array<number>(items.length).fill(0);
  for (let i = 0; i < items.length; i++) {
    const run = runs.at(i);
    if (run === undefined) continue;
    const want: Buffer[] = [];
    for (let j = i; j < run.end; j++) {
      covered[j]!++;
      const got = await deps.cache.open(items[j]!.digest);
      const data = got!.body as Buffer;
      want.push(contentHead(j, 0, data.length), data);
    }
    t.deepEqual(run.frames, Buffer.concat(want), `run ${i}..${run.end - 1}`);
    t.true(run.frames.length <= RUN_BYTES);
    t.true(runs.isBuilt(i));
  }
  items.forEach((it, i) => t.is(covered[i], it.encodedSize <= RUN_ITEM_BYTES ? 1 : 0, `item ${i} (${it.encodedSize} B) in ${covered[i]} run(s)`));
  t.true(covered.filter((c, i) => c === 1 && i > 12).length > (RUN_BYTES / (12 * 1024 + FRAME_HEAD_BYTES + CONTENT_HEAD_BYTES)), 'the 40 small items span more than one run');

  // A cache whose memory tier is empty (a restart): no run until its items were read once.
  const restarted = new ContentCache({ dir, maxBytes: 256 * 1024 * 1024, store });
  const cold = new FramedRunStore().runsOf(items, (d) => restarted.inMemory(d))!;
  t.is(cold.at(0), undefined);
  t.false(cold.isBuilt(0));
  for (let j = 0; j < 12; j++) await restarted.open(items[j]!.digest);
  t.deepEqual(cold.at(0)?.frames, runs.at(0)?.frames);
  t.is(new FramedRunStore(0).runsOf(items, (d) => deps.cache.inMemory(d)), undefined, 'a bound of 0 turns runs off');
});

test('sessions writing shared runs send the bytes of sessions framing each item: from the start, resumed, bumped, concurrently', async (t) => {
  const contents = contentsOf();
  const { deps, header } = await cached(t, contents);
  const runs = new FramedRunStore().runsOf(header.items, (d) => deps.cache.inMemory(d))!;
  const plain = await stream(deps, header, undefined);
  t.false(runs.isBuilt(0));
  t.deepEqual(await stream(deps, header, runs), plain);
  t.true(runs.isBuilt(0), 'the session wrote runs');
  const { order, data } = decode(plain, header);
  t.deepEqual(order, contents.map((_, i) => i));
  contents.forEach((c, i) => t.deepEqual(data.get(i), c, `item ${i}`));

  const resumed = { ...header, firstItem: 5 };
  t.deepEqual(await stream(deps, resumed, runs), await stream(deps, resumed, undefined), 'from a point inside a run');
  const bump = [60, 3, 11, 40];
  const bumped = await stream(deps, header, runs, bump);
  t.deepEqual(bumped, await stream(deps, header, undefined, bump), 'items bumped out of runs');
  t.deepEqual(decode(bumped, header).order.slice(0, 4), bump);
  const together = await Promise.all([stream(deps, header, runs), stream(deps, header, runs, bump), stream(deps, header, runs)]);
  t.deepEqual(together, [plain, bumped, plain]);
  t.deepEqual(await stream(deps, header, runs, [], 4096), await stream(deps, header, undefined, [], 4096), 'frames smaller than a run item: no runs');
});

test('a bump mid-stream overtakes planned items also when runs are shared', async (t) => {
  const contents = contentsOf();
  const { deps, header } = await cached(t, contents);
  const runs = new FramedRunStore().runsOf(header.items, (d) => deps.cache.inMemory(d))!;
  // A consumer that reads nothing until told: the session blocks on backpressure after its first write.
  const out = new PassThrough({ highWaterMark: 1024 });
  const s = new DeltaSession({ id: 'test', header, sources: header.items.map(() => 'sha256:l'), deps, encoder: new DeltaEncoder(out, { maxBuffered: 1 }), refetchBudget: 0, runs });
  const done = s.run(new AbortController().signal);
  const dec = new DeltaDecoder();
  const order: number[] = [];
  const last = header.items.length - 1;
  let bumped = false;
  for await (const b of out as AsyncIterable<Buffer>) {
    for (const ev of dec.push(b)) {
      if (ev.type !== 'chunk') continue;
      if (ev.last) order.push(ev.index);
      if (!bumped) {
        s.bump([last, last - 2]);
        bumped = true;
      }
    }
    if (dec.isDone()) break;
  }
  t.is(await done, undefined);
  t.deepEqual([...order].sort((a, b) => a - b), contents.map((_, i) => i), 'every item once');
  t.true(order.indexOf(last) < order.indexOf(last - 3) && order.indexOf(last - 2) < order.indexOf(last - 3), `bumped items before the planned ones before them: ${order.join(',')}`);
});
