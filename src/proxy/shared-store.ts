/**
 * The metadata proxy replicas share (issue 15): which manifest a ref resolved to, manifests, indexed
 * layers (TOCs) with the content index (digest → size, a layer holding it), startup traces, the
 * replicas themselves, and the lock that makes an image indexed once across replicas. Two backends
 * behind this one interface, one contract suite (test/conformance/shared-store-suite.ts):
 * - SQLite (this file): the replica's own store.ts database. The default: one proxy, no --db.
 * - PostgreSQL (pg-store.ts): `--db postgres://…`, shared by every replica.
 *
 * Contract (both backends):
 * - Every method is async and may fail with SL_ERR_PROXY_DB_UNAVAILABLE (database unreachable;
 *   retrying later succeeds) or SL_ERR_PROXY_STORE (schema newer than this build, corrupt store).
 * - Rows keyed by digest (manifests, layers, contents) are immutable: a second put of the same key
 *   keeps the first (same bytes by construction). images(ref, platform) is last-writer-wins.
 * - putLayerIndex records a layer with all its contents atomically (never one without the other).
 * - Traces get increasing ids; tracesSince(id) returns every trace stored after `id` that is still
 *   kept (addTraces keeps the newest `keep` per image+group), oldest first.
 * - withIndexLock(key, fn) runs fn while no other holder of `key` runs, across every replica on the
 *   same database; a holder that dies (process killed, connection lost) releases it.
 *
 * Not here: per-replica content cache state (cached flag, last access: store.ts), content bytes.
 */
import type { TraceUploadTrace } from '../protocol/traces.js';
import type { ImageRecord, LayerRecord, MetadataStore, SharedTrace, TraceMeta } from './store.js';

export type { SharedTrace };

/** One content of an indexed layer, as the content index knows it. */
export interface IndexedContent {
  digest: string;
  size: number;
  /** A layer holding it (the first indexed). */
  sourceDiffID: string;
}

export interface SharedStore {
  /** 'sqlite' | 'postgres'. */
  readonly kind: string;
  /** Where the store lives, for messages (file path, or postgres host/db without credentials). */
  readonly where: string;
  schemaVersion(): Promise<number>;
  putImage(ref: string, platform: string, rec: ImageRecord): Promise<void>;
  imageDigest(ref: string, platform: string): Promise<string | undefined>;
  manifest(digest: string): Promise<ImageRecord | undefined>;
  putLayerIndex(l: LayerRecord, contents: readonly IndexedContent[]): Promise<void>;
  layer(diffID: string): Promise<LayerRecord | undefined>;
  /** Those of `diffIDs` that are recorded (any order). */
  layersKnown(diffIDs: readonly string[]): Promise<string[]>;
  /** Content index entries of `digests` that are known (any order). */
  contents(digests: readonly string[]): Promise<IndexedContent[]>;
  /** Stores the traces of one upload; returns the number stored (see store.ts addTraces). */
  addTraces(meta: TraceMeta, traces: readonly TraceUploadTrace[], layers: readonly string[], keep: number): Promise<number>;
  /** Every image with at least one stored trace; sorted. */
  tracedImages(): Promise<string[]>;
  /** Traces with id > `afterID`, oldest first, at most `limit`. */
  tracesSince(afterID: number, limit: number): Promise<SharedTrace[]>;
  /** Runs `fn` holding the cross-replica lock `key` (waits while another replica holds it). */
  withIndexLock<T>(key: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T>;
  /** Records that replica `url` is alive now. */
  announceReplica(url: string): Promise<void>;
  /** Replicas seen within `maxAgeMs`, newest first. */
  replicas(maxAgeMs: number): Promise<string[]>;
  close(): Promise<void>;
}

/** Lock queues of SQLite stores by file and key (one process owns a SQLite store). */
const sqliteLocks = new Map<string, Promise<void>>();

/** The SQLite backend: the replica's own metadata store, so a single proxy needs nothing else. */
export class SqliteSharedStore implements SharedStore {
  readonly kind = 'sqlite';

  constructor(
    private readonly store: MetadataStore,
    readonly where: string,
  ) {}

  async schemaVersion(): Promise<number> {
    return this.store.schemaVersion();
  }

  async putImage(ref: string, platform: string, rec: ImageRecord): Promise<void> {
    this.store.putImage(ref, platform, rec);
  }

  async imageDigest(ref: string, platform: string): Promise<string | undefined> {
    return this.store.imageDigest(ref, platform);
  }

  async manifest(digest: string): Promise<ImageRecord | undefined> {
    return this.store.manifest(digest);
  }

  async putLayerIndex(l: LayerRecord, contents: readonly IndexedContent[]): Promise<void> {
    if (this.store.hasLayer(l.diffID)) return;
    await this.store.putLayerIndex(l, contents);
  }

  async layer(diffID: string): Promise<LayerRecord | undefined> {
    return this.store.layer(diffID);
  }

  async layersKnown(diffIDs: readonly string[]): Promise<string[]> {
    return diffIDs.filter((d) => this.store.hasLayer(d));
  }

  async tracedImages(): Promise<string[]> {
    return this.store.tracedImages();
  }

  async contents(digests: readonly string[]): Promise<IndexedContent[]> {
    const out: IndexedContent[] = [];
    for (const d of digests) {
      const c = this.store.content(d);
      if (c !== undefined) out.push({ digest: c.digest, size: c.size, sourceDiffID: c.sourceDiffID });
    }
    return out;
  }

  async addTraces(meta: TraceMeta, traces: readonly TraceUploadTrace[], layers: readonly string[], keep: number): Promise<number> {
    return this.store.addTraces(meta, traces, layers, keep);
  }

  async tracesSince(afterID: number, limit: number): Promise<SharedTrace[]> {
    return this.store.tracesSince(afterID, limit);
  }

  /** One process owns a SQLite store: an in-process queue per key is the whole lock. */
  async withIndexLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const k = `${this.where}\0${key}`;
    const prev = sqliteLocks.get(k) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    sqliteLocks.set(k, tail);
    try {
      return await run;
    } finally {
      if (sqliteLocks.get(k) === tail) sqliteLocks.delete(k);
    }
  }

  async announceReplica(): Promise<void> {}

  async replicas(): Promise<string[]> {
    return [];
  }

  /** The metadata store is the replica's: its owner closes it. */
  async close(): Promise<void> {}
}
