/**
 * EARLY frames (docs/protocol.md "Early items"): whole contents before the HEADER, decoded with their
 * digest, encoding and size; an ERROR before the header; EARLY after the header is malformed.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { brotliCompressSync } from 'node:zlib';
import { DeltaDecoder, decodeDelta, type DeltaEvent, type DeltaHeader } from '../../../src/protocol/index.js';
import { earlyHead } from '../../../src/protocol/frames.js';
import { deltaHeader, identityItems, streamBytes } from '../../helpers/delta-header.js';

function digest(b: Buffer): string {
  return 'sha256:' + createHash('sha256').update(b).digest('hex');
}

function header(contents: Buffer[]): DeltaHeader {
  return { ...deltaHeader(identityItems(contents), 0), manifest: Buffer.from('{}'), config: Buffer.from('{}'), diffIDs: [], layers: [] };
}

const early1 = Buffer.from('early text '.repeat(200));
const early2 = Buffer.from([1, 2, 3, 4, 5]);
const later = Buffer.from('in the header');

test('EARLY frames before the HEADER decode to digest, encoding, size and bytes; the stream then goes on as usual', async (t) => {
  const enc1 = brotliCompressSync(early1);
  const bytes = await streamBytes(async (enc) => {
    t.false(enc.started);
    await enc.writeEarly(digest(early1), 'br', early1.length, enc1);
    t.true(enc.started);
    t.false(enc.headerSent);
    await enc.writeEarly(digest(early2), 'identity', early2.length, early2);
    await enc.writeHeader(header([later]));
    await enc.writeItem(0, later);
    await enc.writeEnd();
  });
  const events: DeltaEvent[] = [];
  for await (const ev of decodeDelta((async function* () {
    yield bytes;
  })()))
    events.push(ev);
  t.deepEqual(
    events.map((e) => e.type),
    ['early', 'early', 'header', 'chunk', 'end'],
  );
  const e1 = events[0] as Extract<DeltaEvent, { type: 'early' }>;
  t.is(e1.digest, digest(early1));
  t.is(e1.encoding, 'br');
  t.is(e1.size, early1.length);
  t.true(e1.data.equals(enc1));
  const e2 = events[1] as Extract<DeltaEvent, { type: 'early' }>;
  t.is(e2.encoding, 'identity');
  t.true(e2.data.equals(early2));
  // Every split of the input gives the same events (the head and payload may arrive in pieces).
  for (let cut = 1; cut < bytes.length; cut += 7) {
    const dec = new DeltaDecoder({ splitFrames: true });
    const evs = [...dec.push(bytes.subarray(0, cut)), ...dec.push(bytes.subarray(cut))];
    t.deepEqual(evs.filter((e) => e.type === 'early').length, 2);
  }
});

test('an ERROR frame after EARLY frames (the index failed) is the error it carries, resume at item 0', async (t) => {
  const bytes = await streamBytes(async (enc) => {
    await enc.writeEarly(digest(early2), 'identity', early2.length, early2);
    await enc.writeError({ code: 'SL_ERR_IMAGE_DIFFID_MISMATCH', message: 'index img: layer sha256:abc uncompresses to …', detail: { layer: 'sha256:abc' } });
  });
  const dec = new DeltaDecoder();
  t.deepEqual(dec.push(bytes).map((e) => e.type), ['early'], 'the EARLY item before the error is delivered');
  const err = t.throws(() => dec.finish());
  t.is((err as { code?: string }).code, 'SL_ERR_IMAGE_DIFFID_MISMATCH');
  t.regex(err!.message, /layer sha256:abc/);
  t.is((err as unknown as { details: { nextItem: number } }).details.nextItem, 0);
});

test('malformed: an EARLY frame after the header, a short EARLY head, identity with a wrong size; the encoder refuses EARLY after the header', async (t) => {
  const h = header([later]);
  const base = await streamBytes(async (enc) => {
    await enc.writeHeader(h);
  });
  const frame = Buffer.concat([earlyHead(digest(early2), 'identity', early2.length, early2.length), early2]);
  t.throws(() => new DeltaDecoder().push(Buffer.concat([base, frame])), { code: 'SL_ERR_PROTOCOL_MALFORMED', message: /EARLY frame after the HEADER/ });
  const pre = base.subarray(0, 8);
  const short = Buffer.from([6, 0, 0, 0, 3, 1, 2, 3]);
  t.throws(() => new DeltaDecoder().push(Buffer.concat([pre, short])), { code: 'SL_ERR_PROTOCOL_MALFORMED' });
  const lying = Buffer.concat([earlyHead(digest(early2), 'identity', early2.length + 1, early2.length), early2]);
  t.throws(() => new DeltaDecoder().push(Buffer.concat([pre, lying])), { code: 'SL_ERR_PROTOCOL_MALFORMED' });
  await t.throwsAsync(
    streamBytes(async (enc) => {
      await enc.writeHeader(h);
      await enc.writeEarly(digest(early2), 'identity', early2.length, early2);
    }),
    { code: 'SL_ERR_INTERNAL' },
  );
});
