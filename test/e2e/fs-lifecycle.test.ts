/**
 * Process-level lifecycle of FUSE views: a view mounted by a child process disappears when that
 * process exits without unmounting (env cleanup hook), and a view whose process was SIGKILLed
 * (left ENOTCONN) is detached by cleanupStaleMount.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanupStaleMount } from '../../src/worker/fs/mount-table.js';
import { tempDir } from '../helpers/tmp.js';

const viewsModule = fileURLToPath(new URL('../../src/worker/fs/fuse-views.js', import.meta.url));
const isMounted = (mnt: string): boolean => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === mnt);

/** A child that mounts a one-file view at `mnt`, prints "mounted", then runs `then`. */
function child(t: ExecutionContext, mnt: string, then: string): { proc: ReturnType<typeof spawn>; mounted: Promise<void>; exited: Promise<number | null> } {
  const src = `
    import { FuseViewManager } from ${JSON.stringify(viewsModule)};
    const tree = { diffIDs: [], entries: [
      { path: '', type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0 },
      { path: 'f', type: 'reg', mode: 0o644, uid: 0, gid: 0, size: 3, mtime: 0, digest: 'sha256:f' } ] };
    const content = { locate: () => null, waitFor: () => new Promise(() => {}) };
    const views = new FuseViewManager({ handleSignals: false });
    await views.mount(${JSON.stringify(mnt)}, { tree, content });
    console.log('mounted');
    ${then}
  `;
  const dir = tempDir(t, 'starlight-child-');
  const file = join(dir, 'child.mjs');
  writeFileSync(file, src);
  const proc = spawn(process.execPath, [file], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => void (proc.exitCode === null && proc.kill('SIGKILL')));
  const mounted = new Promise<void>((res, rej) => {
    proc.stdout!.on('data', (b: Buffer) => b.toString().includes('mounted') && res());
    proc.on('exit', () => rej(new Error('child exited before mounting')));
  });
  const exited = new Promise<number | null>((res) => proc.on('exit', (code) => res(code)));
  return { proc, mounted, exited };
}

for (const [how, then] of [
  ['process.exit()', 'setTimeout(() => process.exit(0), 300);'],
  ['the event loop draining', 'setTimeout(() => {}, 300);'],
]) {
  test.serial(`a process ending by ${how} without unmount leaves no mount`, async (t) => {
    const mnt = join(tempDir(t, 'starlight-fs-'), 'mnt');
    mkdirSync(mnt);
    t.teardown(() => void cleanupStaleMount(mnt).catch(() => undefined));
    const c = child(t, mnt, then);
    await c.mounted;
    t.true(isMounted(mnt));
    t.is(await c.exited, 0);
    t.false(isMounted(mnt));
  });
}

test.serial('cleanupStaleMount detaches the mount of a killed process and leaves healthy dirs alone', async (t) => {
  const root = tempDir(t, 'starlight-fs-');
  const mnt = join(root, 'mnt');
  mkdirSync(mnt);
  t.teardown(() => void cleanupStaleMount(mnt).catch(() => undefined));
  t.is(await cleanupStaleMount(mnt), 'none');
  const c = child(t, mnt, `setInterval(() => {}, 1000);`);
  await c.mounted;
  t.is(await cleanupStaleMount(mnt), 'alive');
  c.proc.kill('SIGKILL');
  await c.exited;
  t.true(isMounted(mnt));
  await t.throwsAsync(statfs(mnt), { code: 'ENOTCONN' });
  t.is(await cleanupStaleMount(mnt), 'cleaned');
  t.false(isMounted(mnt));
  t.true((await stat(mnt)).isDirectory());
});
