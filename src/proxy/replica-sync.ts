/**
 * What one proxy replica does with the shared store (`--db postgres://…`, shared-store.ts) so that
 * replicas behave as one proxy (issue 15, docs/design-notes.md "Replicas"):
 * - The replica's own SQLite store (store.ts) stays its synchronous working copy (the planner and the
 *   send path read it per item, far too often for a network round trip), mirroring rows of the shared
 *   store: a layer indexed by another replica is copied in (hydrateLayer) instead of re-indexed, and
 *   traces uploaded anywhere are copied in before a delta is planned (syncTraces).
 * - Layers are indexed once across replicas: the indexer holds the shared index lock of a layer while
 *   indexing it; a replica finding it held waits, then hydrates (indexer-service.ts).
 * - Content bytes stay per replica (derived data), but a miss is filled from a live peer replica's
 *   GET /v1/content before falling back to the registry (fillFromPeers): an image indexed through
 *   one replica is then served by another without fetching its layer blobs again.
 *
 * Not here: the shared schema (pg-store.ts), indexing (indexer-service.ts).
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Readable } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflateRaw } from 'node:zlib';
import { isDigest } from '../oci/digest.js';
import { decodeToc } from '../layers/toc-codec.js';
import type { LayerToc } from '../layers/toc.js';
import type { Logger } from '../log.js';
import { HTTP_HEADER_ENCODING } from '../protocol/constants.js';
import type { ContentCache } from './content-cache.js';
import type { IndexedContent, SharedStore } from './shared-store.js';
import { KEEP_TRACES_PER_IMAGE, type MetadataStore } from './store.js';

/** A replica is a live peer if it announced itself within this many ms. */
const REPLICA_TTL_MS = 30_000;
/** Announce interval (ms). */
const ANNOUNCE_EVERY_MS = 10_000;
/** Traces copied per round trip of syncTraces. */
const SYNC_TRACES_BATCH = 500;
/** Peer content requests at once (per fill). */
const PEER_CONCURRENCY = 8;
/** A peer request that does not answer within this many ms is abandoned (the registry is the fallback). */
const PEER_TIMEOUT_MS = 30_000;

export interface ReplicaSyncOptions {
  shared: SharedStore;
  store: MetadataStore;
  cache: ContentCache;
  logger: Logger;
  /** Bearer token for peers' /v1/content (replicas share their tokens). */
  peerToken?: string;
  /** Counted per content filled from a peer. */
  onPeerFetch?: () => void;
}

/** The contents of a layer as its TOC lists them: every non-empty regular file, once per digest. */
export function layerContents(diffID: string, toc: LayerToc): IndexedContent[] {
  const out = new Map<string, IndexedContent>();
  for (const e of toc.entries) {
    if (e.type === 'reg' && e.size > 0 && e.digest !== undefined && !out.has(e.digest)) out.set(e.digest, { digest: e.digest, size: e.size, sourceDiffID: diffID });
  }
  return [...out.values()];
}

export class ReplicaSync {
  /** Highest shared trace id copied into the local store. */
  private traceWatermark = 0;
  private syncing: Promise<number> | undefined;
  private self: string | undefined;
  private announcer: NodeJS.Timeout | undefined;

  constructor(private readonly o: ReplicaSyncOptions) {}

  get shared(): SharedStore {
    return this.o.shared;
  }

  /** Announces `selfUrl` now and every ANNOUNCE_EVERY_MS (failures are logged: the db may be down). */
  async start(selfUrl: string): Promise<void> {
    this.self = selfUrl;
    await this.o.shared.announceReplica(selfUrl);
    this.announcer = setInterval(() => {
      this.o.shared.announceReplica(selfUrl).catch((err: unknown) => this.o.logger.warn('replica-announce-failed', { error: err }));
    }, ANNOUNCE_EVERY_MS);
    this.announcer.unref();
    await this.publishLocal();
    await this.syncTraces();
  }

  /**
   * Publishes what this replica's SQLite store holds and the shared store lacks (a data dir of a
   * single proxy, or of the release before --db, joining a database): its layers, images, and the
   * traces of images the shared store has none of. Then the local traces are dropped: from here on
   * they are a copy of the shared ones (syncTraces), never counted twice.
   */
  private async publishLocal(): Promise<void> {
    const { store, shared } = this.o;
    const ids = store.layerIDs();
    const known = new Set(await shared.layersKnown(ids));
    let layers = 0;
    for (const id of ids) {
      if (known.has(id)) continue;
      const l = store.layer(id)!;
      await shared.putLayerIndex(l, layerContents(id, decodeToc(l.toc)));
      layers++;
    }
    let images = 0;
    for (const img of store.imageRefs()) {
      const m = store.manifest(img.manifestDigest);
      if (m === undefined || (await shared.imageDigest(img.ref, img.platform)) !== undefined) continue;
      await shared.putImage(img.ref, img.platform, m);
      images++;
    }
    const tracedShared = new Set(await shared.tracedImages());
    let traces = 0;
    for (let after = 0; ; ) {
      const batch = store.tracesSince(after, SYNC_TRACES_BATCH);
      for (const t of batch) {
        after = t.id;
        if (tracedShared.has(t.meta.manifestDigest)) continue;
        await shared.addTraces(t.meta, [t.trace], t.layers, KEEP_TRACES_PER_IMAGE);
        traces++;
      }
      if (batch.length < SYNC_TRACES_BATCH) break;
    }
    store.clearTraces();
    if (layers + images + traces > 0) this.o.logger.info('store-published', { db: shared.where, layers, images, traces });
  }

  stop(): void {
    if (this.announcer !== undefined) clearInterval(this.announcer);
    this.announcer = undefined;
  }

  /** Copies layer `diffID` (TOC and content rows) from the shared store if another replica indexed it; true if it did. */
  async hydrateLayer(diffID: string): Promise<boolean> {
    if (this.o.store.hasLayer(diffID)) return true;
    const l = await this.o.shared.layer(diffID);
    if (l === undefined) return false;
    await this.o.store.putLayerIndex(l, layerContents(diffID, decodeToc(l.toc)));
    this.o.logger.info('layer-hydrated', { diffID });
    return true;
  }

  /** Copies traces stored since the last call (by any replica) into the local store; the number copied. */
  syncTraces(): Promise<number> {
    // One sync at a time: a second caller waits for the running one and then runs its own (it may
    // have been asked for right after an upload the running one did not see yet).
    const run = async (): Promise<number> => {
      let n = 0;
      for (;;) {
        const batch = await this.o.shared.tracesSince(this.traceWatermark, SYNC_TRACES_BATCH);
        for (const t of batch) {
          this.o.store.addTraces(t.meta, [t.trace], t.layers, KEEP_TRACES_PER_IMAGE);
          this.traceWatermark = t.id;
        }
        n += batch.length;
        if (batch.length < SYNC_TRACES_BATCH) return n;
      }
    };
    const p: Promise<number> = (this.syncing ?? Promise.resolve(0)).then(run, run).finally(() => {
      if (this.syncing === p) this.syncing = undefined;
    });
    this.syncing = p;
    return p;
  }

  /**
   * Fetches the `wanted` contents of layer `sourceDiffID` from live peer replicas into the cache;
   * returns the digests it stored. Never throws: what is not filled is left to the registry.
   */
  async fillFromPeers(sourceDiffID: string, wanted: ReadonlySet<string>): Promise<Set<string>> {
    const got = new Set<string>();
    let peers: string[];
    try {
      peers = (await this.o.shared.replicas(REPLICA_TTL_MS)).filter((u) => u !== this.self);
    } catch (err) {
      this.o.logger.warn('replica-list-failed', { error: err });
      return got;
    }
    if (peers.length === 0) return got;
    const sizes = new Map<string, number>();
    for (const d of wanted) {
      const c = this.o.store.content(d);
      if (c !== undefined && isDigest(d)) sizes.set(d, c.size);
    }
    const queue = [...sizes.keys()];
    const worker = async (): Promise<void> => {
      for (let d = queue.shift(); d !== undefined; d = queue.shift()) {
        for (const peer of peers) {
          try {
            const body = await this.fetchFromPeer(peer, d);
            const rec = await this.o.cache.put(body, sizes.get(d)!, sourceDiffID, { expectedDigest: d });
            if (rec !== undefined) {
              got.add(d);
              this.o.onPeerFetch?.();
              break;
            }
          } catch (err) {
            this.o.logger.debug('peer-content-failed', { peer, digest: d, error: err });
          }
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(PEER_CONCURRENCY, queue.length) }, worker));
    if (got.size > 0) this.o.logger.info('contents-from-peers', { diffID: sourceDiffID, wanted: wanted.size, got: got.size });
    return got;
  }

  /** The raw bytes of `digest` from `peer` (decoded from the encoding it answered with). */
  private fetchFromPeer(peer: string, digest: string): Promise<Readable> {
    const u = new URL(`/v1/content/${encodeURIComponent(digest)}`, peer);
    const req = u.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<Readable>((resolve, reject) => {
      const r = req(u, { method: 'GET', headers: this.o.peerToken !== undefined ? { authorization: `Bearer ${this.o.peerToken}` } : {}, timeout: PEER_TIMEOUT_MS }, (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(new Error(`peer ${peer} answered ${res.statusCode ?? '?'} for ${digest}`));
          return;
        }
        const enc = String(res.headers[HTTP_HEADER_ENCODING] ?? 'identity');
        const dec = enc === 'br' ? createBrotliDecompress() : enc === 'gzip' ? createGunzip() : enc === 'deflate-raw' ? createInflateRaw() : undefined;
        if (enc !== 'identity' && dec === undefined) {
          res.resume();
          reject(new Error(`peer ${peer} sent ${digest} in unknown encoding ${enc}`));
          return;
        }
        if (dec === undefined) return resolve(res);
        res.on('error', (err) => dec.destroy(err));
        resolve(res.pipe(dec));
      });
      r.on('timeout', () => r.destroy(new Error(`peer ${peer} did not answer for ${digest} within ${PEER_TIMEOUT_MS} ms`)));
      r.on('error', reject);
      r.end();
    });
  }
}
