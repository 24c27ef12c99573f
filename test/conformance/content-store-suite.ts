/**
 * ContentStore contract suite (roles as in containerd's content store tests), run against every
 * implementation through a factory.
 */
import type { ExecutionContext, TestFn } from 'ava';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { hasCode } from '../../src/errors.js';
import type { ContentStore } from '../../src/worker/cas/store.js';

export type StoreFactory = (dir: string) => Promise<ContentStore>;

const sha = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');

export function contentStoreSuite(test: TestFn, name: string, factory: StoreFactory, tempDir: (t: ExecutionContext) => string): void {
  test(`${name}: content is readable only after commit, with the exact bytes`, async (t) => {
    const store = await factory(tempDir(t));
    const data = Buffer.from('hello starlight\n');
    const d = sha(data);
    const w = await store.writer('r1');
    await w.write(data.subarray(0, 5));
    t.is(store.path(d), null, 'not readable before commit');
    t.false(store.has(d));
    t.is(w.writtenBytes, 5);
    t.deepEqual((await readFile(w.ingestPath)).subarray(0, 5), data.subarray(0, 5), 'partial bytes are on disk');
    await w.write(data.subarray(5));
    await w.commit(data.length, d);
    const p = store.path(d);
    t.truthy(p);
    t.true(store.has(d));
    await store.sync();
    t.true(store.has(d), 'still there after sync');
    t.deepEqual(await readFile(p!), data);
    t.deepEqual(await store.info(d), { digest: d, size: data.length });
    const all = [];
    for await (const i of store.walk()) all.push(i.digest);
    t.deepEqual(all, [d]);
  });

  test(`${name}: wrong digest or size is refused and discarded`, async (t) => {
    const store = await factory(tempDir(t));
    const data = Buffer.from('abc');
    const w = await store.writer('r');
    await w.write(data);
    const wrong = sha(Buffer.from('abd'));
    const err = await t.throwsAsync(w.commit(3, wrong));
    t.true(hasCode(err, 'SL_ERR_CAS_DIGEST_MISMATCH'));
    t.is(store.path(wrong), null);
    const w2 = await store.writer('r');
    await w2.write(data);
    t.true(hasCode(await t.throwsAsync(w2.commit(4, sha(data))), 'SL_ERR_CAS_SIZE_MISMATCH'));
    t.is(store.path(sha(data)), null);
  });

  test(`${name}: one writer per ref; abort frees it; duplicates commit fine; delete`, async (t) => {
    const store = await factory(tempDir(t));
    const w = await store.writer('same');
    t.true(hasCode(await t.throwsAsync(store.writer('same')), 'SL_ERR_CAS_WRITER_BUSY'));
    await w.abort();
    await w.abort();
    const data = Buffer.from('x');
    for (let i = 0; i < 2; i++) {
      const wi = await store.writer('same');
      await wi.write(data);
      await wi.commit(1, sha(data));
    }
    t.truthy(store.path(sha(data)));
    await store.delete(sha(data));
    t.is(store.path(sha(data)), null);
    t.false(store.has(sha(data)));
    await store.delete(sha(data));
    t.true(hasCode(t.throws(() => store.path('md5:abc')), 'SL_ERR_INVALID_ARGUMENT'));
  });
}
