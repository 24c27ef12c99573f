/**
 * waitGone (bench/drivers/quiesce.ts) with a real process: it reports a process that names a path
 * under the directory, and resolves once that process has exited.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { waitGone } from '../../../bench/drivers/quiesce.js';
import { tempDir } from '../../helpers/tmp.js';

test('waitGone waits for a process naming a path under the directory, and names it at the deadline', async (t) => {
  const dir = tempDir(t, 'starlight-quiesce-');
  const ac = new AbortController();
  t.is(typeof (await waitGone(dir, ac.signal, 10_000)), 'number', 'nothing there: resolves');
  // A stand-in for a leftover daemon: an argument under `dir`, runs until killed.
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', join(dir, 'r', 'api.sock')], { stdio: 'ignore' });
  t.teardown(() => void child.kill('SIGKILL'));
  await new Promise<void>((resolve, reject) => child.once('spawn', resolve).once('error', reject));
  const err = await t.throwsAsync(waitGone(dir, ac.signal, 300));
  t.regex(err?.message ?? '', new RegExp(`processes ${child.pid}`));
  const gone = waitGone(dir, ac.signal, 60_000);
  child.kill('SIGTERM');
  t.is(typeof (await gone), 'number', 'resolves once the process exited');
});
