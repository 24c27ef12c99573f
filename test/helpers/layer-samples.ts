/**
 * Small layers for the layer-reading unit tests (indexer, native pass, tar): a sample layer with the
 * TOC rules' cases (root, whiteout, opaque marker before its dir, hardlink, a chunked file), a feed
 * that splits a blob like a network stream, and a registry source whose digest check fails at the end.
 * (Crafted header blocks, and their checksum after a test patched one: hostile-layers.ts.)
 */
import { Readable } from 'node:stream';
import { StarlightError } from '../../src/errors.js';
import type { WriterEntry } from '../../fixtures/image-writer.js';

/** Root dir, a file, an empty file, a hardlink, a whiteout, an opaque marker before its dir, a 3 MB file. */
export const SAMPLE_LAYER: readonly WriterEntry[] = [
  { path: './', type: 'dir' },
  { path: 'a', type: 'dir' },
  { path: 'a/f', type: 'reg', content: Buffer.from('hello') },
  { path: 'a/empty', type: 'reg', content: Buffer.alloc(0) },
  { path: 'a/h', type: 'hardlink', linkname: './a/f' },
  { path: 'a/.wh.gone', type: 'reg' },
  { path: 'o/.wh..wh..opq', type: 'reg' },
  { path: 'o', type: 'dir', mode: 0o700, mtime: 5 },
  { path: 'big', type: 'reg', content: { size: 3_000_001, fill: 0x61 } },
];

/** `b` in chunks of `chunk` bytes, like a network stream. */
export function feed(b: Buffer, chunk = 4096): Readable {
  return Readable.from((function* () { for (let i = 0; i < b.length; i += chunk) yield b.subarray(i, i + chunk); })());
}

/** `bytes` in 4 KiB chunks, then the error a registry client's digest check raises at the blob's end. */
export function digestMismatchAtEnd(bytes: Buffer): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent < bytes.length) {
        this.push(bytes.subarray(sent, sent + 4096));
        sent += 4096;
      } else this.destroy(new StarlightError('SL_ERR_OCI_DIGEST_MISMATCH', 'blob bytes do not match the digest'));
    },
  });
}
