import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { DeltaDecoder, DeltaEncoder, type ContentItem, type DeltaHeader } from '../../../src/protocol/index.js';
import { StarlightError } from '../../../src/errors.js';

const dg = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

function header(contents: Buffer[], firstItem = 0): DeltaHeader {
  const items: ContentItem[] = contents.map((c) => ({ digest: dg(c), size: c.length, encodedSize: c.length, encoding: 'identity' }));
  return {
    ref: 'localhost:5000/app:v1',
    platform: 'linux/amd64',
    manifestDigest: dg(Buffer.from('m')),
    manifestMediaType: 'application/vnd.oci.image.manifest.v1+json',
    manifest: Buffer.from('{}'),
    config: Buffer.from('{}'),
    diffIDs: [],
    layers: [],
    items,
    firstItem,
  };
}

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
