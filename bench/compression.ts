/**
 * Measures per-file compression choices for the proxy's content cache and the delta stream: for a
 * set of real files (default: this machine's /usr/bin and /usr/lib/python3*), prints the overall
 * ratio (encoded/raw), compress MB/s and decompress MB/s of each node:zlib codec and level.
 *
 * Usage: node dist/bench/compression.js [--max-mb 200] [--min-size 0] DIR...
 * The numbers behind the choice are written down in docs/design-notes.md.
 * Not here: zstd (Node 20 has no zstd compressor), per-stream (whole-layer) compression.
 */
import { readdirSync, readFileSync, lstatSync } from 'node:fs';
import { join } from 'node:path';
import { constants, brotliCompressSync, brotliDecompressSync, deflateRawSync, gzipSync, gunzipSync, inflateRawSync } from 'node:zlib';

/** Stop collecting files after this many raw bytes (default 200 MB) to keep one run under a minute or two. */
const DEFAULT_MAX_BYTES = 200 * 1024 * 1024;

interface Codec {
  name: string;
  enc: (b: Buffer) => Buffer;
  dec: (b: Buffer) => Buffer;
}

const CODECS: Codec[] = [
  ...[1, 6, 9].map((level) => ({ name: `gzip-${level}`, enc: (b: Buffer) => gzipSync(b, { level }), dec: (b: Buffer) => gunzipSync(b) })),
  { name: 'deflate-raw-6', enc: (b) => deflateRawSync(b, { level: 6 }), dec: (b) => inflateRawSync(b) },
  ...[1, 2, 3, 4, 5, 9].map((q) => ({
    name: `brotli-q${q}`,
    enc: (b: Buffer) =>
      brotliCompressSync(b, { params: { [constants.BROTLI_PARAM_QUALITY]: q, [constants.BROTLI_PARAM_SIZE_HINT]: b.length } }),
    dec: (b: Buffer) => brotliDecompressSync(b),
  })),
];

function collect(dirs: string[], maxBytes: number, minSize: number): Buffer[] {
  const out: Buffer[] = [];
  let total = 0;
  const walk = (p: string): void => {
    if (total >= maxBytes) return;
    let st;
    try {
      st = lstatSync(p);
    } catch {
      return;
    }
    if (st.isDirectory()) {
      for (const name of readdirSync(p).sort()) walk(join(p, name));
    } else if (st.isFile() && st.size >= minSize && st.size > 0) {
      try {
        const b = readFileSync(p);
        out.push(b);
        total += b.length;
      } catch {
        /* unreadable: skip */
      }
    }
  };
  for (const d of dirs) walk(d);
  return out;
}

function main(): void {
  const args = process.argv.slice(2);
  let maxBytes = DEFAULT_MAX_BYTES;
  let minSize = 0;
  let only: Set<string> | undefined;
  const dirs: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--max-mb') maxBytes = Number(args[++i]) * 1024 * 1024;
    else if (args[i] === '--min-size') minSize = Number(args[++i]);
    else if (args[i] === '--codecs') only = new Set(args[++i]!.split(','));
    else dirs.push(args[i]!);
  }
  if (dirs.length === 0) {
    dirs.push('/usr/bin');
    for (const n of readdirSync('/usr/lib')) if (n.startsWith('python3')) dirs.push(join('/usr/lib', n));
  }
  const files = collect(dirs, maxBytes, minSize);
  const raw = files.reduce((s, b) => s + b.length, 0);
  console.log(`files=${files.length} raw=${(raw / 1e6).toFixed(1)} MB from ${dirs.join(' ')}`);
  console.log('codec           ratio   comp MB/s  decomp MB/s');
  for (const c of CODECS) {
    if (only !== undefined && !only.has(c.name)) continue;
    let encBytes = 0;
    const encoded: Buffer[] = [];
    const t0 = process.hrtime.bigint();
    for (const f of files) {
      const e = c.enc(f);
      encoded.push(e);
      encBytes += e.length;
    }
    const t1 = process.hrtime.bigint();
    for (const e of encoded) c.dec(e);
    const t2 = process.hrtime.bigint();
    const cs = Number(t1 - t0) / 1e9;
    const ds = Number(t2 - t1) / 1e9;
    console.log(
      `${c.name.padEnd(15)} ${(encBytes / raw).toFixed(3)}   ${(raw / 1e6 / cs).toFixed(1).padStart(8)}  ${(raw / 1e6 / ds).toFixed(1).padStart(10)}`,
    );
  }
}

main();
