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

/** A RangeReader over bytes in memory. */
export function bufferReader(buf: Uint8Array): RangeReader {
  return (offset, length) => Promise.resolve(offset >= buf.length ? undefined : buf.subarray(offset, Math.min(buf.length, offset + length)));
}
