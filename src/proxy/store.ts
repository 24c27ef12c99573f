/**
 * The proxy's metadata store (better-sqlite3, one file under --data): which manifest a ref+platform
 * resolved to, raw manifests and configs, per-layer encoded TOCs, per-content sizes/encodings and last
 * access, and (later) startup priorities. Schema changes are a numbered migration list applied on open
 * (PRAGMA user_version); a database newer than this build is refused (SL_ERR_PROXY_STORE).
 *
 * Not here: content bytes (content-cache.ts), TOC encoding (src/image/toc-codec.ts), policy.
 */
import Database from 'better-sqlite3';
import { StarlightError } from '../errors.js';
import type { Encoding } from '../protocol/constants.js';

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
];

export const SCHEMA_VERSION = MIGRATIONS.length;

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
}

function toContent(r: ContentRow): ContentRecord {
  return {
    digest: r.digest,
    size: r.size,
    encodedSize: r.encoded_size,
    encoding: r.encoding as Encoding,
    sourceDiffID: r.source_diff_id,
    cached: r.cached === 1,
    lastAccess: r.last_access,
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
        'INSERT OR REPLACE INTO contents (digest, size, encoded_size, encoding, source_diff_id, cached, last_access) VALUES (?,?,?,?,?,?,?)',
      )
      .run(c.digest, c.size, c.encodedSize, c.encoding, c.sourceDiffID, c.cached ? 1 : 0, c.lastAccess);
  }

  content(digest: string): ContentRecord | undefined {
    const r = this.q('SELECT * FROM contents WHERE digest = ?').get(digest) as ContentRow | undefined;
    return r === undefined ? undefined : toContent(r);
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

  /** Startup priority of an image: digest/path → rank. Empty until traces are aggregated. */
  priorities(image: string): Map<string, number> {
    const rows = this.q('SELECT key, rank FROM priorities WHERE image = ?').all(image) as { key: string; rank: number }[];
    return new Map(rows.map((r) => [r.key, r.rank]));
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
