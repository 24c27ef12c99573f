/**
 * DeltaSession with real parts (metadata store, content cache, staging area): items are staged raw
 * and sent 'identity'; a bump mid-stream makes the bumped items arrive next, preempting the item in
 * progress at a frame boundary; every item arrives once and intact.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { DeltaDecoder, DeltaEncoder } from '../../../src/protocol/index.js';
import { deltaHeader } from '../../helpers/delta-header.js';
import { announce } from '../../../src/proxy/session/item-source.js';
import { DeltaSession } from '../../../src/proxy/session/session.js';
import { sha256Of as dg, stagedDeps } from '../../helpers/staged-deps.js';

const ITEMS = 12;
const ITEM_BYTES = 200 * 1024;
const CHUNK = 64 * 1024;

test('bumped items arrive next, preempting the item in progress; all items once and intact', async (t) => {
  const contents = Array.from({ length: ITEMS }, () => randomBytes(ITEM_BYTES));
  const deps = await stagedDeps(t, contents);
  const h = deltaHeader(contents.map((c) => announce(deps, dg(c), 'test')));
  t.true(h.items.every((i) => i.encoding === 'identity'));
  // A consumer that reads nothing until told: the session blocks on backpressure mid-item.
  const out = new PassThrough({ highWaterMark: 1024 });
  const enc = new DeltaEncoder(out, { chunkBytes: CHUNK, maxBuffered: 1 });
  const s = new DeltaSession({ id: 'test', header: h, sources: contents.map(() => 'sha256:l'), deps, encoder: enc, refetchBudget: 0, chunkBytes: CHUNK });
  const done = s.run(new AbortController().signal);
  const dec = new DeltaDecoder();
  const completed: number[] = [];
  const firstFrameOf = new Map<number, number>();
  const got = new Map<number, Buffer[]>();
  let frames = 0;
  let bumped = false;
  for await (const b of out as AsyncIterable<Buffer>) {
    for (const ev of dec.push(b)) {
      if (ev.type !== 'chunk') continue;
      if (!firstFrameOf.has(ev.index)) firstFrameOf.set(ev.index, frames);
      frames++;
      got.set(ev.index, [...(got.get(ev.index) ?? []), ev.data]);
      if (ev.last) completed.push(ev.index);
      // item 0 has started (its first frame arrived): bump two items near the end
      if (!bumped) {
        s.bump([ITEMS - 1, ITEMS - 3]);
        bumped = true;
      }
    }
    if (dec.isDone()) break;
  }
  t.is(await done, undefined);
  t.true(dec.isDone());
  t.deepEqual(completed.slice(0, 3), [ITEMS - 1, ITEMS - 3, 0], 'bumped items first, then the preempted item 0 resumes');
  t.is(firstFrameOf.get(0), 0, 'item 0 had started');
  t.deepEqual(completed.slice(3), [1, 2, 3, 4, 5, 6, 7, 8, 10]);
  contents.forEach((c, i) => t.deepEqual(Buffer.concat(got.get(i)!), c, `item ${i}`));
});

/** Items completed in a session's stream, in order, and whether the header came first. */
async function completedOf(s: DeltaSession, out: PassThrough, onHeader: () => void): Promise<number[]> {
  const done = s.run(new AbortController().signal);
  const dec = new DeltaDecoder();
  const completed: number[] = [];
  for await (const b of out as AsyncIterable<Buffer>) {
    for (const ev of dec.push(b)) {
      if (ev.type === 'header') onHeader();
      if (ev.type === 'chunk' && ev.last) completed.push(ev.index);
    }
    if (dec.isDone()) break;
  }
  if ((await done) !== undefined) throw new Error('session failed');
  return completed;
}

/** A session of `n` small staged items writing to `out`. */
async function smallSession(t: ExecutionContext, n: number): Promise<{ s: DeltaSession; out: PassThrough }> {
  const contents = Array.from({ length: n }, () => randomBytes(4096));
  const deps = await stagedDeps(t, contents);
  const h = deltaHeader(contents.map((c) => announce(deps, dg(c), 'test')));
  const out = new PassThrough();
  return { s: new DeltaSession({ id: 'test', header: h, sources: contents.map(() => 'sha256:l'), deps, encoder: new DeltaEncoder(out), refetchBudget: 0 }), out };
}

test('holdItemsUntil: the header goes out, items wait for the order that re-prefers them', async (t) => {
  const { s, out } = await smallSession(t, 6);
  let release!: () => void;
  s.holdItemsUntil(new Promise<void>((r) => (release = r)).then(() => s.prefer([4, 2])));
  const completed = await completedOf(s, out, () => release());
  t.deepEqual(completed, [4, 2, 0, 1, 3, 5]);
});

test('holdItemsUntil: a bump releases the items before the order lands', async (t) => {
  const { s, out } = await smallSession(t, 4);
  s.holdItemsUntil(new Promise<void>(() => undefined)); // never lands
  s.bump([]); // an empty bump (a control connection) releases nothing
  const completed = await completedOf(s, out, () => s.bump([3]));
  t.deepEqual(completed, [3, 0, 1, 2]);
});

test('headerSent settles once the header is written, items held (what the first-contact prediction waits for); also when run() fails first', async (t) => {
  const { s, out } = await smallSession(t, 3);
  s.holdItemsUntil(new Promise<void>(() => undefined)); // items wait for a bump
  const done = s.run(new AbortController().signal);
  await s.headerSent;
  const dec = new DeltaDecoder();
  const events = dec.push(out.read() as Buffer);
  t.deepEqual(
    events.map((e) => e.type),
    ['header'],
    'the header, and nothing after it yet',
  );
  s.bump([2]);
  for await (const b of out as AsyncIterable<Buffer>) {
    dec.push(b);
    if (dec.isDone()) break;
  }
  t.is(await done, undefined);

  // A session whose header cannot be written: headerSent settles all the same (the prediction still runs).
  const broken = await smallSession(t, 1);
  broken.out.destroy();
  await t.throwsAsync(broken.s.run(new AbortController().signal));
  await broken.s.headerSent;
});
