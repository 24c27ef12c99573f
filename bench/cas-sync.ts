/**
 * What durable content costs on this machine's file system (issue 14, docs/design-notes.md "Durable
 * content"): N files of S bytes written as the item pool writes blobs (open O_CREAT|O_EXCL 0444,
 * write, close, one directory), made durable in different ways; wall and CPU seconds of each.
 *
 * - none: no flush (the page cache only; what ingest did before);
 * - fdatasync-each: fdatasync of every file before it is closed (the textbook way);
 * - syncfs-once: one syncfs(2) (`sync -f`) after all files (what LocalContentStore.sync() does);
 * - pack: the same bytes appended to one file, fdatasync every 256 items (a pack-file layout).
 *
 * Usage: npm run build && flock /tmp/sl-bench.lock node dist/bench/cas-sync.js [--files 6465] [--bytes 24000]
 *        [--dir /var/tmp] [--ways none,syncfs-once,pack,fdatasync-each]
 * Defaults: python-web's item count and mean content size. Prints a markdown table.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, constants as fsc, fdatasyncSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const WAYS = ['none', 'fdatasync-each', 'syncfs-once', 'pack'] as const;
type Way = (typeof WAYS)[number];
const PACK_SYNC_EVERY = 256;

function run(way: Way, root: string, files: number, bytes: number): { wall: number; user: number; sys: number } {
  const dir = mkdtempSync(join(root, `cas-sync-${way}-`));
  const bufs = Array.from({ length: 64 }, (_, i) => Buffer.alloc(bytes, i + 1));
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  try {
    if (way === 'pack') {
      const fd = openSync(join(dir, 'pack'), fsc.O_CREAT | fsc.O_WRONLY | fsc.O_APPEND, 0o444);
      for (let i = 0; i < files; i++) {
        writeSync(fd, bufs[i % 64]!);
        if (i % PACK_SYNC_EVERY === PACK_SYNC_EVERY - 1) fdatasyncSync(fd);
      }
      fdatasyncSync(fd);
      closeSync(fd);
    } else {
      for (let i = 0; i < files; i++) {
        const fd = openSync(join(dir, i.toString(16).padStart(64, '0')), fsc.O_CREAT | fsc.O_EXCL | fsc.O_WRONLY, 0o444);
        writeSync(fd, bufs[i % 64]!);
        if (way === 'fdatasync-each') fdatasyncSync(fd);
        closeSync(fd);
      }
      if (way === 'syncfs-once') execFileSync('sync', ['-f', dir]);
    }
    const c = process.cpuUsage(c0);
    return { wall: (performance.now() - t0) / 1000, user: c.user / 1e6, sys: c.system / 1e6 };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const { values } = parseArgs({
  options: {
    files: { type: 'string', default: '6465' },
    bytes: { type: 'string', default: '24000' },
    dir: { type: 'string', default: '/var/tmp' },
    ways: { type: 'string', default: 'none,syncfs-once,pack,fdatasync-each' },
  },
});
const files = Number(values.files);
const bytes = Number(values.bytes);
const ways = values.ways!.split(',') as Way[];
for (const w of ways) if (!WAYS.includes(w)) throw new Error(`unknown way '${w}' (one of ${WAYS.join(', ')})`);
console.log(`${files} files × ${bytes} bytes under ${values.dir}`);
console.log('| way | wall s | user s | sys s |');
console.log('|---|---|---|---|');
for (const w of ways) {
  const r = run(w, values.dir!, files, bytes);
  console.log(`| ${w} | ${r.wall.toFixed(2)} | ${r.user.toFixed(2)} | ${r.sys.toFixed(2)} |`);
}
