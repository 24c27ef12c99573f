/**
 * HeaderFirst (src/proxy/session/header-first.ts): content waits while a header is pending, until it
 * is released or its hold ends; and two real DeltaSessions sharing one: the second stream's content
 * waits until the first stream's header has left its buffer, and both streams stay intact.
 */
import test from 'ava';
import { PassThrough, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { yieldToLoop } from '../../../src/event-loop.js';
import { DeltaDecoder, DeltaEncoder } from '../../../src/protocol/index.js';
import { HeaderFirst } from '../../../src/proxy/session/header-first.js';
import { announce } from '../../../src/proxy/session/item-source.js';
import { DeltaSession } from '../../../src/proxy/session/session.js';
import { deltaHeader } from '../../helpers/delta-header.js';
import { sha256Of as dg, stagedDeps } from '../../helpers/staged-deps.js';

/** A few event-loop turns: long enough for anything not waiting to have happened. */
async function turns(n = 20): Promise<void> {
  for (let i = 0; i < n; i++) await yieldToLoop();
}

test('clear() is immediate while nothing is pending, and waits for every release', async (t) => {
  const g = new HeaderFirst(60_000);
  t.false(g.pending);
  await g.clear();
  const a = g.begin();
  const b = g.begin();
  t.true(g.pending);
  let cleared = false;
  const c = g.clear().then(() => (cleared = true));
  a();
  a(); // a release is idempotent
  await turns();
  t.false(cleared, 'one header is still pending');
  t.true(g.pending);
  b();
  await c;
  t.true(cleared);
  t.false(g.pending);
});

test('a header that is never released holds content back only for its hold time', async (t) => {
  const g = new HeaderFirst(30);
  g.begin();
  t.true(g.pending);
  await Promise.race([g.clear(), new Promise((_, reject) => setTimeout(() => reject(new Error('hold did not end within 10 s')), 10_000).unref())]);
  t.false(g.pending);
});

test('a second stream sends no content while the first stream’s header waits in its buffer; both streams intact', async (t) => {
  // Deterministic contents, staged raw (sent 'identity').
  const contents = Array.from({ length: 4 }, (_, i) => Buffer.alloc(100 * 1024 + i, i + 1));
  const deps = await stagedDeps(t, contents);
  const gate = new HeaderFirst(60_000);
  const stream = (): { out: PassThrough; session: DeltaSession } => {
    const h = deltaHeader(contents.map((c) => announce(deps, dg(c), 'test')));
    // A buffer smaller than the header: the header stays in it until the consumer reads.
    const out = new PassThrough({ highWaterMark: 64 });
    const session = new DeltaSession({ id: 's', header: h, sources: contents.map(() => 'sha256:l'), deps, encoder: new DeltaEncoder(out), refetchBudget: 0, headerFirst: gate });
    return { out, session };
  };
  const a = stream();
  const b = stream();
  const runA = a.session.run(new AbortController().signal);
  const runB = b.session.run(new AbortController().signal);
  const read = async (out: PassThrough, onEvent: (type: string) => void): Promise<Map<number, Buffer[]>> => {
    const dec = new DeltaDecoder();
    const got = new Map<number, Buffer[]>();
    for await (const chunk of out as AsyncIterable<Buffer>) {
      for (const ev of dec.push(chunk)) {
        onEvent(ev.type);
        if (ev.type === 'chunk') got.set(ev.index, [...(got.get(ev.index) ?? []), ev.data]);
      }
      if (dec.isDone()) break;
    }
    return got;
  };
  const seenB: string[] = [];
  const gotB = read(b.out, (type) => seenB.push(type));
  // B's consumer reads: B's own header leaves, but A's header is still in A's buffer.
  const deadline = Date.now() + 30_000;
  while (!seenB.includes('header') && Date.now() < deadline) await yieldToLoop();
  t.true(seenB.includes('header'), 'B got its header');
  await turns();
  t.true(gate.pending, "A's header is pending");
  t.false(seenB.includes('chunk'), 'B sends no content while A’s header waits');
  const gotA = await read(a.out, () => undefined);
  t.is(await runA, undefined);
  t.is(await runB, undefined);
  const all = await gotB;
  t.true(seenB.includes('chunk'));
  for (const got of [gotA, all]) contents.forEach((c, i) => t.deepEqual(Buffer.concat(got.get(i) ?? []), c, `item ${i}`));
});

test('a header smaller than the socket’s highWaterMark releases the gate once written (no drain event comes)', async (t) => {
  // A Writable like a socket: writes complete a turn later; a write under highWaterMark returns true,
  // so no 'drain' follows. Such a header held every stream's content for the whole hold before.
  const contents = [Buffer.alloc(3000, 1), Buffer.alloc(5000, 2)];
  const deps = await stagedDeps(t, contents);
  const gate = new HeaderFirst(60_000);
  const chunks: Buffer[] = [];
  const out = new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk);
      setImmediate(cb);
    },
  });
  const h = deltaHeader(contents.map((c) => announce(deps, dg(c), 'test')));
  const session = new DeltaSession({ id: 's', header: h, sources: contents.map(() => 'sha256:l'), deps, encoder: new DeltaEncoder(out), refetchBudget: 0, headerFirst: gate });
  const ran = await Promise.race([session.run(new AbortController().signal), new Promise((resolve) => setTimeout(() => resolve('held'), 10_000).unref())]);
  t.is(ran, undefined, 'the stream ended without waiting for the hold');
  t.false(gate.pending);
  // run() settles once its END frame is handed to the Writable, which takes each write a turn after
  // the one before: let it take what it holds before reading what it got (CI saw the END missing).
  out.end();
  await finished(out);
  const dec = new DeltaDecoder();
  const got = new Map<number, Buffer[]>();
  for (const ev of dec.push(Buffer.concat(chunks))) if (ev.type === 'chunk') got.set(ev.index, [...(got.get(ev.index) ?? []), ev.data]);
  t.true(dec.isDone());
  contents.forEach((c, i) => t.deepEqual(Buffer.concat(got.get(i) ?? []), c, `item ${i}`));
});
