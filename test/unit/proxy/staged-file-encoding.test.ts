import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { brotliDecompressSync } from 'node:zlib';
import { tempDir } from '../../helpers/tmp.js';
import { type StagedContent, StagingArea } from '../../../src/proxy/staging.js';
import { encodeStagedToFile } from '../../../src/proxy/session/staged-file-encoding.js';

const dg = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** Compressible bytes (hex text: brotli q1 takes it to ~half). */
const text = (n: number): Buffer => Buffer.from(randomBytes(Math.ceil(n / 2)).toString('hex')).subarray(0, n);

async function readAll(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of r) parts.push(b as Buffer);
  return Buffer.concat(parts);
}

/** An area of `budget` bytes holding `contents` staged in one layer (a small random lead-in first, so offsets are not 0). */
async function staged(dir: string, budget: number, contents: Buffer[]): Promise<{ area: StagingArea; items: StagedContent[] }> {
  const area = new StagingArea(dir, budget);
  const stage = area.begin('sha256:layer');
  const lead = randomBytes(777);
  const all = [lead, ...contents];
  const rows: { digest: string; size: number; offset: number }[] = [];
  for (const c of all) {
    if (!stage.reserve(c.length)) throw new Error('test budget too small');
    rows.push({ digest: dg(c), size: c.length, offset: stage.position });
    await stage.write(c);
  }
  await stage.commit(rows);
  return { area, items: contents.map((c) => area.lookup(dg(c))!) };
}

const tmpFiles = (dir: string): string[] => readdirSync(dir).filter((f) => f.endsWith('.tmp'));

test('a large compressible staged content is brotli-encoded through a temp file: decodes to its bytes, the file is unlinked once open, its budget comes back when the body closes', async (t) => {
  const dir = join(tempDir(t), 'staging');
  const big = text(20 << 20);
  const { area, items } = await staged(dir, 64 << 20, [big]);
  const before = area.usedBytes;
  const enc = await encodeStagedToFile(area, items[0]!, 1);
  t.truthy(enc);
  t.true(enc!.encodedSize < big.length * 0.9, `encoded ${enc!.encodedSize} of ${big.length}`);
  t.deepEqual(tmpFiles(dir), [], 'unlinked as soon as it is open');
  t.is(area.usedBytes, before + big.length, 'the temp file holds the raw size of the budget while it is read');
  const bytes = await readAll(enc!.body);
  t.is(bytes.length, enc!.encodedSize);
  t.true(brotliDecompressSync(bytes).equals(big));
  await new Promise((r) => (enc!.body.closed ? r(undefined) : enc!.body.once('close', r)));
  t.is(area.usedBytes, before);
});

test('a body closed before its end gives the budget back', async (t) => {
  const dir = join(tempDir(t), 'staging');
  const { area, items } = await staged(dir, 64 << 20, [text(18 << 20)]);
  const before = area.usedBytes;
  const enc = await encodeStagedToFile(area, items[0]!, 1);
  t.truthy(enc);
  enc!.body.destroy();
  await new Promise((r) => enc!.body.once('close', r));
  t.is(area.usedBytes, before);
  t.deepEqual(tmpFiles(dir), []);
});

test('no encoding when it does not pay (random bytes; a compressible head over random bytes), or when the budget has no room; nothing left behind', async (t) => {
  const dir = join(tempDir(t), 'staging');
  const random = randomBytes(17 << 20);
  const tricky = Buffer.concat([text(1 << 20), randomBytes(17 << 20)]);
  const { area, items } = await staged(dir, 2 * (17 << 20) + (18 << 20) + 4096 + (20 << 20), [random, tricky]);
  const before = area.usedBytes;
  t.is(await encodeStagedToFile(area, items[0]!, 1), undefined, 'random: the sample does not compress');
  t.is(await encodeStagedToFile(area, items[1]!, 1), undefined, 'the sample compresses, the whole does not');
  t.is(area.usedBytes, before);
  t.deepEqual(tmpFiles(dir), []);

  const dir2 = join(tempDir(t), 'staging');
  const big = text(17 << 20);
  const full = await staged(dir2, big.length + 777, [big]);
  t.is(await encodeStagedToFile(full.area, full.items[0]!, 1), undefined, 'no room for the temp file');
  t.deepEqual(tmpFiles(dir2), []);
});

test('a stage discarded meanwhile: undefined (the caller goes to the cache)', async (t) => {
  const dir = join(tempDir(t), 'staging');
  const area = new StagingArea(dir, 64 << 20);
  const gone: StagedContent = { digest: 'sha256:' + '0'.repeat(64), size: 17 << 20, diffID: 'sha256:l', path: join(dir, 'nope.raw'), offset: 0 };
  t.is(await encodeStagedToFile(area, gone, 1), undefined);
});
