import test from 'ava';
import { createHash } from 'node:crypto';
import { LocalContentStore } from '../../../src/worker/cas/store.js';
import { contentStoreSuite } from '../../conformance/content-store-suite.js';
import { tempDir } from '../../helpers/tmp.js';

contentStoreSuite(test, 'LocalContentStore', (dir) => new LocalContentStore(dir).open(), tempDir);

test('LocalContentStore: committed content survives a reopen; stale ingests are dropped', async (t) => {
  const dir = tempDir(t);
  const a = await new LocalContentStore(dir).open();
  const data = Buffer.from('persist me');
  const d = 'sha256:' + createHash('sha256').update(data).digest('hex');
  const w = await a.writer('p');
  await w.write(data);
  await w.commit(data.length, d);
  const stale = await a.writer('stale');
  await stale.write(Buffer.from('half'));
  const b = await new LocalContentStore(dir).open();
  t.deepEqual(await b.info(d), { digest: d, size: data.length });
  const { existsSync } = await import('node:fs');
  t.false(existsSync(stale.ingestPath));
});
