/**
 * The startup service's reader over an encoded cache file (decodedReader): every read returns the
 * content's bytes; reads behind the decoder's position are answered from the retained prefix or tail
 * without decoding again; only a read behind both restarts the decode.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { brotliCompressSync, constants as zc, createBrotliDecompress } from 'node:zlib';
import { decodedReader } from '../../../src/proxy/startup-service.js';

const MiB = 1024 * 1024;
// 6 MiB, compressible but not trivially: random 4 KiB blocks repeated with variations.
const content = Buffer.concat(Array.from({ length: 6 * 256 }, (_, i) => (i % 3 === 0 ? randomBytes(4096) : Buffer.alloc(4096, i & 0xff))));
const encoded = brotliCompressSync(content, { params: { [zc.BROTLI_PARAM_QUALITY]: 1 } });

function reader(): { read: ReturnType<typeof decodedReader>['read']; close: () => Promise<void>; starts: () => number } {
  let starts = 0;
  const r = decodedReader(() => {
    starts++;
    return Readable.from([encoded]).pipe(createBrotliDecompress({ chunkSize: 256 * 1024 }));
  });
  return { ...r, starts: () => starts };
}

test('decodedReader: forward and backward reads return the content; the prefix and the tail are served from memory', async (t) => {
  const r = reader();
  t.teardown(() => r.close());
  const expect = async (offset: number, length: number, msg: string): Promise<void> => {
    const got = await r.read(offset, length);
    t.true(got !== undefined && Buffer.compare(Buffer.from(got), content.subarray(offset, offset + length)) === 0, msg);
  };
  await expect(0, 16 * 1024, 'the head');
  await expect(0, 64, 'the ELF header again (prefix)');
  await expect(5 * MiB, MiB - 100, 'forward, far');
  await expect(5 * MiB + MiB - 300, 250, 'just behind the position (tail)');
  await expect(300 * 1024, 8000, 'the string table near the start (prefix)');
  await expect(MiB + 12345, 1000, 'within the prefix, across chunks');
  t.is(r.starts(), 1, 'one decode for all of these');
  await expect(3 * MiB, 4096, 'behind the position, outside prefix and tail');
  t.is(r.starts(), 2, 'that one restarted the decode');
  const end = await r.read(content.length - 10, 100);
  t.is(end?.length, 10, 'a read past the end is short');
  t.is(await r.read(content.length + 5, 10), undefined, 'a read after the end: undefined');
});
