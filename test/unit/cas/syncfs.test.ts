/**
 * syncFileSystem (cas/syncfs.ts): syncfs(2) of the file system holding a dir, through the blob addon
 * on the libuv pool (no `sync -f` child forked from the daemon per pull, issue 19); a path it cannot
 * open is a typed error naming the path and the errno.
 */
import test from 'ava';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hasCode } from '../../../src/errors.js';
import { syncFileSystem } from '../../../src/worker/cas/syncfs.js';
import { tempDir } from '../../helpers/tmp.js';

// Serial: it empties PATH, which no other test may see.
test.serial('syncFileSystem flushes without spawning coreutils sync (the addon does it)', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'f'), 'x');
  // With no PATH, `sync -f` cannot be found: only the native call can succeed.
  const path = process.env.PATH;
  process.env.PATH = '';
  try {
    await t.notThrowsAsync(syncFileSystem(dir));
  } finally {
    process.env.PATH = path;
  }
});

test('syncFileSystem of a path that does not exist fails with the errno and the path; a file is flushed as its dir', async (t) => {
  const dir = tempDir(t);
  const missing = join(dir, 'gone');
  const err = await t.throwsAsync(syncFileSystem(missing));
  t.true(hasCode(err, 'SL_ERR_INTERNAL'));
  t.regex(err!.message, /ENOENT/);
  t.true(err!.message.includes(missing));
  const file = join(dir, 'f');
  writeFileSync(file, 'x');
  await t.notThrowsAsync(syncFileSystem(file));
});
