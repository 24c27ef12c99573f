/**
 * createBlob (the item threads' file creation, native/blob.cc): bytes, read-only mode and the stamp
 * the durable log records; a leftover replaced; a failure typed by errno with nothing left behind.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createBlob, nativeBlobs } from '../../../src/worker/stream/create-blob.js';
import { tempDir } from '../../helpers/tmp.js';

test('the native addon is built and used', (t) => {
  t.true(nativeBlobs, 'build/Release/starlight_blob.node loads');
});

test('writes the bytes read-only and stamps the inode and ctime (ns) that stat reports', (t) => {
  const dir = tempDir(t);
  const stamps = new BigUint64Array(6);
  const items = [randomBytes(300_000), Buffer.alloc(0), Buffer.from('tiny')];
  items.forEach((b, i) => createBlob(join(dir, `b${i}`), b, stamps, i));
  items.forEach((b, i) => {
    const p = join(dir, `b${i}`);
    t.true(readFileSync(p).equals(b));
    const st = statSync(p, { bigint: true });
    t.is(Number(st.mode & 0o777n), 0o444);
    t.is(stamps[2 * i], st.ino);
    t.is(stamps[2 * i + 1], st.ctimeNs);
  });
});

test('a view into a larger buffer writes only its bytes', (t) => {
  const dir = tempDir(t);
  const big = randomBytes(10_000);
  createBlob(join(dir, 'v'), big.subarray(1234, 5678), new BigUint64Array(2), 0);
  t.true(readFileSync(join(dir, 'v')).equals(big.subarray(1234, 5678)));
});

test('a leftover at the path is replaced', (t) => {
  const dir = tempDir(t);
  const p = join(dir, 'left');
  writeFileSync(p, 'half a blob from a crash', { mode: 0o444 });
  createBlob(p, Buffer.from('whole'), new BigUint64Array(2), 0);
  t.is(readFileSync(p, 'utf8'), 'whole');
});

test('a failure throws with the errno name and leaves nothing at the path', (t) => {
  const dir = tempDir(t);
  const missing = join(dir, 'no-such-shard', 'x');
  const err = t.throws(() => createBlob(missing, Buffer.from('x'), new BigUint64Array(2), 0));
  t.is((err as NodeJS.ErrnoException).code, 'ENOENT');
  t.false(existsSync(missing));
  // A directory where the file should be: not replaced (unlink fails with EISDIR), typed.
  mkdirSync(join(dir, 'd'));
  const err2 = t.throws(() => createBlob(join(dir, 'd'), Buffer.from('x'), new BigUint64Array(2), 0));
  t.regex((err2 as NodeJS.ErrnoException).code!, /^E[A-Z]+$/);
  t.true(statSync(join(dir, 'd')).isDirectory());
});

test('bad arguments throw TypeError', (t) => {
  const dir = tempDir(t);
  t.throws(() => createBlob(join(dir, 'a'), Buffer.from('x'), new BigUint64Array(1), 0), { instanceOf: TypeError });
  t.false(existsSync(join(dir, 'a')));
});
