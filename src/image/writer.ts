/**
 * Builds layer tars and OCI images for tests, fixtures and bench scripts.
 *
 * `writeTar` streams: headers are built per entry and file contents are produced chunk by chunk
 * (a Buffer, a fill byte or a generator), so a file of any size needs only WRITE_CHUNK of memory.
 * Format 'pax' (default) writes ustar headers and PAX 'x' records for what ustar cannot hold (long
 * names and links, big numbers, fractional mtimes, xattrs as SCHILY.xattr.*), like Go and Docker;
 * 'gnu' writes GNU headers with 'L'/'K' long names and base-256 numbers (no xattrs), like `tar -H gnu`.
 *
 * Not here: pushing to a registry (src/oci/push.ts `pushImage`), reading tars.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { PassThrough, Readable, Transform } from 'node:stream';
import { createGzip } from 'node:zlib';
import { StarlightError } from '../errors.js';
import type { Compression } from './decompress.js';
import { BLOCK, pad } from './tar.js';
import { sha256Digest } from '../oci/digest.js';

/** Largest content chunk produced at once, bytes. */
export const WRITE_CHUNK = 1024 * 1024;

export type WriterEntryType = 'reg' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export type WriterContent =
  | Buffer
  | { size: number; fill: number }
  | { size: number; generate: (offset: number, length: number) => Buffer };

export interface WriterEntry {
  /** Written as given (dirs get a trailing '/'), so tests can write './x', '/abs' or '../x'. */
  path: string;
  type: WriterEntryType;
  /** Default 0o644 (files), 0o755 (dirs), 0o777 (symlinks). */
  mode?: number;
  uid?: number;
  gid?: number;
  /** Seconds since the epoch; default 1700000000. Fractions force a PAX mtime. */
  mtime?: number;
  linkname?: string;
  content?: WriterContent;
  xattrs?: Record<string, Uint8Array | string>;
  devmajor?: number;
  devminor?: number;
}

export interface WriteTarOptions {
  /** Default 'pax'. */
  format?: 'pax' | 'gnu';
}

/** Default mtime of written entries, seconds (2023-11-14). */
export const DEFAULT_MTIME = 1_700_000_000;

const TYPEFLAG: Record<WriterEntryType, string> = { reg: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };

function contentSize(c: WriterContent | undefined): number {
  return c === undefined ? 0 : Buffer.isBuffer(c) ? c.length : c.size;
}

/** Writes `v` as octal in a field of `len` bytes; false if it does not fit. */
function writeOctal(b: Buffer, off: number, len: number, v: number): boolean {
  if (!Number.isInteger(v) || v < 0) return false;
  const s = v.toString(8);
  if (s.length > len - 1) return false;
  b.write(s.padStart(len - 1, '0'), off, 'latin1');
  b[off + len - 1] = 0;
  return true;
}

/** GNU base-256: marker bit 0x80, big-endian two's complement. */
function writeBase256(b: Buffer, off: number, len: number, v: number): void {
  let x = BigInt(Math.trunc(v));
  for (let i = len - 1; i >= 0; i--) {
    b[off + i] = Number(BigInt.asUintN(8, x));
    x >>= 8n;
  }
  b[off] = v < 0 ? 0xff : b[off]! | 0x80;
}

interface RawHeader {
  name: string;
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: string;
  devmajor: number;
  devminor: number;
}

function encodeHeader(h: RawHeader, gnu: boolean): { block: Buffer; overflow: string[] } {
  const b = Buffer.alloc(BLOCK);
  const overflow: string[] = [];
  const num = (field: string, off: number, len: number, v: number) => {
    if (writeOctal(b, off, len, v)) return;
    if (gnu) writeBase256(b, off, len, v);
    else overflow.push(field);
  };
  let name = h.name;
  const nameBytes = Buffer.byteLength(name);
  if (nameBytes > 100 && !gnu) {
    // ustar prefix split at a '/': prefix ≤ 155 bytes, rest ≤ 100 bytes; else a PAX path record.
    let split = -1;
    for (let i = name.indexOf('/'); i > 0; i = name.indexOf('/', i + 1)) {
      if (Buffer.byteLength(name.slice(0, i)) > 155) break;
      if (Buffer.byteLength(name.slice(i + 1)) <= 100 && i + 1 < name.length) {
        split = i;
        break;
      }
    }
    if (split > 0) {
      b.write(name.slice(0, split), 345, 155, 'utf8');
      name = name.slice(split + 1);
    } else overflow.push('path');
  }
  b.write(name, 0, 100, 'utf8');
  num('mode', 100, 8, h.mode);
  num('uid', 108, 8, h.uid);
  num('gid', 116, 8, h.gid);
  num('size', 124, 12, h.size);
  if (Number.isInteger(h.mtime)) num('mtime', 136, 12, h.mtime);
  else {
    writeOctal(b, 136, 12, Math.max(0, Math.floor(h.mtime)));
    if (!gnu) overflow.push('mtime');
  }
  b.write(h.typeflag, 156, 1, 'latin1');
  if (Buffer.byteLength(h.linkname) > 100 && !gnu) overflow.push('linkpath');
  b.write(h.linkname, 157, 100, 'utf8');
  b.write(gnu ? 'ustar  \0' : 'ustar\x0000', 257, 8, 'latin1');
  num('devmajor', 329, 8, h.devmajor);
  num('devminor', 337, 8, h.devminor);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i]!;
  b.fill(0, 148, 156);
  writeOctal(b, 148, 7, sum);
  b[155] = 0x20;
  return { block: b, overflow };
}

/** One PAX record "<len> <key>=<value>\n" (len counts itself). */
function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

/** A metadata entry (PAX 'x', GNU 'L'/'K') with its payload, padded. */
function metaEntry(name: string, typeflag: string, data: Buffer, gnu: boolean): Buffer[] {
  const h = encodeHeader({ name, typeflag, mode: 0o644, uid: 0, gid: 0, size: data.length, mtime: 0, linkname: '', devmajor: 0, devminor: 0 }, gnu);
  return [h.block, data, Buffer.alloc(pad(data.length))];
}

function headersFor(e: WriterEntry, gnu: boolean): Buffer[] {
  const size = e.type === 'reg' ? contentSize(e.content) : 0;
  const name = e.type === 'dir' && !e.path.endsWith('/') ? `${e.path}/` : e.path;
  const raw: RawHeader = {
    name,
    typeflag: TYPEFLAG[e.type],
    mode: e.mode ?? (e.type === 'dir' ? 0o755 : e.type === 'symlink' ? 0o777 : 0o644),
    uid: e.uid ?? 0,
    gid: e.gid ?? 0,
    size,
    mtime: e.mtime ?? DEFAULT_MTIME,
    linkname: e.linkname ?? '',
    devmajor: e.devmajor ?? 0,
    devminor: e.devminor ?? 0,
  };
  const out: Buffer[] = [];
  if (gnu) {
    if (e.xattrs) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `writeTar: xattrs need format 'pax' (${e.path})`);
    if (Buffer.byteLength(raw.linkname) > 100) out.push(...metaEntry('././@LongLink', 'K', Buffer.from(`${raw.linkname}\0`), true));
    if (Buffer.byteLength(name) > 100) out.push(...metaEntry('././@LongLink', 'L', Buffer.from(`${name}\0`), true));
    out.push(encodeHeader(raw, true).block);
    return out;
  }
  const { block, overflow } = encodeHeader(raw, false);
  const records: Buffer[] = [];
  const values: Record<string, string> = {
    path: name,
    linkpath: raw.linkname,
    size: String(raw.size),
    uid: String(raw.uid),
    gid: String(raw.gid),
    mtime: String(raw.mtime),
  };
  for (const f of overflow) {
    if (!(f in values)) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `writeTar: ${f} of ${e.path} does not fit a tar header`);
    records.push(paxRecord(f, Buffer.from(values[f]!)));
  }
  for (const k of Object.keys(e.xattrs ?? {}).sort()) {
    const v = e.xattrs![k]!;
    records.push(paxRecord(`SCHILY.xattr.${k}`, typeof v === 'string' ? Buffer.from(v) : Buffer.from(v)));
  }
  if (records.length) out.push(...metaEntry(`PaxHeaders.0/${name.replace(/\/$/, '').split('/').pop()!.slice(0, 80)}`, 'x', Buffer.concat(records), false));
  out.push(block);
  return out;
}

async function* contentChunks(c: WriterContent): AsyncGenerator<Buffer> {
  if (Buffer.isBuffer(c)) {
    if (c.length) yield c;
    return;
  }
  for (let off = 0; off < c.size; off += WRITE_CHUNK) {
    const len = Math.min(WRITE_CHUNK, c.size - off);
    if ('fill' in c) yield Buffer.alloc(len, c.fill);
    else {
      const chunk = c.generate(off, len);
      if (chunk.length !== len) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `writeTar: generator returned ${chunk.length} bytes, wanted ${len}`);
      yield chunk;
    }
  }
}

/** Streams a tar of `entries` in order, ending with the two zero blocks. */
export function writeTar(entries: readonly WriterEntry[], opts: WriteTarOptions = {}): Readable {
  const gnu = opts.format === 'gnu';
  async function* gen(): AsyncGenerator<Buffer> {
    for (const e of entries) {
      for (const b of headersFor(e, gnu)) yield b;
      if (e.type === 'reg' && e.content) {
        yield* contentChunks(e.content);
        const p = pad(contentSize(e.content));
        if (p) yield Buffer.alloc(p);
      }
    }
    yield Buffer.alloc(2 * BLOCK);
  }
  return Readable.from(gen(), { objectMode: false });
}

/** Collects a stream into one Buffer (for small tars in tests). */
export async function streamToBuffer(s: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

export function writeTarBuffer(entries: readonly WriterEntry[], opts: WriteTarOptions = {}): Promise<Buffer> {
  return streamToBuffer(writeTar(entries, opts));
}

/**
 * Compresses a tar as a layer blob. gzip uses zlib (header mtime 0, so output is deterministic);
 * zstd runs the `zstd` CLI (installed by scripts/install-deps.sh), since Node 20's zlib has no zstd.
 */
export function compressLayer(tar: Buffer | Readable, compression: Compression): Readable {
  const input = Buffer.isBuffer(tar) ? Readable.from([tar]) : tar;
  if (compression === 'none') return input.pipe(new PassThrough());
  if (compression === 'gzip') {
    const z = createGzip();
    input.on('error', (e) => z.destroy(e));
    return input.pipe(z);
  }
  const child = spawn('zstd', ['-q', '-c', '-3', '-'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const out = new PassThrough();
  input.on('error', (e) => out.destroy(e));
  child.stdin.on('error', (e) => out.destroy(e));
  input.pipe(child.stdin);
  child.stdout.pipe(out, { end: false });
  child.on('error', (e) => out.destroy(e));
  child.on('close', (code) => {
    if (code === 0) out.end();
    else out.destroy(new StarlightError('SL_ERR_INTERNAL', `zstd exited with ${String(code)}`));
  });
  return out;
}

export const LAYER_MEDIA_TYPES: Record<Compression, string> = {
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  none: 'application/vnd.oci.image.layer.v1.tar',
};

export interface LayerSpec {
  entries: readonly WriterEntry[];
  compression: Compression;
  format?: 'pax' | 'gnu';
}

export interface BuiltLayer {
  /** The blob (compressed bytes). */
  data: Buffer;
  mediaType: string;
  /** 'sha256:<hex>' of `data`. */
  digest: string;
  /** 'sha256:<hex>' of the uncompressed tar. */
  diffID: string;
  /** data.length */
  size: number;
}

export interface BuiltImage {
  /** OCI image config JSON. */
  config: Buffer;
  configDigest: string;
  layers: BuiltLayer[];
}

/** Builds one layer blob, hashing the tar on the way (the tar itself is never held whole). */
export async function buildLayer(spec: LayerSpec): Promise<BuiltLayer> {
  const diff = createHash('sha256');
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      diff.update(chunk);
      cb(null, chunk);
    },
  });
  const tar = writeTar(spec.entries, { format: spec.format });
  tar.on('error', (e) => tap.destroy(e));
  const data = await streamToBuffer(compressLayer(tar.pipe(tap), spec.compression));
  return {
    data,
    mediaType: LAYER_MEDIA_TYPES[spec.compression],
    digest: sha256Digest(data),
    diffID: `sha256:${diff.digest('hex')}`,
    size: data.length,
  };
}

/**
 * Builds the layers and a linux/amd64 config whose rootfs.diff_ids match, ready for
 * `pushImage(client, ref, {config, layers})`. `configExtras` is merged over the config's top level.
 */
export async function ociImage(layers: readonly LayerSpec[], configExtras: Record<string, unknown> = {}): Promise<BuiltImage> {
  const built: BuiltLayer[] = [];
  for (const l of layers) built.push(await buildLayer(l));
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: {},
      rootfs: { type: 'layers', diff_ids: built.map((l) => l.diffID) },
      history: built.map(() => ({ created_by: 'starlight test writer' })),
      ...configExtras,
    }),
  );
  return { config, configDigest: sha256Digest(config), layers: built };
}
