/**
 * Relocated content (src/worker/cas/store.ts, issue 12): a blob dropped for an immutable copy
 * elsewhere is served from that copy, also after a reopen; a crash between the log record and the
 * unlink leaves the blob in use; a copy gone since is content gone; restoreUnder() makes blobs
 * again; delete() forgets a relocated content without touching its file.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { LocalContentStore, type LocalContentStoreOptions } from '../../../src/worker/cas/store.js';
import { tempDir } from '../../helpers/tmp.js';

async function withContent(dir: string, texts: string[], opts: LocalContentStoreOptions = {}): Promise<{ store: LocalContentStore; digests: string[] }> {
  const store = await new LocalContentStore(join(dir, 'cas'), opts).open();
  const digests: string[] = [];
  for (const [i, text] of texts.entries()) {
    const data = Buffer.from(text);
    const d = 'sha256:' + createHash('sha256').update(data).digest('hex');
    const w = await store.writer(`r${i}`);
    await w.write(data);
    await w.commit(data.length, d);
    digests.push(d);
  }
  await store.sync();
  return { store, digests };
}

/** A copy of `digest`'s blob under `dir` (what graduation writes into a layer dir). */
function copyOut(store: LocalContentStore, digest: string, dir: string, name: string): string {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, name);
  copyFileSync(store.path(digest)!, file);
  return file;
}

test('relocated content is served from its copy, also after a reopen; restoreUnder makes it a blob again', async (t) => {
  const dir = tempDir(t, 'sl-reloc-');
  const { store, digests } = await withContent(dir, ['alpha', 'beta']);
  const [a, b] = digests as [string, string];
  const blobA = store.path(a)!;
  const layer = join(dir, 'layers', 'L1');
  const fileA = copyOut(store, a, layer, 'a');
  await store.relocate([{ digest: a, file: fileA }]);
  t.false(existsSync(blobA), 'the blob is gone');
  t.is(store.path(a), fileA);
  t.true(store.has(a) && store.isRelocated(a));
  t.deepEqual(await store.info(a), { digest: a, size: 5 });
  t.false(store.isRelocated(b));

  const again = await new LocalContentStore(join(dir, 'cas')).open();
  t.is(again.path(a), fileA, 'the relocation survives a reopen');
  t.is(again.recovery.verified, 0, 'without re-hashing anything');
  const moved = join(dir, 'layers', 'new-gone-L1');
  renameSync(layer, moved);
  t.is(await again.restoreUnder(layer, moved), 1);
  t.is(again.path(a), blobA);
  t.false(again.isRelocated(a));
  t.false(existsSync(join(moved, 'a')), 'moved back, not copied');
  rmSync(moved, { recursive: true });
  t.is(readFileSync(blobA, 'utf8'), 'alpha', 'the blob keeps the bytes once the dir is gone');
  const third = await new LocalContentStore(join(dir, 'cas')).open();
  t.is(third.path(a), blobA);
  t.is(third.recovery.verified, 0, 'restored blobs are recorded durable');
});

test('after a crash the content is where it is: the blob before the unlink, the copy after, gone without either', async (t) => {
  const dir = tempDir(t, 'sl-reloc-');
  const { store, digests } = await withContent(dir, ['one', 'two']);
  const [one, two] = digests as [string, string];
  const blobOne = store.path(one)!;
  const saved = join(dir, 'saved-blob');
  copyFileSync(blobOne, saved);
  const fileOne = copyOut(store, one, join(dir, 'layers', 'L'), 'one');
  const fileTwo = copyOut(store, two, join(dir, 'layers', 'L'), 'two');
  await store.relocate([{ digest: one, file: fileOne }, { digest: two, file: fileTwo }]);
  // A crash after the log record, before the unlink of `one`'s blob: the blob is still there.
  copyFileSync(saved, blobOne);
  // `two`'s copy is gone (its dir deleted by a crash of the prune that would have restored it).
  rmSync(fileTwo);
  const after = await new LocalContentStore(join(dir, 'cas')).open();
  t.is(after.path(one), blobOne, 'the blob wins');
  t.false(after.isRelocated(one));
  t.false(after.has(two), 'content found nowhere is gone (fetched again by the next pull)');
});

test('delete() forgets relocated content and leaves its file to its dir', async (t) => {
  const dir = tempDir(t, 'sl-reloc-');
  const { store, digests } = await withContent(dir, ['gamma']);
  const [g] = digests as [string];
  const file = copyOut(store, g, join(dir, 'layers', 'L'), 'g');
  await store.relocate([{ digest: g, file }]);
  await store.delete(g);
  t.false(store.has(g));
  t.true(existsSync(file));
  await store.relocate([{ digest: g, file }]);
  t.false(store.isRelocated(g), 'content not present is not relocated');
});

test('writeBack() after relocate(): one syncfs of the store, with the blobs already unlinked; relocate() itself does not flush', async (t) => {
  const dir = tempDir(t, 'sl-reloc-');
  const flushes: boolean[] = [];
  let blobs: string[] = [];
  const { store, digests } = await withContent(dir, ['delta', 'epsilon'], { syncfs: async () => void flushes.push(blobs.every((b) => !existsSync(b))) });
  blobs = digests.map((d) => store.path(d)!);
  const files = digests.map((d, i) => ({ digest: d, file: copyOut(store, d, join(dir, 'layers', 'L'), `f${i}`) }));
  const before = flushes.length;
  await store.relocate(files.slice(0, 1));
  await store.relocate(files.slice(1));
  t.is(flushes.length, before, 'the batches do not flush (a view or pull may be waiting for them)');
  await store.writeBack();
  t.deepEqual(flushes.slice(before), [true], 'one flush, with both blobs already unlinked');
});
