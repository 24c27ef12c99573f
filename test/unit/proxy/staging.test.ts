import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { tempDir } from '../../helpers/tmp.js';
import { StagingArea } from '../../../src/proxy/staging.js';

const dg = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

async function readAll(r: Readable | Buffer | undefined): Promise<Buffer | undefined> {
  if (r === undefined || Buffer.isBuffer(r)) return r;
  const parts: Buffer[] = [];
  for await (const b of r) parts.push(b as Buffer);
  return Buffer.concat(parts);
}

test('staged contents read back by digest (small whole, large streamed); discard removes file, lookups and reservation', async (t) => {
  const dir = join(tempDir(t), 'staging');
  const area = new StagingArea(dir, 4 << 20);
  const small = randomBytes(1000);
  const large = randomBytes(3 << 20);
  const stage = area.begin('sha256:layer');
  t.true(stage.reserve(small.length));
  t.true(stage.reserve(large.length));
  t.false(stage.reserve(1 << 20), 'over the budget');
  const o1 = stage.position;
  await stage.write(small.subarray(0, 10));
  await stage.write(small.subarray(10));
  const o2 = stage.position;
  await stage.write(large);
  t.is(area.lookup(dg(small)), undefined, 'not visible before commit');
  await stage.commit([
    { digest: dg(small), size: small.length, offset: o1 },
    { digest: dg(large), size: large.length, offset: o2 },
  ]);
  t.deepEqual(await readAll(area.open(dg(small))), small);
  t.deepEqual(await readAll(area.open(dg(large))), large);
  t.is(area.usedBytes, small.length + large.length);
  await stage.discard();
  t.is(area.open(dg(small)), undefined);
  t.is(area.usedBytes, 0);
  t.deepEqual(readdirSync(dir), []);
});

test('a new area wipes what an earlier process left', async (t) => {
  const dir = join(tempDir(t), 'staging');
  const a = new StagingArea(dir, 1 << 20);
  const s = a.begin('sha256:x');
  s.reserve(3);
  await s.write(Buffer.from('abc'));
  await s.commit([{ digest: dg(Buffer.from('abc')), size: 3, offset: 0 }]);
  t.true(existsSync(s.path));
  new StagingArea(dir, 1 << 20);
  t.false(existsSync(s.path));
});
