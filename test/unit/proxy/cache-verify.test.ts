/**
 * The content cache checks what it reads (a corrupt cache file was served forever, found by the mount
 * tests): a whole read that fails its encoded digest is a miss and the entry is dropped; a streamed read
 * drops the entry once the stream ends; an intact file is served as before. Also schema 3's migration:
 * cache entries written without an encoded digest are marked evicted.
 */
import test from 'ava';
import Database from 'better-sqlite3';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { ContentCache } from '../../../src/proxy/content-cache.js';
import { MetadataStore, STORE_FILE } from '../../../src/proxy/store.js';
import { tempDir } from '../../helpers/tmp.js';

const dg = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

async function readAll(r: Readable | Buffer): Promise<Buffer> {
  if (Buffer.isBuffer(r)) return r;
  const parts: Buffer[] = [];
  for await (const b of r) parts.push(b as Buffer);
  return Buffer.concat(parts);
}

/** Flips one byte in the middle of a cached file. */
function corrupt(path: string): void {
  const b = readFileSync(path);
  b[b.length >> 1]! ^= 0xff;
  writeFileSync(path, b);
}

/** A cache without the in-memory tier by default: every open() reads (and checks) the file. */
function setup(t: import('ava').ExecutionContext, hotBytes = 0): { cache: ContentCache; store: MetadataStore; dir: string } {
  const dir = tempDir(t, 'starlight-cache-');
  const store = new MetadataStore(join(dir, STORE_FILE));
  t.teardown(() => store.close());
  return { cache: new ContentCache({ dir, maxBytes: 64 * 1024 * 1024, store, hotBytes }), store, dir };
}

for (const [name, content] of [
  ['small identity (sync read)', randomBytes(4000)],
  ['small brotli (sync read)', Buffer.from('text line\n'.repeat(2000))],
  ['medium identity (whole async read)', randomBytes(200 * 1024)],
] as const) {
  test(`a corrupt ${name} is a miss and is dropped; intact reads still work`, async (t) => {
    const { cache, store } = setup(t);
    const rec = await cache.put(Readable.from([content]), content.length, 'sha256:L');
    t.truthy(rec?.encodedDigest);
    t.truthy(await cache.open(dg(content)), 'intact: served');
    corrupt(cache.pathOf(dg(content)));
    t.is(await cache.open(dg(content)), undefined);
    t.is(cache.counters.corrupt, 1);
    t.false(cache.has(dg(content)));
    t.false(existsSync(cache.pathOf(dg(content))));
    t.is(store.content(dg(content))?.cached, false, 'the store knows to re-fetch it');
    // re-fetched: served again
    await cache.put(Readable.from([content]), content.length, 'sha256:L');
    t.truthy(await cache.open(dg(content)));
  });
}

test('a corrupt streamed file is dropped when its stream ends; brotli encoded digest recorded', async (t) => {
  const { cache } = setup(t);
  const big = Buffer.concat([Buffer.from('compressible '.repeat(60_000)), randomBytes(100)]);
  const rec = await cache.put(Readable.from([big]), big.length, 'sha256:L');
  t.is(rec?.encoding, 'br');
  t.true(rec!.encodedSize > 0);
  const rnd = randomBytes(600 * 1024);
  await cache.put(Readable.from([rnd]), rnd.length, 'sha256:L');
  const intact = await cache.open(dg(rnd));
  t.false(Buffer.isBuffer(intact!.body));
  t.deepEqual(await readAll(intact!.body), rnd);
  t.is(cache.counters.corrupt, 0);
  corrupt(cache.pathOf(dg(rnd)));
  const bad = await cache.open(dg(rnd));
  t.truthy(bad, 'a stream starts before its end can be checked');
  await readAll(bad!.body);
  t.is(cache.counters.corrupt, 1);
  t.false(cache.has(dg(rnd)));
  t.is(await cache.open(dg(rnd)), undefined);
});

test('the memory tier serves the bytes checked when the file was read, until the content leaves the cache', async (t) => {
  const { cache, store } = setup(t, 1024 * 1024);
  const content = Buffer.from('hot line\n'.repeat(3000));
  const medium = randomBytes(700 * 1024); // above the whole-read size without a memory tier
  for (const c of [content, medium]) await cache.put(Readable.from([c]), c.length, 'sha256:L');
  const first = await cache.open(dg(content));
  const [m1, m2] = await Promise.all([cache.open(dg(medium)), cache.open(dg(medium))]);
  t.true(Buffer.isBuffer(m1!.body), 'read whole into memory');
  t.is(m1!.body, m2!.body, 'concurrent opens share one read');
  t.deepEqual(m1!.body, medium);
  corrupt(cache.pathOf(dg(content)));
  const again = await cache.open(dg(content));
  t.is(again!.body, first!.body, 'served from memory: the checked bytes, not the file changed since');
  t.is(cache.counters.corrupt, 0);
  // Gone from the cache (evicted or dropped): gone from memory too; a new file is read and checked.
  for (let i = 0; i < 2; i++) await cache.put(Readable.from([randomBytes(40 * 1024 * 1024)]), 40 * 1024 * 1024, 'sha256:L');
  t.false(cache.has(dg(content)));
  t.is(await cache.open(dg(content)), undefined);
  t.is(store.content(dg(content))?.cached, false);
});

test('schema 3 marks cache entries without an encoded digest as evicted', (t) => {
  const dir = tempDir(t, 'starlight-cache-');
  const file = join(dir, STORE_FILE);
  new MetadataStore(file).close();
  const raw = new Database(file);
  raw.exec('ALTER TABLE contents DROP COLUMN encoded_digest'); // back to the schema-2 shape
  raw.prepare("INSERT INTO contents (digest, size, encoded_size, encoding, source_diff_id, cached, last_access) VALUES ('sha256:aa', 1, 1, 'identity', 'sha256:L', 1, 0)").run();
  raw.pragma('user_version = 2');
  raw.close();
  const store = new MetadataStore(file);
  t.teardown(() => store.close());
  t.is(store.content('sha256:aa')?.cached, false);
});
