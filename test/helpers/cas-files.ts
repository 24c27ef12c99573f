/**
 * The blob files of a worker CAS on disk (src/worker/cas/store.ts: `sha256/<2 hex>/<hex>`; an older
 * version's flat `sha256/<hex>` too), for tests that check what a pull or a GC left behind.
 */
import { readdirSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { basename, join } from 'node:path';

const HEX64_RE = /^[0-9a-f]{64}$/;

/** Paths (relative to `<casRoot>/sha256`) of every blob file; [] if there is no blob directory. */
export async function casBlobFiles(casRoot: string): Promise<string[]> {
  const all = await readdir(join(casRoot, 'sha256'), { recursive: true }).catch(() => [] as string[]);
  return all.filter((p) => HEX64_RE.test(basename(p))).sort();
}

/** casBlobFiles, synchronously. */
export function casBlobFilesSync(casRoot: string): string[] {
  let all: string[];
  try {
    all = readdirSync(join(casRoot, 'sha256'), { recursive: true }) as string[];
  } catch {
    return [];
  }
  return all.filter((p) => HEX64_RE.test(basename(p))).sort();
}

/** Every entry (blobs and temporaries) of the blob directories, shard directories left out. */
export function casEntriesSync(casRoot: string): string[] {
  const all = readdirSync(join(casRoot, 'sha256'), { recursive: true, withFileTypes: true });
  return all.filter((d) => !d.isDirectory()).map((d) => join(d.parentPath, d.name)).sort();
}
