/** The shared-store contract suite against the SQLite backend (the default single-proxy store). */
import test from 'ava';
import { join } from 'node:path';
import { SqliteSharedStore } from '../../../src/proxy/shared-store.js';
import { MetadataStore } from '../../../src/proxy/store.js';
import { sharedStoreSuite } from '../../conformance/shared-store-suite.js';
import { tempDir } from '../../helpers/tmp.js';

sharedStoreSuite(test, 'sqlite', async (t) => {
  const file = join(tempDir(t), 'meta.db');
  const open = async (): Promise<SqliteSharedStore> => {
    const m = new MetadataStore(file);
    t.teardown(() => m.close());
    return new SqliteSharedStore(m, file);
  };
  return { store: await open(), reopen: open };
});
