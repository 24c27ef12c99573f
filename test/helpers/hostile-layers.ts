/**
 * Hostile layer blobs built byte by byte for the hardening tests (issue 14): raw tar headers (any
 * typeflag, PAX 'x'/'g' records), gzip bombs made of repeated gzip members (a valid multi-member gzip
 * stream, so gigabytes of output cost kilobytes and no compression time), and zstd frames of RLE
 * blocks with any declared window. Nothing here is valid on purpose unless it says so.
 *
 * Not here: pushing images (proxy-support.ts), well-formed layers (fixtures/image-writer.ts).
 */
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';

export const BLOCK = 512;

/** One ustar header block with a correct checksum. */
export function tarHeader(name: string, opts: { type?: string; size?: number; mode?: number; linkname?: string } = {}): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.write(name.slice(0, 100), 0, 'utf8');
  b.write(((opts.mode ?? 0o644).toString(8).padStart(7, '0')) + '\0', 100, 'latin1');
  b.write('0000000\0', 108, 'latin1');
  b.write('0000000\0', 116, 'latin1');
  b.write((opts.size ?? 0).toString(8).padStart(11, '0') + '\0', 124, 'latin1');
  b.write('14571234567\0', 136, 'latin1');
  b.write(opts.type ?? '0', 156, 'latin1');
  if (opts.linkname) b.write(opts.linkname.slice(0, 100), 157, 'utf8');
  b.write('ustar\0', 257, 'latin1');
  b.write('00', 263, 'latin1');
  fixChecksum(b, 0);
  return b;
}

/** (Re)writes the checksum of the header block at `at` of `tar` (after a test patched its fields). */
export function fixChecksum(tar: Buffer, at: number): void {
  tar.fill(0x20, at + 148, at + 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += tar[at + i]!;
  tar.write(sum.toString(8).padStart(6, '0') + '\0 ', at + 148, 'latin1');
}

/** Zero padding after `n` data bytes. */
export function padding(n: number): Buffer {
  return Buffer.alloc((BLOCK - (n % BLOCK)) % BLOCK);
}

/** One PAX record "<len> key=value\n". */
export function paxRecord(key: string, value: string | Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), Buffer.from(value), Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len++;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

/** A PAX extended header ('x' or 'g') with its data and padding. */
export function paxHeader(type: 'x' | 'g', records: Buffer[]): Buffer {
  const data = Buffer.concat(records);
  return Buffer.concat([tarHeader('PaxHeader', { type, size: data.length }), data, padding(data.length)]);
}

/** A regular file entry with its content and padding. */
export function fileEntry(name: string, content: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([tarHeader(name, { size: content.length }), content, padding(content.length)]);
}

export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);

/**
 * A gzip stream whose output is `head`, then `unit` repeated `times` times, then `tail`: each part
 * is its own gzip member and the repeated member is compressed once, so the blob is small and cheap
 * to build whatever the output size. Also returns the diffID (sha256 of the output), computed only
 * if `withDiffID` (hashing gigabytes takes seconds).
 */
export function gzipRepeat(head: Buffer, unit: Buffer, times: number, tail: Buffer, withDiffID = false): { blob: Buffer; diffID: string; size: number } {
  const member = gzipSync(unit, { level: 9 });
  const parts = [gzipSync(head), ...Array<Buffer>(times).fill(member), gzipSync(tail)];
  let diffID = `sha256:${'0'.repeat(64)}`;
  if (withDiffID) {
    const h = createHash('sha256').update(head);
    for (let i = 0; i < times; i++) h.update(unit);
    diffID = `sha256:${h.update(tail).digest('hex')}`;
  }
  return { blob: Buffer.concat(parts), diffID, size: head.length + unit.length * times + tail.length };
}

/**
 * A zstd frame declaring a window of 2^windowLog bytes (no content size, no checksum) made of `blocks`
 * RLE blocks of 128 KiB each (4 bytes apiece: a ratio of 32 768), the last one flagged.
 */
export function zstdRleFrame(windowLog: number, blocks: number, byte = 0): Buffer {
  const head = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, (windowLog - 10) << 3]);
  const block = (last: boolean): Buffer => {
    const v = (last ? 1 : 0) | (1 << 1) | ((128 * 1024) << 3);
    return Buffer.from([v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, byte]);
  };
  const body = Buffer.alloc(blocks * 4);
  const mid = block(false);
  for (let i = 0; i < blocks - 1; i++) mid.copy(body, i * 4);
  block(true).copy(body, (blocks - 1) * 4);
  return Buffer.concat([head, body]);
}

/** A zstd frame holding `data` as raw blocks (so it can carry a tar header before a bomb). */
export function zstdRawFrame(data: Buffer, windowLog = 20): Buffer {
  const head = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, (windowLog - 10) << 3]);
  const parts: Buffer[] = [head];
  const max = 128 * 1024;
  for (let off = 0; off < data.length || off === 0; off += max) {
    const piece = data.subarray(off, off + max);
    const last = off + max >= data.length;
    const v = (last ? 1 : 0) | (0 << 1) | (piece.length << 3);
    parts.push(Buffer.from([v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff]), piece);
    if (data.length === 0) break;
  }
  return Buffer.concat(parts);
}
