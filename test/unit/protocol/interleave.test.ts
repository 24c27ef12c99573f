import test from 'ava';
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { DeltaDecoder, DeltaEncoder, type DeltaHeader } from '../../../src/protocol/index.js';
import { deltaHeader, identityItems } from '../../helpers/delta-header.js';
import { StarlightError } from '../../../src/errors.js';
import { contentHead, headerFrame, itemFrame, preamble } from '../../../src/protocol/frames.js';
import { brotliCompressSync, brotliDecompressSync } from 'node:zlib';

const header = (contents: Buffer[], firstItem = 0): DeltaHeader => deltaHeader(identityItems(contents), firstItem);

function sink(): { out: PassThrough; bytes: () => Buffer } {
  const out = new PassThrough();
  const parts: Buffer[] = [];
  out.on('data', (b: Buffer) => parts.push(b));
  return { out, bytes: () => Buffer.concat(parts) };
}

test('writeChunk: items interleave at frame boundaries with contiguous offsets; the v1 decoder reassembles them', async (t) => {
  const contents = [randomBytes(2500), randomBytes(10), randomBytes(4000)];
  const h = header(contents);
  const { out, bytes } = sink();
  const enc = new DeltaEncoder(out, { chunkBytes: 1000 });
  await enc.writeHeader(h);
  // item 0 part, item 2 part, item 1 whole, item 0 rest, item 2 rest
  t.false(await enc.writeChunk(0, contents[0]!.subarray(0, 1000)));
  t.false(await enc.writeChunk(2, contents[2]!.subarray(0, 1000)));
  t.true(await enc.writeChunk(1, contents[1]!));
  t.false(await enc.writeChunk(0, contents[0]!.subarray(1000, 2000)));
  t.true(await enc.writeChunk(0, contents[0]!.subarray(2000)));
  for (let o = 1000; o < 4000; o += 1000) t.is(await enc.writeChunk(2, contents[2]!.subarray(o, o + 1000)), o + 1000 === 4000);
  const end = await enc.writeEnd();
  t.deepEqual(end, { items: 3, contentBytes: 6510 });

  const dec = new DeltaDecoder();
  const got = new Map<number, Buffer[]>();
  const completed: number[] = [];
  for (const ev of dec.push(bytes())) {
    if (ev.type !== 'chunk') continue;
    got.set(ev.index, [...(got.get(ev.index) ?? []), ev.data]);
    if (ev.last) completed.push(ev.index);
  }
  t.true(dec.isDone());
  t.deepEqual(completed, [1, 0, 2]);
  contents.forEach((c, i) => t.deepEqual(Buffer.concat(got.get(i)!), c));
});

test('writeChunk refuses bytes past encodedSize, a finished item, an oversize chunk, and END while an item is partly sent', async (t) => {
  const contents = [randomBytes(100), randomBytes(100)];
  const enc = new DeltaEncoder(sink().out, { chunkBytes: 64 });
  await enc.writeHeader(header(contents));
  await t.throwsAsync(enc.writeChunk(0, randomBytes(65)), { instanceOf: StarlightError, message: /exceeds/ });
  t.false(await enc.writeChunk(0, contents[0]!.subarray(0, 64)));
  await t.throwsAsync(enc.writeChunk(0, randomBytes(64)), { instanceOf: StarlightError, message: /more bytes than its encodedSize/ });
  t.true(await enc.writeChunk(0, contents[0]!.subarray(64)));
  await t.throwsAsync(enc.writeChunk(0, contents[0]!.subarray(0, 1)), { message: /sent twice/ });
  await t.throwsAsync(enc.writeItem(0, contents[0]!), { message: /sent twice/ });
  t.false(await enc.writeChunk(1, contents[1]!.subarray(0, 10)));
  await t.throwsAsync(enc.writeEnd(), { message: /partly sent/ });
});

test('deferred items: the ITEM frame sets encoding and encodedSize before the first chunk; the decoder applies it to the header', async (t) => {
  const raw = [Buffer.alloc(5000, 'a'), randomBytes(300)];
  const h = header(raw);
  h.deferred = [0];
  const { out, bytes } = sink();
  const enc = new DeltaEncoder(out, { chunkBytes: 1000 });
  await enc.writeHeader(h);
  await t.throwsAsync(enc.writeChunk(0, Buffer.alloc(10)), { message: /before writeItemEncoding/ });
  await t.throwsAsync(enc.writeItemEncoding(1, 'br', 10), { message: /not a deferred item/ });
  const br = brotliCompressSync(raw[0]!);
  await enc.writeItemEncoding(0, 'br', br.length);
  await t.throwsAsync(enc.writeItemEncoding(0, 'br', br.length), { message: /not a deferred item/ });
  await enc.writeItem(1, raw[1]!);
  await enc.writeItem(0, br);
  await enc.writeEnd();

  const dec = new DeltaDecoder();
  let parsed: DeltaHeader | undefined;
  const got = new Map<number, Buffer[]>();
  const seenAtFirstChunk = new Map<number, string>();
  const all = bytes();
  const headerEnd = 8 + 5 + all.readUInt32BE(9);
  const first = dec.push(all.subarray(0, headerEnd));
  t.is(first[0]?.type === 'header' ? `${first[0].header.items[0]!.encoding}/${first[0].header.items[0]!.encodedSize}` : '', 'identity/5000', 'a placeholder until the ITEM frame');
  for (const ev of [...first, ...dec.push(all.subarray(headerEnd))]) {
    if (ev.type === 'header') {
      parsed = ev.header;
      t.deepEqual(parsed.deferred, [0]);
    } else if (ev.type === 'chunk') {
      if (!seenAtFirstChunk.has(ev.index)) seenAtFirstChunk.set(ev.index, `${parsed!.items[ev.index]!.encoding}/${parsed!.items[ev.index]!.encodedSize}`);
      got.set(ev.index, [...(got.get(ev.index) ?? []), ev.data]);
    }
  }
  t.true(dec.isDone());
  t.is(seenAtFirstChunk.get(0), `br/${br.length}`);
  t.deepEqual(brotliDecompressSync(Buffer.concat(got.get(0)!)), raw[0]);
  t.deepEqual(Buffer.concat(got.get(1)!), raw[1]);
});

test('deferred items: CONTENT before the ITEM frame, an ITEM frame for another item or twice, and a bad deferred list are malformed', async (t) => {
  const raw = [randomBytes(100), randomBytes(100)];
  const good = header(raw);
  good.deferred = [0];
  const head = Buffer.concat([preamble(), headerFrame(good)]);
  const cases: [string, Buffer][] = [
    ['content first', Buffer.concat([head, contentHead(0, 0, 100), raw[0]!])],
    ['item for a non-deferred item', Buffer.concat([head, itemFrame(1, 'identity', 100)])],
    ['item twice', Buffer.concat([head, itemFrame(0, 'identity', 100), itemFrame(0, 'identity', 100)])],
    ['identity with another size', Buffer.concat([head, itemFrame(0, 'identity', 99)])],
    ['deferred index out of range', Buffer.concat([preamble(), headerFrame({ ...header(raw), deferred: [5] })])],
  ];
  for (const [name, bytes] of cases) {
    const err = t.throws(() => new DeltaDecoder().push(bytes), { instanceOf: StarlightError }, name);
    t.is(err?.code, 'SL_ERR_PROTOCOL_MALFORMED', name);
  }
  // Without `deferred` in the header (every v1 stream so far) an ITEM frame is malformed too.
  t.throws(() => new DeltaDecoder().push(Buffer.concat([preamble(), headerFrame(header(raw)), itemFrame(0, 'identity', 100)])), { message: /not a deferred item/ });
});
