/** The shared-store contract suite against PostgreSQL (a real server per test: test/helpers/postgres.ts). */
import test from 'ava';
import pg from 'pg';
import { hasCode } from '../../../src/errors.js';
import { PG_SCHEMA_VERSION, PgSharedStore } from '../../../src/proxy/pg-store.js';
import { sharedStoreSuite } from '../../conformance/shared-store-suite.js';
import { type TestPostgres, freshDatabase, startPostgres } from '../../helpers/postgres.js';

// One server for the suite (initdb costs seconds), a fresh database per test.
const cleanups: (() => unknown)[] = [];
let server: Promise<TestPostgres> | undefined;
test.after.always(async () => {
  for (const c of cleanups.reverse()) await c();
});

sharedStoreSuite(test, 'postgres', async (t) => {
  server ??= startPostgres({ teardown: (fn) => void cleanups.push(fn) });
  const url = await freshDatabase(await server);
  const open = async (): Promise<PgSharedStore> => {
    const s = await PgSharedStore.open(url);
    t.teardown(() => s.close());
    return s;
  };
  return { store: await open(), reopen: open };
});

test('postgres: a database with a newer schema is refused; a stopped database is SL_ERR_PROXY_DB_UNAVAILABLE, and it recovers', async (t) => {
  const db = await startPostgres(t);
  const s = await PgSharedStore.open(db.url);
  t.teardown(() => s.close());
  t.is(await s.schemaVersion(), PG_SCHEMA_VERSION);
  await db.stop();
  const err = await t.throwsAsync(s.imageDigest('a:1', 'linux/amd64'));
  t.true(hasCode(err, 'SL_ERR_PROXY_DB_UNAVAILABLE'), String(err));
  t.regex(err!.message, /proxy database postgres:\/\/\/tmp\/starlight-pg-/);
  await db.start();
  t.is(await s.imageDigest('a:1', 'linux/amd64'), undefined, 'the pool reconnects');
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  await c.query('UPDATE starlight_schema SET version = $1', [PG_SCHEMA_VERSION + 1]);
  await c.end();
  const newer = await t.throwsAsync(PgSharedStore.open(db.url));
  t.true(hasCode(newer, 'SL_ERR_PROXY_STORE'), String(newer));
});
