/**
 * The PostgreSQL backend of the shared store (shared-store.ts has the contract): `--db postgres://…`,
 * one database shared by every proxy replica. Schema changes are a numbered migration list recorded
 * in `starlight_schema` and applied on open under an advisory lock (replicas starting together migrate
 * once); a database newer than this build is refused (SL_ERR_PROXY_STORE).
 *
 * Index-once: withIndexLock takes a session-level advisory lock on a dedicated connection, polled
 * with pg_try_advisory_lock (a waiter never blocks a pool connection inside the server); PostgreSQL
 * drops the lock with the connection, so a replica killed while indexing frees it for the others.
 *
 * Errors: a database that cannot be reached (refused, socket gone, shut down, connection lost)
 * surfaces as SL_ERR_PROXY_DB_UNAVAILABLE naming the database; the pool reconnects on the next call.
 */
import pg from 'pg';
import { StarlightError, withContext } from '../errors.js';
import type { TraceUploadTrace } from '../protocol/traces.js';
import type { IndexedContent, SharedStore, SharedTrace } from './shared-store.js';
import { type ImageRecord, type LayerRecord, type TraceMeta, type TraceRow, traceOfRow } from './store.js';

/** Migration i brings the schema from i to i+1. Append only; never edit a released entry. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE images (ref TEXT NOT NULL, platform TEXT NOT NULL, manifest_digest TEXT NOT NULL,
     updated_at BIGINT NOT NULL, PRIMARY KEY (ref, platform));
   CREATE TABLE manifests (digest TEXT PRIMARY KEY, media_type TEXT NOT NULL, manifest BYTEA NOT NULL,
     config BYTEA NOT NULL, repository TEXT NOT NULL, diff_ids TEXT NOT NULL);
   CREATE TABLE layers (diff_id TEXT PRIMARY KEY, layer_digest TEXT NOT NULL, media_type TEXT NOT NULL,
     compressed_size BIGINT NOT NULL, uncompressed_size BIGINT NOT NULL, repository TEXT NOT NULL,
     toc BYTEA NOT NULL, indexed_at BIGINT NOT NULL);
   CREATE TABLE contents (digest TEXT PRIMARY KEY, size BIGINT NOT NULL, source_diff_id TEXT NOT NULL);
   CREATE TABLE traces (id BIGSERIAL PRIMARY KEY, manifest_digest TEXT NOT NULL, grp TEXT NOT NULL,
     repository TEXT NOT NULL, ref TEXT NOT NULL, platform TEXT NOT NULL, worker TEXT, started_at BIGINT NOT NULL,
     window_ms BIGINT NOT NULL, received_at BIGINT NOT NULL, entries TEXT NOT NULL);
   CREATE INDEX traces_image ON traces (manifest_digest, grp, id);
   CREATE TABLE trace_layers (diff_id TEXT NOT NULL, manifest_digest TEXT NOT NULL, PRIMARY KEY (diff_id, manifest_digest));
   CREATE TABLE replicas (url TEXT PRIMARY KEY, seen_at BIGINT NOT NULL);`,
];

export const PG_SCHEMA_VERSION = MIGRATIONS.length;

/** Advisory lock key (pg_advisory_lock) serializing migrations. */
const MIGRATE_LOCK = 0x5354_4c47; // 'STLG'
/** Poll interval of a replica waiting for another's index lock (ms). */
const LOCK_POLL_MS = 100;
/** Connection attempt bound (ms): a database that does not answer fails requests fast (503). */
const CONNECT_TIMEOUT_MS = 5000;
/** Pool size: layer passes holding index locks plus concurrent request queries. */
const POOL_MAX = 20;

/** SQLSTATE classes meaning "the server is not there" (08 connection exception, 57 operator intervention). */
const UNAVAILABLE_SQLSTATE = /^(08|57)/;

/** postgres://user@host:port/db without the password (for messages and logs). */
function describeDb(url: string): string {
  try {
    const u = new URL(url);
    const host = decodeURIComponent(u.hostname);
    return `postgres://${host}${u.port !== '' ? `:${u.port}` : ''}${u.pathname}`;
  } catch {
    return 'postgres (unparsable --db URL)';
  }
}

export class PgSharedStore implements SharedStore {
  readonly kind = 'postgres';
  readonly where: string;
  private readonly pool: pg.Pool;

  private constructor(url: string) {
    this.where = describeDb(url);
    this.pool = new pg.Pool({ connectionString: url, max: POOL_MAX, connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
    // An idle client whose server went away emits here; without a listener that would crash the proxy.
    this.pool.on('error', () => undefined);
  }

  /** Connects and migrates. Fails with SL_ERR_PROXY_DB_UNAVAILABLE if the database does not answer. */
  static async open(url: string): Promise<PgSharedStore> {
    const s = new PgSharedStore(url);
    try {
      await s.migrate();
    } catch (err) {
      await s.pool.end().catch(() => undefined);
      throw err;
    }
    return s;
  }

  /** `err` as the typed error of this boundary. */
  private fail(err: unknown, what: string): StarlightError {
    if (err instanceof StarlightError) return err;
    const code = (err as { code?: unknown }).code;
    const sqlError = typeof (err as { severity?: unknown }).severity === 'string';
    if (!sqlError || (typeof code === 'string' && UNAVAILABLE_SQLSTATE.test(code))) {
      return new StarlightError('SL_ERR_PROXY_DB_UNAVAILABLE', `proxy database ${this.where} is unavailable (${what}): ${(err as Error).message ?? String(err)}`, {
        cause: err,
        details: { db: this.where },
      });
    }
    return withContext(err, `proxy database ${this.where}: ${what}`, { db: this.where });
  }

  private async query<R extends pg.QueryResultRow>(what: string, sql: string, params: unknown[] = []): Promise<R[]> {
    try {
      return (await this.pool.query<R>(sql, params)).rows;
    } catch (err) {
      throw this.fail(err, what);
    }
  }

  private async tx<T>(what: string, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    let c: pg.PoolClient;
    try {
      c = await this.pool.connect();
    } catch (err) {
      throw this.fail(err, what);
    }
    let broken: unknown;
    try {
      await c.query('BEGIN');
      const out = await fn(c);
      await c.query('COMMIT');
      return out;
    } catch (err) {
      broken = err;
      await c.query('ROLLBACK').catch(() => undefined);
      throw this.fail(err, what);
    } finally {
      c.release(broken !== undefined && !(typeof (broken as { severity?: unknown }).severity === 'string') ? (broken as Error) : undefined);
    }
  }

  private async migrate(): Promise<void> {
    await this.tx('migrate', async (c) => {
      await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATE_LOCK]);
      await c.query('CREATE TABLE IF NOT EXISTS starlight_schema (version INTEGER NOT NULL)');
      const r = await c.query<{ version: number }>('SELECT version FROM starlight_schema');
      if (r.rows.length === 0) await c.query('INSERT INTO starlight_schema (version) VALUES (0)');
      const v = r.rows[0]?.version ?? 0;
      if (v > MIGRATIONS.length) {
        throw new StarlightError('SL_ERR_PROXY_STORE', `proxy database ${this.where} has schema ${v}, this build knows ${MIGRATIONS.length}`, {
          details: { db: this.where, version: v },
        });
      }
      for (let i = v; i < MIGRATIONS.length; i++) {
        await c.query(MIGRATIONS[i]!);
        await c.query('UPDATE starlight_schema SET version = $1', [i + 1]);
      }
    });
  }

  async schemaVersion(): Promise<number> {
    const r = await this.query<{ version: number }>('schema version', 'SELECT version FROM starlight_schema');
    return r[0]?.version ?? 0;
  }

  async putImage(ref: string, platform: string, rec: ImageRecord): Promise<void> {
    await this.tx(`record image ${ref}`, async (c) => {
      await c.query(
        'INSERT INTO manifests (digest, media_type, manifest, config, repository, diff_ids) VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (digest) DO NOTHING',
        [rec.manifestDigest, rec.mediaType, rec.manifest, rec.config, rec.repository, JSON.stringify(rec.diffIDs)],
      );
      await c.query(
        'INSERT INTO images (ref, platform, manifest_digest, updated_at) VALUES ($1,$2,$3,$4) ON CONFLICT (ref, platform) DO UPDATE SET manifest_digest = EXCLUDED.manifest_digest, updated_at = EXCLUDED.updated_at',
        [ref, platform, rec.manifestDigest, Date.now()],
      );
    });
  }

  async imageDigest(ref: string, platform: string): Promise<string | undefined> {
    const r = await this.query<{ manifest_digest: string }>(`look up ${ref}`, 'SELECT manifest_digest FROM images WHERE ref = $1 AND platform = $2', [ref, platform]);
    return r[0]?.manifest_digest;
  }

  async manifest(digest: string): Promise<ImageRecord | undefined> {
    const r = await this.query<{ digest: string; media_type: string; manifest: Buffer; config: Buffer; repository: string; diff_ids: string }>(
      `read manifest ${digest}`,
      'SELECT * FROM manifests WHERE digest = $1',
      [digest],
    );
    const m = r[0];
    if (m === undefined) return undefined;
    return { manifestDigest: m.digest, mediaType: m.media_type, manifest: m.manifest, config: m.config, repository: m.repository, diffIDs: JSON.parse(m.diff_ids) as string[] };
  }

  async putLayerIndex(l: LayerRecord, contents: readonly IndexedContent[]): Promise<void> {
    await this.tx(`record layer ${l.diffID}`, async (c) => {
      // One statement for all contents (thousands per layer): unnest of parallel arrays.
      await c.query(
        'INSERT INTO contents (digest, size, source_diff_id) SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) ON CONFLICT (digest) DO NOTHING',
        [contents.map((x) => x.digest), contents.map((x) => x.size), contents.map((x) => x.sourceDiffID)],
      );
      await c.query(
        'INSERT INTO layers (diff_id, layer_digest, media_type, compressed_size, uncompressed_size, repository, toc, indexed_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT (diff_id) DO NOTHING',
        [l.diffID, l.layerDigest, l.mediaType, l.compressedSize, l.uncompressedSize, l.repository, l.toc, Date.now()],
      );
    });
  }

  async layer(diffID: string): Promise<LayerRecord | undefined> {
    const r = await this.query<{
      diff_id: string;
      layer_digest: string;
      media_type: string;
      compressed_size: string;
      uncompressed_size: string;
      repository: string;
      toc: Buffer;
    }>(`read layer ${diffID}`, 'SELECT * FROM layers WHERE diff_id = $1', [diffID]);
    const l = r[0];
    if (l === undefined) return undefined;
    return {
      diffID: l.diff_id,
      layerDigest: l.layer_digest,
      mediaType: l.media_type,
      compressedSize: Number(l.compressed_size),
      uncompressedSize: Number(l.uncompressed_size),
      repository: l.repository,
      toc: l.toc,
    };
  }

  async layersKnown(diffIDs: readonly string[]): Promise<string[]> {
    const r = await this.query<{ diff_id: string }>('list layers', 'SELECT diff_id FROM layers WHERE diff_id = ANY($1::text[])', [[...diffIDs]]);
    return r.map((x) => x.diff_id);
  }

  async tracedImages(): Promise<string[]> {
    const r = await this.query<{ manifest_digest: string }>('list traced images', 'SELECT DISTINCT manifest_digest FROM traces ORDER BY manifest_digest');
    return r.map((x) => x.manifest_digest);
  }

  async contents(digests: readonly string[]): Promise<IndexedContent[]> {
    const r = await this.query<{ digest: string; size: string; source_diff_id: string }>(
      'read content index',
      'SELECT digest, size, source_diff_id FROM contents WHERE digest = ANY($1::text[])',
      [[...digests]],
    );
    return r.map((c) => ({ digest: c.digest, size: Number(c.size), sourceDiffID: c.source_diff_id }));
  }

  async addTraces(meta: TraceMeta, traces: readonly TraceUploadTrace[], layers: readonly string[], keep: number): Promise<number> {
    const grp = meta.group ?? '';
    await this.tx(`store traces of ${meta.manifestDigest}`, async (c) => {
      for (const t of traces) {
        await c.query(
          'INSERT INTO traces (manifest_digest, grp, repository, ref, platform, worker, started_at, window_ms, received_at, entries) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)',
          [meta.manifestDigest, grp, meta.repository, meta.ref, meta.platform, meta.worker ?? null, t.startedAt, t.windowMs, meta.receivedAt, JSON.stringify(t.entries)],
        );
      }
      for (const l of layers) {
        await c.query('INSERT INTO trace_layers (diff_id, manifest_digest) VALUES ($1,$2) ON CONFLICT DO NOTHING', [l, meta.manifestDigest]);
      }
      await c.query(
        'DELETE FROM traces WHERE manifest_digest = $1 AND grp = $2 AND id NOT IN (SELECT id FROM traces WHERE manifest_digest = $1 AND grp = $2 ORDER BY id DESC LIMIT $3)',
        [meta.manifestDigest, grp, keep],
      );
    });
    return traces.length;
  }

  async tracesSince(afterID: number, limit: number): Promise<SharedTrace[]> {
    const rows = await this.query<TraceRow & { layers: string[] | null }>(
      'read new traces',
      `SELECT t.*, (SELECT array_agg(diff_id ORDER BY diff_id) FROM trace_layers l WHERE l.manifest_digest = t.manifest_digest) AS layers
         FROM traces t WHERE t.id > $1 ORDER BY t.id ASC LIMIT $2`,
      [afterID, limit],
    );
    return rows.map((r) => traceOfRow(r, r.layers ?? []));
  }

  async withIndexLock<T>(key: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    let c: pg.PoolClient;
    try {
      c = await this.pool.connect();
    } catch (err) {
      throw this.fail(err, `lock ${key}`);
    }
    let held = false;
    try {
      for (;;) {
        const r = await c.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS ok', [key]);
        if (r.rows[0]!.ok) break;
        if (signal?.aborted) throw new StarlightError('SL_ERR_CANCELED', `waiting for another replica indexing ${key} stopped`, { details: { key } });
        await new Promise((res) => setTimeout(res, LOCK_POLL_MS));
      }
      held = true;
    } catch (err) {
      c.release(err as Error);
      throw this.fail(err, `lock ${key}`);
    }
    try {
      return await fn();
    } finally {
      if (held) {
        // Unlock failing means the connection is gone, and the lock with it: drop the client.
        await c.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', [key]).then(
          () => c.release(),
          (err: Error) => c.release(err),
        );
      }
    }
  }

  async announceReplica(url: string): Promise<void> {
    await this.query('announce replica', 'INSERT INTO replicas (url, seen_at) VALUES ($1, $2) ON CONFLICT (url) DO UPDATE SET seen_at = EXCLUDED.seen_at', [url, Date.now()]);
  }

  async replicas(maxAgeMs: number): Promise<string[]> {
    const r = await this.query<{ url: string }>('list replicas', 'SELECT url FROM replicas WHERE seen_at >= $1 ORDER BY seen_at DESC, url', [Date.now() - maxAgeMs]);
    return r.map((x) => x.url);
  }

  async close(): Promise<void> {
    await this.pool.end().catch(() => undefined);
  }
}
