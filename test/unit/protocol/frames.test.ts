import test from 'ava';
import { PassThrough } from 'node:stream';
import { createHash } from 'node:crypto';
import { brotliCompressSync, constants as zc } from 'node:zlib';
import { Packr } from 'msgpackr';
import { DeltaDecoder, DeltaEncoder, decodeDelta, FrameType, type DeltaEvent, type DeltaHeader } from '../../../src/protocol/index.js';
import { contentFrames, errorFrame, frameHead, headerFrame, headerPayload, preamble } from '../../../src/protocol/frames.js';
import { MAX_HEADER_BYTES } from '../../../src/protocol/constants.js';
import type { StarlightError } from '../../../src/errors.js';
import { deltaHeader, identityItems, streamBytes } from '../../helpers/delta-header.js';

function digest(b: Buffer): string {
  return 'sha256:' + createHash('sha256').update(b).digest('hex');
}

function makeHeader(contents: Buffer[], firstItem = 0): DeltaHeader {
  return {
    ...deltaHeader(identityItems(contents), firstItem),
    manifest: Buffer.from('{"schemaVersion":2}'),
    config: Buffer.from('{"os":"linux"}'),
    diffIDs: [digest(Buffer.from('l0')), digest(Buffer.from('l1'))],
    layers: [{ diffID: digest(Buffer.from('l1')), toc: Buffer.from([1, 2, 3]) }],
  };
}

async function encodeAll(h: DeltaHeader, contents: Buffer[], chunkBytes = 1000): Promise<Buffer> {
  const out = new PassThrough();
  const parts: Buffer[] = [];
  out.on('data', (b: Buffer) => parts.push(b));
  const enc = new DeltaEncoder(out, { chunkBytes });
  await enc.writeHeader(h);
  for (let i = h.firstItem; i < contents.length; i++) {
    const c = contents[i]!;
    // odd-sized source chunks to exercise re-chunking
    await enc.writeItem(i, (async function* () {
      for (let o = 0; o < c.length; o += 777) yield c.subarray(o, o + 777);
    })());
  }
  const end = await enc.writeEnd();
  out.end();
  await new Promise((r) => out.on('end', r));
  const all = Buffer.concat(parts);
  if (enc.bytesWritten !== all.length) throw new Error('bytesWritten mismatch');
  if (end.items !== contents.length - h.firstItem) throw new Error('end items mismatch');
  return all;
}

async function decodeAll(buf: Buffer, step = 333): Promise<{ events: DeltaEvent[]; items: Map<number, Buffer> }> {
  const events: DeltaEvent[] = [];
  const items = new Map<number, Buffer>();
  const src = (async function* () {
    for (let o = 0; o < buf.length; o += step) yield buf.subarray(o, o + step);
  })();
  for await (const ev of decodeDelta(src)) {
    events.push(ev);
    if (ev.type === 'chunk') items.set(ev.index, Buffer.concat([items.get(ev.index) ?? Buffer.alloc(0), ev.data]));
  }
  return { events, items };
}

const contents = [Buffer.alloc(2500, 7), Buffer.from('hello'), Buffer.alloc(1, 1), Buffer.alloc(1000, 3)];

test('roundtrip: header fields, items and chunk bounds', async (t) => {
  const h = makeHeader(contents);
  const wire = await encodeAll(h, contents);
  const { events, items } = await decodeAll(wire);
  const hdr = events[0];
  t.is(hdr?.type, 'header');
  if (hdr?.type !== 'header') return;
  t.deepEqual(hdr.header.items, h.items);
  t.is(hdr.header.ref, h.ref);
  t.deepEqual(Buffer.from(hdr.header.manifest), Buffer.from(h.manifest));
  t.deepEqual(Buffer.from(hdr.header.config), Buffer.from(h.config));
  t.deepEqual(hdr.header.diffIDs, h.diffIDs);
  t.deepEqual(Buffer.from(hdr.header.layers[0]!.toc), Buffer.from([1, 2, 3]));
  for (let i = 0; i < contents.length; i++) t.deepEqual(items.get(i), contents[i]);
  const chunks = events.filter((e) => e.type === 'chunk');
  t.true(chunks.every((c) => c.type === 'chunk' && c.data.length <= 1000));
  t.is(chunks.filter((c) => c.type === 'chunk' && c.last).length, contents.length);
  t.deepEqual(events.at(-1), { type: 'end', end: { items: 4, contentBytes: 2500 + 5 + 1 + 1000 } });
});

test('compressed TOCs (tocs=br): the decoder returns the TOC bytes as encoded; bad or expanding ones are malformed', async (t) => {
  const toc = Buffer.from('a TOC that compresses well. '.repeat(400));
  const h: DeltaHeader = { ...makeHeader(contents), layers: [{ diffID: digest(Buffer.from('l1')), toc: brotliCompressSync(toc), encoding: 'br' }] };
  const { events, items } = await decodeAll(await encodeAll(h, contents));
  const hdr = events[0];
  if (hdr?.type !== 'header') return t.fail('no header');
  t.deepEqual(Buffer.from(hdr.header.layers[0]!.toc), toc);
  t.is(hdr.header.layers[0]!.encoding, undefined, 'decoded: no encoding left');
  for (let i = 0; i < contents.length; i++) t.deepEqual(items.get(i), contents[i]);

  const malformed = async (layer: Record<string, unknown>): Promise<string> => {
    const packr = new Packr({ useRecords: false, mapsAsObjects: true });
    const payload = packr.pack({ ...(packr.unpack(headerPayload(makeHeader(contents))) as object), layers: [layer] });
    const e = (await t.throwsAsync(decodeAll(Buffer.concat([preamble(), frameHead(FrameType.HEADER, payload.length), payload])))) as StarlightError;
    t.is(e.code, 'SL_ERR_PROTOCOL_MALFORMED');
    return e.message;
  };
  const diffID = digest(Buffer.from('l1'));
  t.regex(await malformed({ diffID, toc: brotliCompressSync(toc), encoding: 1 }), /encoding 1 is not a TOC encoding/);
  t.regex(await malformed({ diffID, toc: Buffer.from('not brotli at all'), encoding: 3 }), /does not decode as brotli/);
  // A bomb: 256 MiB of zeros compress to a few KB; decoding stops at the header bound.
  const bomb = brotliCompressSync(Buffer.alloc(MAX_HEADER_BYTES + 1), { params: { [zc.BROTLI_PARAM_QUALITY]: 1 } });
  t.true(bomb.length < 64 * 1024);
  t.regex(await malformed({ diffID, toc: bomb, encoding: 3 }), /within 268435456 bytes/);
});

test('resume: firstItem skips earlier items', async (t) => {
  const h = makeHeader(contents, 2);
  const { items } = await decodeAll(await encodeAll(h, contents));
  t.deepEqual([...items.keys()], [2, 3]);
});

test('every truncation point is SL_ERR_PROTOCOL_TRUNCATED', async (t) => {
  const wire = await encodeAll(makeHeader(contents), contents);
  for (const cut of [0, 3, 8, 9, 50, wire.length - 3000, wire.length - 1]) {
    const err = await t.throwsAsync(decodeAll(wire.subarray(0, cut)));
    t.is((err as { code?: string }).code, 'SL_ERR_PROTOCOL_TRUNCATED', `cut at ${cut}`);
  }
});

test('garbage is SL_ERR_PROTOCOL_MALFORMED, other version SL_ERR_PROTOCOL_VERSION', async (t) => {
  const wire = await encodeAll(makeHeader(contents), contents);
  const bad = (b: Buffer): Promise<unknown> => decodeAll(b);
  const codeOf = async (b: Buffer): Promise<string | undefined> => ((await t.throwsAsync(bad(b))) as { code?: string }).code;
  t.is(await codeOf(Buffer.from('HTTP/1.1 200 OK\r\n\r\n')), 'SL_ERR_PROTOCOL_MALFORMED');
  const v2 = Buffer.from(wire);
  v2.writeUInt32BE(2, 4);
  t.is(await codeOf(v2), 'SL_ERR_PROTOCOL_VERSION');
  // first frame not a header
  t.is(await codeOf(Buffer.concat([preamble(), frameHead(FrameType.END, 0)])), 'SL_ERR_PROTOCOL_MALFORMED');
  // unknown frame type after the header
  const hf = Buffer.concat([preamble(), headerFrame(makeHeader(contents))]);
  t.is(await codeOf(Buffer.concat([hf, frameHead(9 as 1, 0)])), 'SL_ERR_PROTOCOL_MALFORMED');
  // oversized content frame length
  t.is(await codeOf(Buffer.concat([hf, frameHead(FrameType.CONTENT, 0xffffffff)])), 'SL_ERR_PROTOCOL_MALFORMED');
  // header that is not msgpack
  t.is(await codeOf(Buffer.concat([preamble(), frameHead(FrameType.HEADER, 3), Buffer.from([0xc1, 0xc1, 0xc1])])), 'SL_ERR_PROTOCOL_MALFORMED');
  // bytes after END
  t.is(await codeOf(Buffer.concat([wire, Buffer.from([0])])), 'SL_ERR_PROTOCOL_MALFORMED');
  // a content frame with a wrong offset: flip a byte of the first content frame's offset
  const mut = Buffer.from(wire);
  const firstContent = hf.length;
  t.is(mut.readUInt8(firstContent), FrameType.CONTENT);
  mut.writeUInt8(1, firstContent + 5 + 4 + 7);
  t.is(await codeOf(mut), 'SL_ERR_PROTOCOL_MALFORMED');
});

test('an ERROR frame surfaces its code', async (t) => {
  const hf = Buffer.concat([preamble(), headerFrame(makeHeader(contents))]);
  const known = Buffer.concat([hf, errorFrame({ code: 'SL_ERR_OCI_UNREACHABLE', message: 'registry gone' })]);
  const e1 = await t.throwsAsync(decodeAll(known));
  t.is((e1 as { code?: string }).code, 'SL_ERR_OCI_UNREACHABLE');
  const unknown = Buffer.concat([hf, errorFrame({ code: 'SL_ERR_FROM_THE_FUTURE', message: 'x' })]);
  const e2 = await t.throwsAsync(decodeAll(unknown));
  t.is((e2 as { code?: string }).code, 'SL_ERR_PROTOCOL_REMOTE');
});

test('events before an ERROR frame in the same chunk are delivered; the error is thrown by the next push() or finish()', async (t) => {
  const h = makeHeader(contents);
  const bytes = await streamBytes(async (enc) => {
    await enc.writeHeader(h);
    await enc.writeItem(0, contents[0]!);
    await enc.writeError({ code: 'SL_ERR_OCI_UNREACHABLE', message: 'registry gone', detail: { layer: 'sha256:abc' } });
  });
  for (const splitFrames of [false, true]) {
    const dec = new DeltaDecoder({ splitFrames });
    const evs = dec.push(bytes);
    t.is(evs[0]!.type, 'header');
    t.true(evs.some((e) => e.type === 'chunk' && e.index === 0 && e.last), 'the item before the error is delivered');
    const err = t.throws(() => dec.finish()) as unknown as { code?: string; details?: Record<string, unknown> };
    t.is(err.code, 'SL_ERR_OCI_UNREACHABLE');
    t.is(err.details?.layer, 'sha256:abc');
    t.is(err.details?.nextItem, 1, 'resume after the delivered item');
    t.is((t.throws(() => dec.push(Buffer.alloc(1))) as { code?: string }).code, 'SL_ERR_OCI_UNREACHABLE', 'and again at the next push');
  }
});

test('frame type 6 (reserved: formerly EARLY) is an unknown frame, before and after the header', async (t) => {
  const hf = Buffer.concat([preamble(), headerFrame(makeHeader(contents))]);
  // An EARLY frame as a proxy with early items sent it: digest, encoding, raw size, the bytes.
  const early = Buffer.concat([frameHead(6 as 1, 41 + 5), Buffer.alloc(32, 1), Buffer.from([0]), Buffer.from([0, 0, 0, 0, 0, 0, 0, 5]), Buffer.from('hello')]);
  for (const [where, bytes] of [['before the header', Buffer.concat([preamble(), early])], ['after the header', Buffer.concat([hf, early])]] as const) {
    // Its head alone is enough: the decoder does not wait for the payload of an unknown frame.
    const headOnly = bytes.subarray(0, bytes.length - early.length + 5);
    t.throws(() => new DeltaDecoder().push(headOnly), { code: 'SL_ERR_PROTOCOL_MALFORMED', message: /unknown frame type 6/ }, where);
    t.throws(() => new DeltaDecoder({ splitFrames: true }).push(bytes), { code: 'SL_ERR_PROTOCOL_MALFORMED', message: /unknown frame type 6/ }, where);
  }
});

test('encoder refuses items whose bytes disagree with the header', async (t) => {
  const h = makeHeader(contents);
  const out = new PassThrough();
  out.resume();
  const enc = new DeltaEncoder(out);
  await enc.writeHeader(h);
  const e = await t.throwsAsync(enc.writeItem(1, (async function* () {
    yield Buffer.from('hell');
  })()));
  t.is((e as { code?: string }).code, 'SL_ERR_INTERNAL');
  const e2 = await t.throwsAsync(enc.writeItem(7, (async function* () {})()));
  t.is((e2 as { code?: string }).code, 'SL_ERR_INTERNAL');
});

test('writeFrames: contentFrames of whole items are the bytes of writeChunk per item; misuse is refused', async (t) => {
  const items = [Buffer.from('alpha'), Buffer.alloc(0), Buffer.alloc(900, 9), Buffer.from('omega'), Buffer.alloc(2000, 4)];
  const h = makeHeader(items);
  const encodeWith = async (shared: boolean): Promise<Buffer> => {
    const out = new PassThrough();
    const parts: Buffer[] = [];
    out.on('data', (b: Buffer) => parts.push(b));
    const enc = new DeltaEncoder(out, { chunkBytes: 1000 });
    await enc.writeHeader(h);
    if (shared) await enc.writeFrames(0, 4, contentFrames(0, items.slice(0, 4)));
    else for (let i = 0; i < 4; i++) await enc.writeChunk(i, items[i]!);
    await enc.writeItem(4, items[4]!);
    const end = await enc.writeEnd();
    t.deepEqual(end, { items: 5, contentBytes: items.reduce((s, b) => s + b.length, 0) });
    out.end();
    await new Promise((r) => out.on('end', r));
    return Buffer.concat(parts);
  };
  const shared = await encodeWith(true);
  t.deepEqual(shared, await encodeWith(false), 'byte-identical stream');
  const { items: got } = await decodeAll(shared);
  items.forEach((c, i) => t.deepEqual(got.get(i) ?? Buffer.alloc(0), c, `item ${i}`));

  const out = new PassThrough();
  out.resume();
  const enc = new DeltaEncoder(out, { chunkBytes: 1000 });
  await enc.writeHeader(makeHeader(items, 1));
  const code = async (p: Promise<unknown>): Promise<string | undefined> => ((await t.throwsAsync(p)) as { code?: string }).code;
  t.is(await code(enc.writeFrames(1, 3, contentFrames(1, [items[1]!]))), 'SL_ERR_INTERNAL', 'frames shorter than the items');
  t.is(await code(enc.writeFrames(0, 2, contentFrames(0, items.slice(0, 2)))), 'SL_ERR_INTERNAL', 'before firstItem');
  t.is(await code(enc.writeFrames(4, 5, contentFrames(4, [items[4]!]))), 'SL_ERR_INTERNAL', 'an item larger than a chunk');
  await enc.writeFrames(1, 3, contentFrames(1, items.slice(1, 3)));
  t.is(await code(enc.writeFrames(2, 3, contentFrames(2, [items[2]!]))), 'SL_ERR_INTERNAL', 'sent twice');
  t.is(await code(enc.writeChunk(1, Buffer.alloc(0))), 'SL_ERR_INTERNAL', 'sent twice, per item');
});

test('encoder waits for drain (bounded buffering)', async (t) => {
  const big = Buffer.alloc(8 * 1024 * 1024, 5);
  const h = makeHeader([big]);
  const out = new PassThrough({ highWaterMark: 64 * 1024 });
  const enc = new DeltaEncoder(out, { chunkBytes: 256 * 1024 });
  const dec = new DeltaDecoder();
  let maxBuffered = 0;
  let got = 0;
  const writing = (async () => {
    await enc.writeHeader(h);
    await enc.writeItem(0, (async function* () {
      for (let o = 0; o < big.length; o += 100_000) {
        maxBuffered = Math.max(maxBuffered, out.writableLength);
        yield big.subarray(o, o + 100_000);
      }
    })());
    await enc.writeEnd();
    out.end();
  })();
  for await (const b of out) {
    for (const ev of dec.push(b as Buffer)) if (ev.type === 'chunk') got += ev.data.length;
    await new Promise((r) => setImmediate(r));
  }
  await writing;
  dec.finish();
  t.is(got, big.length);
  t.true(maxBuffered < 2 * 1024 * 1024, `writable buffered ${maxBuffered}`);
});

test('decoding is independent of how the input is split (1-byte and every 2-way split)', async (t) => {
  const small = [Buffer.from('abc'), Buffer.alloc(40, 9)];
  const wire = await encodeAll(makeHeader(small), small, 16);
  const whole = await decodeAll(wire, wire.length);
  const bytewise = await decodeAll(wire, 1);
  t.deepEqual(bytewise.items, whole.items);
  for (let cut = 1; cut < wire.length; cut++) {
    const dec = new DeltaDecoder();
    const evs = [...dec.push(wire.subarray(0, cut)), ...dec.push(wire.subarray(cut))];
    dec.finish();
    t.is(evs.filter((e) => e.type === 'chunk').reduce((s, e) => s + (e.type === 'chunk' ? e.data.length : 0), 0), 43, `cut ${cut}`);
  }
});

/** Decodes with splitFrames, feeding `step`-byte pieces; concatenates each item's pieces and checks their offsets. */
function decodeSplit(buf: Buffer, step: number): { items: Map<number, Buffer>; chunkEvents: number; lasts: number[] } {
  const dec = new DeltaDecoder({ splitFrames: true });
  const items = new Map<number, Buffer>();
  const lasts: number[] = [];
  let chunkEvents = 0;
  for (let o = 0; o < buf.length; o += step) {
    for (const ev of dec.push(buf.subarray(o, o + step))) {
      if (ev.type !== 'chunk') continue;
      chunkEvents++;
      const have = items.get(ev.index) ?? Buffer.alloc(0);
      if (ev.offset !== have.length) throw new Error(`item ${ev.index}: piece at ${ev.offset}, have ${have.length}`);
      items.set(ev.index, Buffer.concat([have, ev.data]));
      if (ev.last) lasts.push(ev.index);
    }
  }
  dec.finish();
  return { items, chunkEvents, lasts };
}

test('splitFrames: pieces as they arrive, same bytes and checks as whole frames', async (t) => {
  const wire = await encodeAll(makeHeader(contents), contents);
  const { items: whole } = await decodeAll(wire, wire.length);
  for (const step of [1, 7, 333, 4096, wire.length]) {
    const split = decodeSplit(wire, step);
    t.deepEqual(split.items, whole, `step ${step}`);
    t.deepEqual(split.lasts, [...whole.keys()], `step ${step}: one last per item, in order`);
    if (step === 1) t.true(split.chunkEvents > contents.length * 10, 'data is emitted before its frame is complete');
  }
  // Truncation and garbage are refused the same way.
  for (const cut of [50, wire.length - 3000, wire.length - 1]) {
    const err = t.throws(() => decodeSplit(wire.subarray(0, cut), 100));
    t.is((err as { code?: string }).code, 'SL_ERR_PROTOCOL_TRUNCATED', `cut at ${cut}`);
  }
  const mut = Buffer.from(wire);
  const firstContent = Buffer.concat([preamble(), headerFrame(makeHeader(contents))]).length;
  mut.writeUInt8(1, firstContent + 5 + 4 + 7);
  t.is((t.throws(() => decodeSplit(mut, 100)) as { code?: string }).code, 'SL_ERR_PROTOCOL_MALFORMED');
});
