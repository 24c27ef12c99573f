/**
 * Crash test of the CAS's durability (issue 14): a real process ingests through the item pool with
 * the real syncfs and is killed with SIGKILL at an arbitrary point; then what a power cut may do to
 * data that was never flushed is done to every blob not known durable (cut short or zeroed), and one
 * durable blob is truncated too (the fault suite's "kill -9 + truncation"). The reopened store must
 * hold only blobs that hash to their names, keep every undamaged durable one without re-hashing it,
 * and have dropped every damaged one (so it is fetched again, never served).
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { basename, join } from 'node:path';
import { LocalContentStore } from '../../../src/worker/cas/store.js';
import { casBlobFilesSync } from '../../helpers/cas.js';
import { tempDir } from '../../helpers/tmp.js';

const CHILD = fileURLToPath(new URL('./fixtures/ingest-forever.fixture.js', import.meta.url));
/** Durable blobs to see before the kill (several syncs happened). */
const DURABLE_BEFORE_KILL = 64;
const DEADLINE_MS = 120_000;

test('after kill -9 and a simulated power cut, the store holds only verified blobs and keeps the durable ones', async (t) => {
  const dir = tempDir(t);
  const child = spawn(process.execPath, [CHILD, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const durable = new Set<string>();
  const committed = new Set<string>();
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`child reported ${durable.size} durable blobs within ${DEADLINE_MS} ms`)), DEADLINE_MS);
    let buf = '';
    child.stdout.on('data', (b: Buffer) => {
      buf += b.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) {
        const [what, hex] = l.split(' ');
        (what === 'durable' ? durable : committed).add(hex!);
      }
      // Kill once some syncs are done and more was committed since (a crash mid-stream).
      if (durable.size >= DURABLE_BEFORE_KILL && committed.size > durable.size && child.signalCode === null) {
        child.kill('SIGKILL');
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code, sig) => {
      if (sig !== 'SIGKILL') reject(new Error(`child exited early: ${code} ${sig}`));
    });
  });
  await new Promise<void>((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', () => r())));

  // The power cut: unflushed blobs may be cut short or read back as zeros.
  const blobDir = join(dir, 'sha256');
  const blobOf = (hex: string): string => join(blobDir, casBlobFilesSync(dir).find((f) => f.endsWith(hex))!);
  const damaged = new Set<string>();
  let n = 0;
  for (const hex of casBlobFilesSync(dir).map((f) => basename(f))) {
    if (durable.has(hex)) continue;
    const p = blobOf(hex);
    chmodSync(p, 0o644);
    if (n++ % 2 === 0) truncateSync(p, Math.floor(statSync(p).size / 2));
    else writeFileSync(p, Buffer.alloc(statSync(p).size));
    damaged.add(hex);
  }
  const victim = [...durable][0]!;
  chmodSync(blobOf(victim), 0o644);
  truncateSync(blobOf(victim), 1);
  damaged.add(victim);
  t.true(damaged.size >= 2, `some blobs were not durable yet at the kill (${damaged.size})`);

  const store = await new LocalContentStore(dir).open();
  for (const hex of casBlobFilesSync(dir).map((f) => basename(f))) {
    t.is(createHash('sha256').update(readFileSync(blobOf(hex))).digest('hex'), hex, `blob ${hex} hashes to its name`);
  }
  for (const hex of damaged) t.is(store.path('sha256:' + hex), null, `damaged ${hex} is not served`);
  for (const hex of durable) if (!damaged.has(hex)) t.truthy(store.path('sha256:' + hex), `durable ${hex} kept`);
  t.true(store.recovery.trusted >= durable.size - 1, `durable blobs trusted without re-hashing (${store.recovery.trusted} of ${durable.size - 1})`);
  t.deepEqual([...store.recovery.dropped].sort(), [...damaged].map((h) => 'sha256:' + h).sort());
});
