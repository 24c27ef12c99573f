/**
 * Test helpers for the worker CAS (src/worker/cas/store.ts): its blob files on disk (`sha256/<2
 * hex>/<hex>`; an older version's flat `sha256/<hex>` too), for tests that check what a pull or a GC
 * left behind, and a store whose flush only counts.
 */
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { LocalContentStore } from '../../src/worker/cas/store.js';

/** A store (not opened) whose syncfs only counts (the real one is exercised by the crash test). */
export function countingStore(dir: string): { store: LocalContentStore; syncs: () => number } {
  let n = 0;
  const store = new LocalContentStore(dir, {
    syncfs: async () => {
      n++;
    },
  });
  return { store, syncs: () => n };
}

/** Writes and commits `data` through a writer; returns its digest. */
export async function putContent(store: LocalContentStore, data: Buffer): Promise<string> {
  const d = 'sha256:' + createHash('sha256').update(data).digest('hex');
  const w = await store.writer(d);
  await w.write(data);
  await w.commit(data.length, d);
  return d;
}

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
