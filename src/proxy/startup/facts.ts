/**
 * The facts startup prediction needs of one file (predict.ts FileFacts), read through a range reader:
 * the first SCRIPT_HEAD_BYTES, and for ELF files the few ranges readElf asks for. Never throws on
 * content (an unparseable ELF is 'unknown'); errors of the reader propagate.
 *
 * Not here: where the bytes come from (startup-service.ts reads the proxy's content cache; tests read
 * tars or fixtures).
 */
import { isElf, readElf, type RangeReader } from './elf.js';
import type { FileFacts } from './predict.js';
import { SCRIPT_HEAD_BYTES, isText } from './script.js';

export async function readFacts(read: RangeReader, size: number): Promise<FileFacts> {
  const head = await read(0, Math.min(size, SCRIPT_HEAD_BYTES));
  if (head === undefined || head.length === 0) return { kind: 'unknown' };
  if (isElf(head)) {
    const elf = await readElf(read, size);
    return elf === undefined ? { kind: 'unknown' } : { kind: 'elf', elf };
  }
  return isText(head) ? { kind: 'text', head: Buffer.from(head.buffer, head.byteOffset, head.length).toString('latin1') } : { kind: 'other' };
}

/**
 * A RangeReader over bytes in memory held as consecutive pieces (a file as a layer pass read it): a
 * range inside one piece is a view of it, one across pieces is copied (only that range: copying whole
 * files cost a layer pass ~0.5 CPU-s per 120 MB, issue 10).
 */
export function piecesReader(pieces: readonly Buffer[]): RangeReader {
  const starts: number[] = [];
  let total = 0;
  for (const p of pieces) {
    starts.push(total);
    total += p.length;
  }
  return (offset, length) => {
    if (offset >= total || length <= 0) return Promise.resolve(undefined);
    const end = Math.min(total, offset + length);
    let lo = 0;
    let hi = pieces.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    const first = pieces[lo]!;
    if (end <= starts[lo]! + first.length) return Promise.resolve(first.subarray(offset - starts[lo]!, end - starts[lo]!));
    const out = Buffer.allocUnsafe(end - offset);
    for (let i = lo, at = offset; at < end; i++) {
      const from = at - starts[i]!;
      const n = Math.min(pieces[i]!.length - from, end - at);
      pieces[i]!.copy(out, at - offset, from, from + n);
      at += n;
    }
    return Promise.resolve(out);
  };
}

/** A RangeReader over bytes in memory. */
export function bufferReader(buf: Uint8Array): RangeReader {
  return (offset, length) => Promise.resolve(offset >= buf.length ? undefined : buf.subarray(offset, Math.min(buf.length, offset + length)));
}
