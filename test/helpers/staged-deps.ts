/**
 * The parts a DeltaSession reads from (metadata store, content cache, staging area) in a temp dir, with
 * `contents` staged raw as one layer 'sha256:l' (announced 'identity'). For session-level unit tests.
 */
import type { ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { ContentCache } from '../../src/proxy/content-cache.js';
import type { IndexerService } from '../../src/proxy/indexer-service.js';
import type { ItemSourceDeps } from '../../src/proxy/session/item-source.js';
import { StagingArea } from '../../src/proxy/staging.js';
import { MetadataStore, STORE_FILE } from '../../src/proxy/store.js';
import { tempDir } from './tmp.js';

export const sha256Of = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** Stages `contents`; the indexer is absent (only needed to re-fetch evicted contents: never here). */
export async function stagedDeps(t: ExecutionContext, contents: Buffer[]): Promise<ItemSourceDeps> {
  const dir = tempDir(t);
  const store = new MetadataStore(join(dir, STORE_FILE));
  t.teardown(() => store.close());
  const cache = new ContentCache({ dir, maxBytes: 1 << 30, store });
  const staging = new StagingArea(join(dir, 'staging'), 1 << 30);
  const stage = staging.begin('sha256:l');
  const staged = [];
  for (const c of contents) {
    stage.reserve(c.length);
    staged.push({ digest: sha256Of(c), size: c.length, offset: stage.position });
    await stage.write(c);
  }
  await stage.commit(staged);
  return { store, cache, staging, indexer: undefined as unknown as IndexerService };
}
