import test from 'ava';
import { Readable } from 'node:stream';
import { createHash, randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { brotliDecompressSync } from 'node:zlib';
import { tempDir } from '../../helpers/tmp.js';
import { MetadataStore, SCHEMA_VERSION, STORE_FILE } from '../../../src/proxy/store.js';
import { ContentCache } from '../../../src/proxy/content-cache.js';

const dg = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

async function readAll(r: Readable | Buffer): Promise<Buffer> {
  if (Buffer.isBuffer(r)) return r;
  const parts: Buffer[] = [];
  for await (const b of r) parts.push(b as Buffer);
  return Buffer.concat(parts);
}

test('store: migrates, survives reopen, refuses a newer schema', (t) => {
  const dir = tempDir(t);
  const file = join(dir, STORE_FILE);
  const s = new MetadataStore(file);
  t.is(s.schemaVersion(), SCHEMA_VERSION);
  s.putImage('r/a:1', 'linux/amd64', { manifestDigest: 'sha256:m', mediaType: 'mt', manifest: Buffer.from('M'), config: Buffer.from('C'), repository: 'r/a', diffIDs: ['d1'] });
  s.close();
  const s2 = new MetadataStore(file);
  t.is(s2.imageDigest('r/a:1', 'linux/amd64'), 'sha256:m');
  t.deepEqual(s2.manifest('sha256:m')?.diffIDs, ['d1']);
  s2.close();
  const raw = new Database(file);
  raw.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
  raw.close();
  const err = t.throws(() => new MetadataStore(file));
  t.is((err as { code?: string }).code, 'SL_ERR_PROXY_STORE');
});

test('cache: stores once, encodes by size/compressibility, evicts LRU, rebuilds at start', async (t) => {
  const dir = tempDir(t);
  const store = new MetadataStore(join(dir, STORE_FILE));
  t.teardown(() => store.close());
  const cache = new ContentCache({ dir, maxBytes: 300 * 1024, store });
  const small = Buffer.from('tiny');
  const text = Buffer.from('compress me please\n'.repeat(5000));
  const rnd = randomBytes(200 * 1024);
  const r1 = await cache.put(Readable.from([small]), small.length, 'L');
  t.is(r1?.encoding, 'identity');
  const r2 = await cache.put(Readable.from([text]), text.length, 'L');
  t.is(r2?.encoding, 'br');
  t.true(r2!.encodedSize < text.length / 10);
  const got = await cache.open(dg(text));
  t.deepEqual(brotliDecompressSync(await readAll(got!.body)), text);
  const r3 = await cache.put(Readable.from([rnd]), rnd.length, 'L');
  t.is(r3?.encoding, 'identity');
  // a wrong expected digest is refused
  const bad = await t.throwsAsync(cache.put(Readable.from([small]), small.length, 'L', { expectedDigest: dg(text) }));
  t.is((bad as { code?: string }).code, 'SL_ERR_OCI_DIGEST_MISMATCH');
  // `only` skips other digests
  t.is(await cache.put(Readable.from([Buffer.from('zzz')]), 3, 'L', { only: new Set(['sha256:x']) }), undefined);
  // touch `small` so it is recent, then overflow: the text (LRU) goes, random stays
  await cache.open(dg(small));
  const rnd2 = randomBytes(150 * 1024);
  await cache.put(Readable.from([rnd2]), rnd2.length, 'L');
  t.true(cache.storedBytes <= 300 * 1024);
  t.true(cache.counters.evictions >= 1);
  t.false(cache.has(dg(text)));
  t.false(existsSync(cache.pathOf(dg(text))));
  t.is(store.content(dg(text))?.cached, false, 'store remembers evicted content');
  t.is(await cache.open(dg(text)), undefined);
  cache.close();
  const again = new ContentCache({ dir, maxBytes: 300 * 1024, store });
  t.true(again.has(dg(small)));
  t.true(again.has(dg(rnd2)));
  t.false(again.has(dg(text)));
});
