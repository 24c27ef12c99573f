/**
 * A layer holding one very large file (model weights, issue 14), written as a stream of gzip members
 * so nothing of the file is held in memory: each 1 MiB block of the file is a 16-byte header naming
 * the block, then one of BODIES pseudo-random bodies (a 4 KiB unit repeated over the block, each body
 * compressed once), so a 3 GiB file makes a ~50 MiB blob in seconds, and a read at a wrong offset sees
 * other bytes (largeFileBytes gives the right ones). After the file: a small `models/config.json`.
 *
 * Used by test/e2e/proxy-large-file.test.ts and bench/large-file.ts.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { END_OF_ARCHIVE, fileEntry, padding, tarHeader } from './hostile-layers.js';

const MIB = 1024 * 1024;
/** Distinct block bodies (a prime, so a shift by a few MiB shows other bytes). */
const BODIES = 7;
const HEADER_BYTES = 16;

/** Pseudo-random 4 KiB unit `k`, repeated over 1 MiB (deterministic: a linear congruential sequence). */
function body(k: number): Buffer {
  const unit = Buffer.alloc(4096);
  let x = 0x9e3779b9 ^ (k * 0x85ebca6b);
  for (let i = 0; i < unit.length; i += 4) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    unit.writeUInt32BE(x, i);
  }
  return Buffer.alloc(MIB).fill(unit);
}

const bodies = Array.from({ length: BODIES }, (_, k) => body(k));

/** Block `i`'s header: 'SLBLOCK' + index, then zeros. */
function blockHeader(i: number): Buffer {
  const h = Buffer.alloc(HEADER_BYTES);
  h.write('SLBLOCK', 0, 'latin1');
  h.writeUInt32BE(i, 8);
  return h;
}

/** Bytes [off, off+len) of the large file. */
export function largeFileBytes(off: number, len: number): Buffer {
  const parts: Buffer[] = [];
  for (let p = off; p < off + len; ) {
    const i = Math.floor(p / MIB);
    const block = Buffer.concat([blockHeader(i), bodies[i % BODIES]!.subarray(HEADER_BYTES)]);
    const from = p - i * MIB;
    const to = Math.min(MIB, off + len - i * MIB);
    parts.push(block.subarray(from, to));
    p += to - from;
  }
  return Buffer.concat(parts);
}

/** Writes the layer blob (gzip) to `path`: the file `filePath` of `size` bytes, then a small file. */
export async function writeLargeFileLayer(path: string, filePath: string, size: number): Promise<{ diffID: string; fileDigest: string }> {
  const tarHash = createHash('sha256');
  const fileHash = createHash('sha256');
  const out = createWriteStream(path);
  const write = (b: Buffer): Promise<void> | void => {
    if (!out.write(b)) return new Promise((r) => out.once('drain', r));
  };
  const member = async (raw: Buffer, gz: Buffer = gzipSync(raw, { level: 1 }), ofFile = true): Promise<void> => {
    tarHash.update(raw);
    if (ofFile) fileHash.update(raw);
    await write(gz);
  };
  await member(tarHeader(filePath, { size }), undefined, false);
  const bodyMembers = bodies.map((b) => gzipSync(b.subarray(HEADER_BYTES), { level: 9 }));
  const full = Math.floor(size / MIB);
  for (let i = 0; i < full; i++) {
    await member(blockHeader(i));
    await member(bodies[i % BODIES]!.subarray(HEADER_BYTES), bodyMembers[i % BODIES]);
  }
  await member(largeFileBytes(full * MIB, size - full * MIB));
  await member(Buffer.concat([padding(size), fileEntry('models/config.json', Buffer.from('{"layers": 1}\n')), END_OF_ARCHIVE]), undefined, false);
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  return { diffID: `sha256:${tarHash.digest('hex')}`, fileDigest: `sha256:${fileHash.digest('hex')}` };
}

