/** ELF files built in memory for tests of the startup analysis (src/proxy/startup/elf.ts). */

export interface ElfSpec {
  bits: 32 | 64;
  bigEndian?: boolean;
  interp?: string;
  needed?: string[];
  runpath?: string;
  rpath?: string;
  /** No PT_DYNAMIC (a static executable). */
  noDynamic?: boolean;
  /** NUL-terminated strings placed in the (read-only) loaded bytes at 0xa00, e.g. compiled-in paths. */
  strings?: string[];
}

/** A minimal but well-formed ELF executable: PT_LOAD over the whole file, PT_INTERP, PT_DYNAMIC. */
export function buildElf(s: ElfSpec): Buffer {
  const is64 = s.bits === 64;
  const le = s.bigEndian !== true;
  const buf = Buffer.alloc(0x1000);
  const w16 = (o: number, v: number): number => (le ? buf.writeUInt16LE(v, o) : buf.writeUInt16BE(v, o));
  const w32 = (o: number, v: number): number => (le ? buf.writeUInt32LE(v, o) : buf.writeUInt32BE(v, o));
  const word = (o: number, v: number): number => (is64 ? (le ? buf.writeBigUInt64LE(BigInt(v), o) : buf.writeBigUInt64BE(BigInt(v), o)) : w32(o, v));
  const VADDR = 0x400000;
  buf.set([0x7f, 0x45, 0x4c, 0x46, is64 ? 2 : 1, le ? 1 : 2, 1]);
  w16(16, 2); // ET_EXEC
  w16(18, is64 ? 62 : 3);
  const phoff = is64 ? 64 : 52;
  const phent = is64 ? 56 : 32;
  const phdrs: [number, number, number][] = [[1, 0, 0x1000]]; // type, offset, filesz
  if (s.interp !== undefined) {
    buf.write(s.interp + '\0', 0x200, 'latin1');
    phdrs.push([3, 0x200, s.interp.length + 1]);
  }
  // dynstr at 0x300, dynamic at 0x800
  let str = '\0';
  const off = (x: string): number => {
    const o = str.length;
    str += x + '\0';
    return o;
  };
  const dyn: [number, number][] = [];
  for (const n of s.needed ?? []) dyn.push([1, off(n)]);
  if (s.runpath !== undefined) dyn.push([29, off(s.runpath)]);
  if (s.rpath !== undefined) dyn.push([15, off(s.rpath)]);
  dyn.push([5, VADDR + 0x300], [10, str.length], [0, 0]);
  buf.write(str, 0x300, 'latin1');
  const ent = is64 ? 16 : 8;
  dyn.forEach(([tag, val], i) => {
    word(0x800 + i * ent, tag);
    word(0x800 + i * ent + (is64 ? 8 : 4), val);
  });
  if (s.noDynamic !== true) phdrs.push([2, 0x800, dyn.length * ent]);
  if (s.strings !== undefined) buf.write('\0' + s.strings.join('\0') + '\0', 0xa00, 'latin1');
  word(is64 ? 32 : 28, phoff);
  w16(is64 ? 54 : 42, phent);
  w16(is64 ? 56 : 44, phdrs.length);
  phdrs.forEach(([type, offset, filesz], i) => {
    const b = phoff + i * phent;
    w32(b, type);
    word(b + (is64 ? 8 : 4), offset);
    word(b + (is64 ? 16 : 8), VADDR + offset);
    word(b + (is64 ? 32 : 16), filesz);
  });
  return buf;
}

