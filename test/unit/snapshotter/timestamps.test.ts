/**
 * Snapshot times keep containerd's nanoseconds end to end (issue 17): the clock reads the wall
 * clock finer than Date.now()'s millisecond (containerd's own suite, test/e2e/containerd-snapshot-suite,
 * brackets calls with two time.Now()), the metadata store keeps every
 * nanosecond (and migrates v1's milliseconds), and the gRPC mapping carries them exactly.
 */
import test from 'ava';
import Database from 'better-sqlite3';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { nowNanos } from '../../../src/worker/snapshotter/clock.js';
import { infoFromWire, infoToWire } from '../../../src/worker/snapshotter/grpc-proto.js';
import { MetaStore, rowToInfo } from '../../../src/worker/snapshotter/metastore.js';
import { tempDir } from '../../helpers/tmp.js';

const NS_PER_MS = 1_000_000n;
/** The clock is calibrated to a few µs (clock.ts); the bracket allows that. */
const SLACK_NS = 10_000n;

test('nowNanos has sub-millisecond resolution and stays inside the wall clock\'s millisecond', (t) => {
  // A Date.now()-based clock (what Updated was before, issue 17) reads whole ms: it fails the first check.
  const reads: bigint[] = [];
  for (let round = 0; round < 20; round++) {
    const lo = BigInt(Date.now()) * NS_PER_MS - SLACK_NS;
    const now = nowNanos();
    const hi = (BigInt(Date.now()) + 1n) * NS_PER_MS + SLACK_NS;
    t.true(lo <= now && now < hi, `round ${round}: ${lo} ≤ ${now} < ${hi}`);
    reads.push(now);
  }
  t.true(reads.some((n) => n % NS_PER_MS !== 0n), `sub-ms digits: ${reads.join(' ')}`);
  // Against CLOCK_REALTIME read by another process (coreutils date): never ahead of it.
  const before = nowNanos();
  const date = BigInt(execFileSync('date', ['+%s%N'], { encoding: 'utf8' }).trim());
  t.true(before <= date, `${before} ≤ date's ${date}`);
});

test('nowNanos strictly increases between calls', (t) => {
  const a = nowNanos();
  const b = nowNanos();
  t.true(b > a, `${b} > ${a}`);
});

test('the metadata store keeps nanoseconds', (t) => {
  const store = new MetaStore(join(tempDir(t), 'metadata.db'));
  t.teardown(() => store.close());
  const created = 1_733_450_042_397_489_757n;
  store.create('active', 'k', '', {}, created);
  t.is(store.mustGet('k').created, created);
  t.is(store.mustGet('k').updated, created);
  const updated = created + 1n;
  store.updateLabels('k', { a: 'b' }, [], updated);
  const info = rowToInfo(store.mustGet('k'));
  t.is(info.created, created);
  t.is(info.updated, updated);
  const committed = store.commit('k', 'n', { size: 1, inodes: 1 }, {}, updated + 1n);
  t.is(committed.created, updated + 1n);
});

test('a v1 store (milliseconds) is migrated to nanoseconds', (t) => {
  const path = join(tempDir(t), 'metadata.db');
  const v1 = new Database(path);
  v1.exec(`CREATE TABLE snapshots (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('view', 'active', 'committed')), parent_id INTEGER REFERENCES snapshots(id),
    labels TEXT NOT NULL DEFAULT '{}', created INTEGER NOT NULL, updated INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0, inodes INTEGER NOT NULL DEFAULT 0)`);
  v1.prepare("INSERT INTO snapshots (key, kind, created, updated) VALUES ('old', 'committed', 1733450042397, 1733450042398)").run();
  v1.pragma('user_version = 1');
  v1.close();
  const store = new MetaStore(path);
  t.teardown(() => store.close());
  t.is(store.mustGet('old').created, 1_733_450_042_397_000_000n);
  t.is(store.mustGet('old').updated, 1_733_450_042_398_000_000n);
  store.close();
  const again = new MetaStore(path); // migrated once, not again
  t.is(again.mustGet('old').created, 1_733_450_042_397_000_000n);
  again.close();
});

test('the gRPC mapping carries nanoseconds exactly', (t) => {
  const info = { name: 'n', parent: '', kind: 'committed' as const, created: 1_733_450_042_397_489_757n, updated: 1_733_450_042_999_999_999n, labels: {} };
  const wire = infoToWire(info);
  t.deepEqual(wire.created_at, { seconds: 1_733_450_042, nanos: 397_489_757 });
  t.deepEqual(wire.updated_at, { seconds: 1_733_450_042, nanos: 999_999_999 });
  t.deepEqual(infoFromWire(wire), info);
});
