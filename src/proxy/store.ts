/**
 * The proxy's metadata store (better-sqlite3, one file under --data): which manifest a ref+platform
 * resolved to, raw manifests and configs, per-layer encoded TOCs, per-content sizes/encodings and last
 * access, and startup traces (as uploaded; merged on demand by priority-service.ts). Schema changes
 * are a numbered migration list applied on open (PRAGMA user_version); a database newer than this
 * build is refused (SL_ERR_PROXY_STORE).
 *
 * Not here: content bytes (content-cache.ts), TOC encoding (src/layers/toc-codec.ts), policy.
 */
import Database from 'better-sqlite3';
import { StarlightError } from '../errors.js';
import { yieldToLoop } from '../event-loop.js';
import type { Encoding } from '../protocol/constants.js';
import type { TraceUploadEntry, TraceUploadTrace } from '../protocol/traces.js';

/** File name of the database inside --data. */
export const STORE_FILE = 'meta.db';

/** Migration i brings user_version from i to i+1. Append only; never edit a released entry. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE images (ref TEXT NOT NULL, platform TEXT NOT NULL, manifest_digest TEXT NOT NULL,
     updated_at INTEGER NOT NULL, PRIMARY KEY (ref, platform));
   CREATE TABLE manifests (digest TEXT PRIMARY KEY, media_type TEXT NOT NULL, manifest BLOB NOT NULL,
     config BLOB NOT NULL, repository TEXT NOT NULL, diff_ids TEXT NOT NULL);
   CREATE TABLE layers (diff_id TEXT PRIMARY KEY, layer_digest TEXT NOT NULL, media_type TEXT NOT NULL,
     compressed_size INTEGER NOT NULL, uncompressed_size INTEGER NOT NULL, repository TEXT NOT NULL,
     toc BLOB NOT NULL, indexed_at INTEGER NOT NULL);
   CREATE TABLE contents (digest TEXT PRIMARY KEY, size INTEGER NOT NULL, encoded_size INTEGER NOT NULL,
     encoding TEXT NOT NULL, source_diff_id TEXT NOT NULL, cached INTEGER NOT NULL, last_access INTEGER NOT NULL);
   CREATE INDEX contents_lru ON contents (cached, last_access);
   CREATE TABLE priorities (image TEXT NOT NULL, key TEXT NOT NULL, rank INTEGER NOT NULL, PRIMARY KEY (image, key));`,
  // 2: startup traces (issue 6). `priorities` was never written; orders are merged from traces on demand.
  // grp '' = uploaded without a group. entries: JSON array of TraceUploadEntry.
  `DROP TABLE priorities;
   CREATE TABLE traces (id INTEGER PRIMARY KEY AUTOINCREMENT, manifest_digest TEXT NOT NULL, grp TEXT NOT NULL,
     repository TEXT NOT NULL, ref TEXT NOT NULL, platform TEXT NOT NULL, worker TEXT, started_at INTEGER NOT NULL,
     window_ms INTEGER NOT NULL, received_at INTEGER NOT NULL, entries TEXT NOT NULL);
   CREATE INDEX traces_image ON traces (manifest_digest, grp, id);
   CREATE INDEX traces_repository ON traces (repository, id);
   CREATE TABLE trace_layers (diff_id TEXT NOT NULL, manifest_digest TEXT NOT NULL, PRIMARY KEY (diff_id, manifest_digest));`,
  // 3: sha256 of each cached file's ENCODED bytes, checked when the cache reads it (a corrupt cache file
  // was served forever). Older cache files have none: they are marked evicted and re-fetched on demand.
  `ALTER TABLE contents ADD COLUMN encoded_digest TEXT;
   UPDATE contents SET cached = 0;`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** Content rows inserted per transaction by putLayerIndex (1000 took up to ~110 ms at load ~9). */
const PUT_BATCH_ROWS = 500;

/** Who sent an upload and what it is of (stored with each of its traces). */
export interface TraceMeta {
  manifestDigest: string;
  /** registry/repository of the traced image ('' if its ref could not be parsed). */
  repository: string;
  ref: string;
  platform: string;
  group?: string;
  worker?: string;
  /** ms since the epoch. */
  receivedAt: number;
}

export interface StoredTrace {
  /** Insertion order (higher = newer). */
  id: number;
  entries: TraceUploadEntry[];
  /** TraceMeta.worker of its upload (the proxy stores the authenticated uploader there). */
  worker?: string;
}

/** Newest traces kept per (image, group); older ones are deleted on upload. */
export const KEEP_TRACES_PER_IMAGE = 64;
/** Newest traces kept per (image, group, uploader): one uploader cannot flush the others out. */
export const KEEP_TRACES_PER_UPLOADER = 8;
/** Workload groups kept per image (newest first): group names cannot grow the store without bound. */
export const KEEP_GROUPS_PER_IMAGE = 32;

/** One stored trace with what it was uploaded for. */
export interface SharedTrace {
  id: number;
  meta: TraceMeta;
  /** Layers of the traced image (for related-image fallback). */
  layers: string[];
  trace: TraceUploadTrace;
}

/** Bounds applied by addTraces after storing an upload. */
export interface TraceKeep {
  /** Newest traces kept per (image, group). */
  perGroup: number;
  /** Newest traces kept per (image, group, worker); one uploader cannot flush the others out. */
  perWorker?: number;
  /** Groups kept per image (those with the newest traces); older groups' traces are deleted. */
  groups?: number;
}

export interface ImageRecord {
  manifestDigest: string;
  mediaType: string;
  manifest: Buffer;
  config: Buffer;
  /** Repository (host/name) the manifest was read from; its layers are fetched from there. */
  repository: string;
  diffIDs: string[];
}

export interface LayerRecord {
  diffID: string;
  layerDigest: string;
  mediaType: string;
  compressedSize: number;
  uncompressedSize: number;
  repository: string;
  /** encodeToc() bytes. */
  toc: Buffer;
}

export interface ContentRecord {
  digest: string;
  size: number;
  encodedSize: number;
  encoding: Encoding;
  /** A layer holding this content (re-indexed when the cached copy was evicted). */
  sourceDiffID: string;
  /** True while the encoded bytes are in the content cache. */
  cached: boolean;
  /** sha256 of the encoded bytes as cached (checked on read); absent on records written before schema 3. */
  encodedDigest?: string;
  /** ms since the epoch. */
  lastAccess: number;
}

interface ContentRow {
  digest: string;
  size: number;
  encoded_size: number;
  encoding: string;
  source_diff_id: string;
  cached: number;
  last_access: number;
  encoded_digest: string | null;
}

function toContent(r: ContentRow): ContentRecord {
  const rec: ContentRecord = {
    digest: r.digest,
    size: r.size,
    encodedSize: r.encoded_size,
    encoding: r.encoding as Encoding,
    sourceDiffID: r.source_diff_id,
    cached: r.cached === 1,
    lastAccess: r.last_access,
  };
  if (r.encoded_digest !== null) rec.encodedDigest = r.encoded_digest;
  return rec;
}

/** A row of the traces table (same columns in both shared-store backends). */
export interface TraceRow {
  id: number | string;
  manifest_digest: string;
  grp: string;
  repository: string;
  ref: string;
  platform: string;
  worker: string | null;
  started_at: number | string;
  window_ms: number | string;
  received_at: number | string;
  entries: string;
}

export function traceOfRow(r: TraceRow, layers: string[]): SharedTrace {
  const meta: TraceMeta = { manifestDigest: r.manifest_digest, repository: r.repository, ref: r.ref, platform: r.platform, receivedAt: Number(r.received_at) };
  if (r.grp !== '') meta.group = r.grp;
  if (r.worker !== null) meta.worker = r.worker;
  return {
    id: Number(r.id),
    meta,
    layers,
    trace: { startedAt: Number(r.started_at), windowMs: Number(r.window_ms), entries: JSON.parse(r.entries) as TraceUploadEntry[] },
  };
}

export class MetadataStore {
  private readonly db: Database.Database;
  /** Prepared statements by SQL text (preparing per call cost ~30 % of a warm delta: bench/proxy.ts). */
  private readonly stmts = new Map<string, Database.Statement>();

  private q(sql: string): Database.Statement {
    let st = this.stmts.get(sql);
    if (st === undefined) {
      st = this.db.prepare(sql);
      this.stmts.set(sql, st);
    }
    return st;
  }

  /** Opens (creating/migrating) the database at `file`. */
  constructor(file: string) {
    try {
      this.db = new Database(file);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = NORMAL');
    } catch (err) {
      throw new StarlightError('SL_ERR_PROXY_STORE', `cannot open proxy store ${file}`, { cause: err, details: { file } });
    }
    this.migrate(file);
  }

  private migrate(file: string): void {
    const v = this.db.pragma('user_version', { simple: true }) as number;
    if (v > MIGRATIONS.length) {
      this.db.close();
      throw new StarlightError('SL_ERR_PROXY_STORE', `proxy store ${file} has schema ${v}, this build knows ${MIGRATIONS.length}`, {
        details: { file, version: v },
      });
    }
    for (let i = v; i < MIGRATIONS.length; i++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[i]!);
        this.db.pragma(`user_version = ${i + 1}`);
      })();
    }
  }

  schemaVersion(): number {
    return this.db.pragma('user_version', { simple: true }) as number;
  }

  putImage(ref: string, platform: string, rec: ImageRecord): void {
    this.db.transaction(() => {
      this.q('INSERT OR REPLACE INTO manifests (digest, media_type, manifest, config, repository, diff_ids) VALUES (?,?,?,?,?,?)')
        .run(rec.manifestDigest, rec.mediaType, rec.manifest, rec.config, rec.repository, JSON.stringify(rec.diffIDs));
      this.q('INSERT OR REPLACE INTO images (ref, platform, manifest_digest, updated_at) VALUES (?,?,?,?)')
        .run(ref, platform, rec.manifestDigest, Date.now());
    })();
  }

  /** The manifest digest a ref+platform last resolved to. */
  imageDigest(ref: string, platform: string): string | undefined {
    const r = this.q('SELECT manifest_digest FROM images WHERE ref = ? AND platform = ?').get(ref, platform) as
      | { manifest_digest: string }
      | undefined;
    return r?.manifest_digest;
  }

  manifest(digest: string): ImageRecord | undefined {
    const r = this.q('SELECT * FROM manifests WHERE digest = ?').get(digest) as
      | { digest: string; media_type: string; manifest: Buffer; config: Buffer; repository: string; diff_ids: string }
      | undefined;
    if (r === undefined) return undefined;
    return {
      manifestDigest: r.digest,
      mediaType: r.media_type,
      manifest: r.manifest,
      config: r.config,
      repository: r.repository,
      diffIDs: JSON.parse(r.diff_ids) as string[],
    };
  }

  putLayer(l: LayerRecord): void {
    this.q(
        'INSERT OR REPLACE INTO layers (diff_id, layer_digest, media_type, compressed_size, uncompressed_size, repository, toc, indexed_at) VALUES (?,?,?,?,?,?,?,?)',
      )
      .run(l.diffID, l.layerDigest, l.mediaType, l.compressedSize, l.uncompressedSize, l.repository, l.toc, Date.now());
  }

  /**
   * Records an indexed layer and a row for each of its contents not known yet ('identity', cached = 0:
   * stored later by the background encoder, or re-fetched on demand). The rows go in transactions of
   * PUT_BATCH_ROWS with the event loop running between them (a layer of 20 000 files held it for
   * ~250 ms in one transaction, issue 14); the layer row goes in the last one, so a layer is never
   * recorded without its contents. If a batch fails, the rows inserted for this layer are removed
   * again (no contents of a failed layer).
   */
  async putLayerIndex(l: LayerRecord, contents: readonly { digest: string; size: number; sourceDiffID: string }[]): Promise<void> {
    const st = this.q(
      'INSERT OR IGNORE INTO contents (digest, size, encoded_size, encoding, source_diff_id, cached, last_access, encoded_digest) VALUES (?,?,?,?,?,0,?,NULL)',
    );
    const now = Date.now();
    try {
      for (let i = 0; ; i += PUT_BATCH_ROWS) {
        const last = i + PUT_BATCH_ROWS >= contents.length;
        this.db.transaction(() => {
          for (const c of contents.slice(i, i + PUT_BATCH_ROWS)) st.run(c.digest, c.size, c.size, 'identity', c.sourceDiffID, now);
          if (last) this.putLayer(l);
        })();
        if (last) return;
        await yieldToLoop();
      }
    } catch (err) {
      if (!this.hasLayer(l.diffID)) this.q('DELETE FROM contents WHERE source_diff_id = ? AND cached = 0').run(l.diffID);
      throw err;
    }
  }

  layer(diffID: string): LayerRecord | undefined {
    const r = this.q('SELECT * FROM layers WHERE diff_id = ?').get(diffID) as
      | { diff_id: string; layer_digest: string; media_type: string; compressed_size: number; uncompressed_size: number; repository: string; toc: Buffer }
      | undefined;
    if (r === undefined) return undefined;
    return {
      diffID: r.diff_id,
      layerDigest: r.layer_digest,
      mediaType: r.media_type,
      compressedSize: r.compressed_size,
      uncompressedSize: r.uncompressed_size,
      repository: r.repository,
      toc: r.toc,
    };
  }

  hasLayer(diffID: string): boolean {
    return this.q('SELECT 1 FROM layers WHERE diff_id = ?').get(diffID) !== undefined;
  }

  putContent(c: ContentRecord): void {
    this.q(
        'INSERT OR REPLACE INTO contents (digest, size, encoded_size, encoding, source_diff_id, cached, last_access, encoded_digest) VALUES (?,?,?,?,?,?,?,?)',
      )
      .run(c.digest, c.size, c.encodedSize, c.encoding, c.sourceDiffID, c.cached ? 1 : 0, c.lastAccess, c.encodedDigest ?? null);
  }

  content(digest: string): ContentRecord | undefined {
    const r = this.q('SELECT * FROM contents WHERE digest = ?').get(digest) as ContentRow | undefined;
    return r === undefined ? undefined : toContent(r);
  }

  /** content() of each of `digests` (one query; known ones only). Callers batch (a few hundred). */
  contentsOf(digests: readonly string[]): Map<string, ContentRecord> {
    const rows = this.q('SELECT * FROM contents WHERE digest IN (SELECT value FROM json_each(?))').all(JSON.stringify(digests)) as ContentRow[];
    return new Map(rows.map((r) => [r.digest, toContent(r)]));
  }

  setCached(digest: string, cached: boolean): void {
    this.q('UPDATE contents SET cached = ? WHERE digest = ?').run(cached ? 1 : 0, digest);
  }

  /** Persists last-access times (batched by the cache; exact order matters only across restarts). */
  touchMany(entries: Iterable<[string, number]>): void {
    const st = this.q('UPDATE contents SET last_access = ? WHERE digest = ?');
    this.db.transaction(() => {
      for (const [d, t] of entries) st.run(t, d);
    })();
  }

  /** Cached contents, least recently used first (to rebuild the in-memory LRU at start). */
  cachedContents(): ContentRecord[] {
    return (this.q('SELECT * FROM contents WHERE cached = 1 ORDER BY last_access ASC, digest ASC').all() as ContentRow[]).map(toContent);
  }

  /**
   * Stores the traces of one upload (all of image `meta.manifestDigest`) and records which layers that
   * image is made of (for related-image fallback). Keeps only the newest `keep` traces per
   * (image, group) (a number: TraceKeep.perGroup), and the other TraceKeep bounds. Returns the
   * number of traces stored.
   */
  addTraces(meta: TraceMeta, traces: readonly TraceUploadTrace[], layers: readonly string[], keepOpt: number | TraceKeep): number {
    const keepAll: TraceKeep = typeof keepOpt === 'number' ? { perGroup: keepOpt } : keepOpt;
    const keep = keepAll.perGroup;
    const grp = meta.group ?? '';
    this.db.transaction(() => {
      const ins = this.q(
        'INSERT INTO traces (manifest_digest, grp, repository, ref, platform, worker, started_at, window_ms, received_at, entries) VALUES (?,?,?,?,?,?,?,?,?,?)',
      );
      for (const t of traces) {
        ins.run(meta.manifestDigest, grp, meta.repository, meta.ref, meta.platform, meta.worker ?? null, t.startedAt, t.windowMs, meta.receivedAt, JSON.stringify(t.entries));
      }
      const lay = this.q('INSERT OR IGNORE INTO trace_layers (diff_id, manifest_digest) VALUES (?,?)');
      for (const l of layers) lay.run(l, meta.manifestDigest);
      this.q('DELETE FROM traces WHERE manifest_digest = ? AND grp = ? AND id NOT IN (SELECT id FROM traces WHERE manifest_digest = ? AND grp = ? ORDER BY id DESC LIMIT ?)')
        .run(meta.manifestDigest, grp, meta.manifestDigest, grp, keep);
      if (keepAll.perWorker !== undefined && meta.worker !== undefined) {
        this.q(
          'DELETE FROM traces WHERE manifest_digest = ? AND grp = ? AND worker = ? AND id NOT IN (SELECT id FROM traces WHERE manifest_digest = ? AND grp = ? AND worker = ? ORDER BY id DESC LIMIT ?)',
        ).run(meta.manifestDigest, grp, meta.worker, meta.manifestDigest, grp, meta.worker, keepAll.perWorker);
      }
      if (keepAll.groups !== undefined) {
        this.q('DELETE FROM traces WHERE manifest_digest = ? AND grp NOT IN (SELECT grp FROM traces WHERE manifest_digest = ? GROUP BY grp ORDER BY MAX(id) DESC LIMIT ?)')
          .run(meta.manifestDigest, meta.manifestDigest, keepAll.groups);
      }
    })();
    return traces.length;
  }

  /**
   * The newest `limit` traces (newest first) of the images `manifests`: of group `group` only, or of
   * every group when `group` is undefined.
   */
  traces(manifests: readonly string[], group: string | undefined, limit: number): StoredTrace[] {
    const rows: { id: number; entries: string; worker: string | null }[] = [];
    for (const m of manifests) {
      const r =
        group === undefined
          ? this.q('SELECT id, entries, worker FROM traces WHERE manifest_digest = ? ORDER BY id DESC LIMIT ?').all(m, limit)
          : this.q('SELECT id, entries, worker FROM traces WHERE manifest_digest = ? AND grp = ? ORDER BY id DESC LIMIT ?').all(m, group, limit);
      rows.push(...(r as { id: number; entries: string; worker: string | null }[]));
    }
    rows.sort((a, b) => b.id - a.id);
    return rows.slice(0, limit).map((r) => ({ id: r.id, entries: JSON.parse(r.entries) as TraceUploadEntry[], ...(r.worker !== null ? { worker: r.worker } : {}) }));
  }

  /** Traces with id > `afterID`, oldest first, at most `limit` (shared-store.ts contract). */
  tracesSince(afterID: number, limit: number): SharedTrace[] {
    const rows = this.q('SELECT * FROM traces WHERE id > ? ORDER BY id ASC LIMIT ?').all(afterID, limit) as TraceRow[];
    const layers = this.q('SELECT diff_id FROM trace_layers WHERE manifest_digest = ? ORDER BY diff_id');
    return rows.map((r) => traceOfRow(r, (layers.all(r.manifest_digest) as { diff_id: string }[]).map((l) => l.diff_id)));
  }

  /** diffIDs of every indexed layer (to publish a SQLite store into a shared one: replica-sync.ts). */
  layerIDs(): string[] {
    return (this.q('SELECT diff_id FROM layers ORDER BY diff_id').all() as { diff_id: string }[]).map((r) => r.diff_id);
  }

  /** Every ref+platform → manifest recorded. */
  imageRefs(): { ref: string; platform: string; manifestDigest: string }[] {
    return (this.q('SELECT ref, platform, manifest_digest FROM images ORDER BY ref, platform').all() as { ref: string; platform: string; manifest_digest: string }[]).map(
      (r) => ({ ref: r.ref, platform: r.platform, manifestDigest: r.manifest_digest }),
    );
  }

  /** Drops every trace (the local copy of a shared store's traces is rebuilt from it). */
  clearTraces(): void {
    this.q('DELETE FROM traces').run();
  }

  /** Every image with at least one stored trace; sorted. */
  tracedImages(): string[] {
    return (this.q('SELECT DISTINCT manifest_digest FROM traces ORDER BY manifest_digest').all() as { manifest_digest: string }[]).map((r) => r.manifest_digest);
  }

  /** Traced images (other than `self`) of repository `repository` or sharing a layer of `diffIDs`; sorted. */
  relatedTracedImages(self: string, repository: string, diffIDs: readonly string[]): string[] {
    const out = new Set<string>();
    for (const r of this.q('SELECT DISTINCT manifest_digest FROM traces WHERE repository = ?').all(repository) as { manifest_digest: string }[]) {
      out.add(r.manifest_digest);
    }
    const st = this.q('SELECT manifest_digest FROM trace_layers WHERE diff_id = ?');
    for (const d of diffIDs) for (const r of st.all(d) as { manifest_digest: string }[]) out.add(r.manifest_digest);
    out.delete(self);
    return [...out].sort();
  }

  /**
   * Garbage collection of what no image references (issue 14), in one transaction:
   * - manifests no `images` row points at;
   * - layers no remaining manifest lists, indexed more than `minAgeMs` before `now` (a worker may
   *   still read a superseded image lazily for a while);
   * - content rows whose source layer was deleted: re-pointed to `newSource(digest, keptLayers)` (a
   *   remaining layer holding the same content; called synchronously, at most once per such row) or,
   *   if it returns undefined, deleted;
   * - traces of repositories no `images` row belongs to, and trace_layers rows of images without traces.
   * Returns counts, the digests of deleted content rows that were cached (the caller removes their
   * files; the content cache must not be open yet, or must forget them: ContentCache.forget) and the
   * diffIDs of the deleted layers.
   */
  collectUnreferenced(
    now: number,
    minAgeMs: number,
    newSource: (digest: string, keptLayers: readonly string[]) => string | undefined,
  ): { manifests: number; layers: number; contents: number; traces: number; removedCached: string[]; removedLayers: string[] } {
    return this.db.transaction(() => {
      const manifests = this.q('DELETE FROM manifests WHERE digest NOT IN (SELECT manifest_digest FROM images)').run().changes;
      const listed = new Set<string>();
      for (const r of this.q('SELECT diff_ids FROM manifests').all() as { diff_ids: string }[]) for (const d of JSON.parse(r.diff_ids) as string[]) listed.add(d);
      const all = this.q('SELECT diff_id, indexed_at FROM layers').all() as { diff_id: string; indexed_at: number }[];
      const doomed = new Set(all.filter((l) => !listed.has(l.diff_id) && l.indexed_at <= now - minAgeMs).map((l) => l.diff_id));
      const kept = all.filter((l) => !doomed.has(l.diff_id)).map((l) => l.diff_id);
      const delLayer = this.q('DELETE FROM layers WHERE diff_id = ?');
      for (const d of doomed) delLayer.run(d);
      let contents = 0;
      const removedCached: string[] = [];
      const repoint = this.q('UPDATE contents SET source_diff_id = ? WHERE digest = ?');
      const delContent = this.q('DELETE FROM contents WHERE digest = ?');
      // Only the rows of deleted layers come into memory (a periodic run on a large store found none).
      const orphans =
        doomed.size === 0
          ? []
          : (this.q('SELECT digest, source_diff_id, cached FROM contents WHERE source_diff_id IN (SELECT value FROM json_each(?))').all(JSON.stringify([...doomed])) as {
              digest: string;
              source_diff_id: string;
              cached: number;
            }[]);
      for (const c of orphans) {
        const to = newSource(c.digest, kept);
        if (to !== undefined) repoint.run(to, c.digest);
        else {
          delContent.run(c.digest);
          contents++;
          if (c.cached === 1) removedCached.push(c.digest);
        }
      }
      const traces = this.q('DELETE FROM traces WHERE repository NOT IN (SELECT repository FROM manifests WHERE digest IN (SELECT manifest_digest FROM images))').run().changes;
      this.q('DELETE FROM trace_layers WHERE manifest_digest NOT IN (SELECT manifest_digest FROM traces)').run();
      return { manifests, layers: doomed.size, contents, traces, removedCached, removedLayers: [...doomed] };
    })();
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
