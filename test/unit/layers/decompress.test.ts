import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { StarlightError } from '../../../src/errors.js';
import { createDecompressor, nativeFailure, nativeGzip } from '../../../src/layers/decompress.js';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Text-like and random bytes: long matches across the 1 MiB output blocks, and stored blocks. */
function payload(size: number): Buffer {
  const b = Buffer.alloc(size);
  const words = Buffer.from('lorem ipsum dolor sit amet consectetur adipiscing elit ');
  for (let i = 0; i < size; i++) b[i] = words[(i * 7 + (i >> 12)) % words.length]!;
  randomBytes(200_000).copy(b, Math.floor(size / 3));
  return b;
}

interface Outcome {
  out?: Buffer;
  digest?: string;
  code?: string;
}

/** Runs `blob` through a gzip decompressor fed in `chunk`-byte pieces; what came out or its error code. */
async function inflate(blob: Buffer, chunk: number, native: boolean): Promise<Outcome> {
  const d = createDecompressor({ compression: 'gzip', digest: true, nativeGzip: native });
  const src = Readable.from((function* () { for (let i = 0; i < blob.length; i += chunk) yield blob.subarray(i, i + chunk); })());
  src.pipe(d);
  const parts: Buffer[] = [];
  try {
    for await (const c of d) parts.push(c as Buffer);
  } catch (err) {
    return { code: (err as StarlightError).code };
  }
  return { out: Buffer.concat(parts), digest: d.outputDigest() };
}

test('the native gzip addon is built (npm ci builds it; the proxy indexes with it)', (t) => {
  t.true(nativeGzip);
});

test('native inflate gives zlib\'s bytes and their sha256, whatever the input chunking', async (t) => {
  const data = payload(5 * 1024 * 1024 + 12345);
  const blob = gzipSync(data, { level: 6 });
  for (const chunk of [1 << 20, 65536, 4093]) {
    for (const native of [true, false]) {
      const r = await inflate(blob, chunk, native);
      t.true(r.out?.equals(data), `native=${native} chunk=${chunk}`);
      t.is(r.digest, sha(data));
    }
  }
  const tiny = await inflate(gzipSync(Buffer.from('hi')), 1, true);
  t.is(tiny.out?.toString(), 'hi');
});

test('native and zlib agree on concatenated members, zero padding, garbage, truncation and bad trailers', async (t) => {
  const a = payload(100_000);
  const b = Buffer.from('second member');
  const ga = gzipSync(a);
  const gb = gzipSync(b);
  const badCrc = Buffer.from(ga);
  badCrc[badCrc.length - 8]! ^= 0xff;
  const badSize = Buffer.from(ga);
  badSize[badSize.length - 1]! ^= 0x01;
  const cases: { name: string; blob: Buffer; want: Buffer | string }[] = [
    { name: 'two members', blob: Buffer.concat([ga, gb]), want: Buffer.concat([a, b]) },
    { name: 'zero padding after the end', blob: Buffer.concat([ga, Buffer.alloc(1024)]), want: a },
    { name: 'garbage after the end', blob: Buffer.concat([ga, Buffer.from('garbage!')]), want: 'SL_ERR_IMAGE_BAD_COMPRESSION' },
    { name: 'cut inside the data', blob: ga.subarray(0, ga.length >> 1), want: 'SL_ERR_IMAGE_BAD_COMPRESSION' },
    { name: 'cut inside the trailer', blob: ga.subarray(0, ga.length - 3), want: 'SL_ERR_IMAGE_BAD_COMPRESSION' },
    { name: 'empty', blob: Buffer.alloc(0), want: 'SL_ERR_IMAGE_BAD_COMPRESSION' },
    { name: 'wrong crc32', blob: badCrc, want: 'SL_ERR_IMAGE_BAD_COMPRESSION' },
    { name: 'wrong size', blob: badSize, want: 'SL_ERR_IMAGE_BAD_COMPRESSION' },
    { name: 'not gzip', blob: Buffer.concat([Buffer.from([0x1f, 0x8b]), randomBytes(4096)]), want: 'SL_ERR_IMAGE_BAD_COMPRESSION' },
  ];
  for (const c of cases) {
    // The whole blob as one chunk too: zlib once hung on a write that held a member's end and padding.
    for (const chunk of [4096, 61, 1 << 30]) {
      for (const native of [true, false]) {
        const r = await inflate(c.blob, chunk, native);
        const label = `${c.name}, native=${native}, chunk=${chunk}`;
        if (typeof c.want === 'string') t.is(r.code, c.want, label);
        else {
          t.true(r.out?.equals(c.want), label);
          t.is(r.digest, sha(c.want), label);
        }
      }
    }
  }
});

test('native inflate keeps to the consumer\'s pace: a gzip bomb is never buffered ahead', async (t) => {
  // 64 MiB of zeros is ~64 KiB of gzip; 8 members inflate to 512 MiB. The buffer ahead of a slow
  // reader stays within the read-ahead plus one native call's output (decompress.ts).
  const member = gzipSync(Buffer.alloc(64 * 1024 * 1024));
  const d = createDecompressor({ compression: 'gzip', digest: true });
  Readable.from([Buffer.concat(Array.from({ length: 8 }, () => member))]).pipe(d);
  let seen = 0;
  let most = 0;
  for await (const c of d) {
    seen += (c as Buffer).length;
    most = Math.max(most, d.readableLength);
    if (seen >= 96 * 1024 * 1024) break;
  }
  t.true(seen >= 96 * 1024 * 1024);
  t.true(most <= 8 * 1024 * 1024, `buffered ${most} bytes ahead`);
});

test('an addon call that ran out of memory is a layer limit, not corrupt gzip; other addon failures are corrupt gzip', (t) => {
  for (const message of ['out of memory', 'out of memory while walking the tar', 'std::bad_alloc']) {
    const e = nativeFailure(new Error(message));
    t.is(e.code, 'SL_ERR_IMAGE_LIMIT', message);
    t.regex(e.message, /more memory than the proxy can give it/);
  }
  for (const message of ['invalid deflate block', 'incorrect gzip checksum', 'inflate made no progress']) {
    t.is(nativeFailure(new Error(message)).code, 'SL_ERR_IMAGE_BAD_COMPRESSION', message);
  }
});
