/**
 * Test-side mounting of containerd Mount lists (what containerd's mount package does), via util-linux
 * `mount`, with unmounting registered in t.teardown so nothing stays mounted after a failure.
 */
import type { ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Mount } from '../../src/worker/snapshotter/types.js';

const exec = promisify(execFile);
/** One mount/umount call, ms. */
const MOUNT_TIMEOUT_MS = 10_000;

export async function mountAll(mounts: Mount[], target: string): Promise<void> {
  for (const m of mounts) {
    if (m.type === 'bind') {
      await exec('mount', ['-o', m.options.join(','), m.source, target], { timeout: MOUNT_TIMEOUT_MS });
    } else {
      await exec('mount', ['-t', m.type, '-o', m.options.join(','), m.source, target], { timeout: MOUNT_TIMEOUT_MS });
    }
  }
}

export async function unmount(target: string): Promise<void> {
  await exec('umount', [target], { timeout: MOUNT_TIMEOUT_MS });
}

/**
 * Mounts `mounts` on a fresh dir under `base` and returns it; `done()` unmounts it (also done in
 * teardown if the test fails before).
 */
export async function withMounted(t: ExecutionContext, base: string, mounts: Mount[]): Promise<{ dir: string; done: () => Promise<void> }> {
  const dir = await mkdtemp(join(base, 'mnt-'));
  await mountAll(mounts, dir);
  let mounted = true;
  const done = async () => {
    if (!mounted) return;
    mounted = false;
    await exec('umount', ['-l', dir], { timeout: MOUNT_TIMEOUT_MS });
  };
  t.teardown(done);
  return { dir, done };
}
