/**
 * Snapshot metadata in SQLite (better-sqlite3): one row per snapshot with its numeric id (which names
 * its directory), kind, key, parent, labels, timestamps and committed usage. Mirrors containerd's
 * snapshots/storage (bolt.go) semantics and error kinds, so the snapshotter only adds directories.
 *
 * Every method is synchronous and runs inside the caller's transaction when there is one
 * (`transaction(fn)`), so a directory rename done inside `fn` commits or rolls back with the rows
 * (containerd storage/metastore.go WithTransaction).
 *
 * Not here: directories, mounts, remote layers (snapshotter.ts).
 */
import Database from 'better-sqlite3';
import { StarlightError } from '../../errors.js';
import { nowNanos } from './clock.js';
import type { EpochNanos, Info, SnapshotKind, Usage } from './types.js';

/** Bump with a migration when the schema changes; stored in PRAGMA user_version. */
const SCHEMA_VERSION = 2;

/** Migrations: MIGRATIONS[v] takes a version-v database to v+1 (run in order, in one transaction). */
const MIGRATIONS: Record<number, string> = {
  // v1 stored created/updated in ms; v2 in ns (containerd's precision, issue 17).
  1: 'UPDATE snapshots SET created = created * 1000000, updated = updated * 1000000',
};

/** How long a writer waits for the database lock held by another connection, ms. */
const BUSY_TIMEOUT_MS = 5000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS snapshots (
  id        INTEGER PRIMARY KEY AUTOINCREMENT,
  key       TEXT    NOT NULL UNIQUE,
  kind      TEXT    NOT NULL CHECK (kind IN ('view', 'active', 'committed')),
  parent_id INTEGER REFERENCES snapshots(id),
  labels    TEXT    NOT NULL DEFAULT '{}',
  created   INTEGER NOT NULL, -- ns since the epoch (int64 holds ns until 2262)
  updated   INTEGER NOT NULL,
  size      INTEGER NOT NULL DEFAULT 0,
  inodes    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);
`;

/** A stored snapshot. Times are ns since the epoch. */
export interface SnapshotRow {
  id: number;
  key: string;
  kind: SnapshotKind;
  parentId: number | null;
  /** The parent's key ('' if none). */
  parent: string;
  labels: Record<string, string>;
  created: EpochNanos;
  updated: EpochNanos;
  /** Usage recorded at commit (0 for active/view). */
  size: number;
  inodes: number;
}

interface RawRow {
  id: number;
  key: string;
  kind: SnapshotKind;
  parent_id: number | null;
  parent: string | null;
  labels: string;
  /** Decimal text: an ns count exceeds 2^53, so it is read as text and parsed as a bigint. */
  created: string;
  updated: string;
  size: number;
  inodes: number;
}

const SELECT = `SELECT s.id, s.key, s.kind, s.parent_id, p.key AS parent, s.labels,
  CAST(s.created AS TEXT) AS created, CAST(s.updated AS TEXT) AS updated, s.size, s.inodes
  FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id`;

function toRow(r: RawRow): SnapshotRow {
  return {
    id: r.id,
    key: r.key,
    kind: r.kind,
    parentId: r.parent_id,
    parent: r.parent ?? '',
    labels: JSON.parse(r.labels) as Record<string, string>,
    created: BigInt(r.created),
    updated: BigInt(r.updated),
    size: r.size,
    inodes: r.inodes,
  };
}

export function rowToInfo(r: SnapshotRow): Info {
  return {
    name: r.key,
    parent: r.parent,
    kind: r.kind,
    created: r.created,
    updated: r.updated,
    labels: { ...r.labels },
  };
}

function notFound(what: string, key: string): StarlightError {
  return new StarlightError('SL_ERR_SNAPSHOT_NOT_FOUND', `${what} ${JSON.stringify(key)} does not exist`, {
    details: { key },
  });
}

export class MetaStore {
  private readonly db: Database.Database;

  constructor(path: string) {
    this.db = new Database(path, { timeout: BUSY_TIMEOUT_MS });
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('foreign_keys = ON');
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) {
      this.db.close();
      throw new StarlightError(
        'SL_ERR_SNAPSHOT_PRECONDITION',
        `snapshot metadata ${path} has schema version ${version}, newer than this Starlight (${SCHEMA_VERSION}); upgrade Starlight or use another --root`,
        { details: { path, version } },
      );
    }
    this.db.transaction(() => {
      if (version === 0) this.db.exec(SCHEMA);
      for (let v = version === 0 ? SCHEMA_VERSION : version; v < SCHEMA_VERSION; v++) this.db.exec(MIGRATIONS[v]!);
      this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
    }).immediate();
  }

  /** Runs fn in one immediate (write-locking) transaction; a throw rolls everything back. Nests. */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  get(key: string): SnapshotRow | undefined {
    const r = this.db.prepare(`${SELECT} WHERE s.key = ?`).get(key) as RawRow | undefined;
    return r && toRow(r);
  }

  getById(id: number): SnapshotRow | undefined {
    const r = this.db.prepare(`${SELECT} WHERE s.id = ?`).get(id) as RawRow | undefined;
    return r && toRow(r);
  }

  /** Like get, but not-found if absent. */
  mustGet(key: string): SnapshotRow {
    const r = this.get(key);
    if (!r) throw notFound('snapshot', key);
    return r;
  }

  /** The ancestors of `row`, nearest first. */
  parents(row: SnapshotRow): SnapshotRow[] {
    const out: SnapshotRow[] = [];
    let pid = row.parentId;
    while (pid !== null) {
      const p = this.getById(pid);
      if (!p) throw new StarlightError('SL_ERR_SNAPSHOT_NOT_FOUND', `parent id ${pid} of ${JSON.stringify(row.key)} is missing from the metadata`, { details: { key: row.key, parentId: pid } });
      out.push(p);
      pid = p.parentId;
    }
    return out;
  }

  all(): SnapshotRow[] {
    return (this.db.prepare(SELECT).all() as RawRow[]).map(toRow);
  }

  childCount(id: number): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM snapshots WHERE parent_id = ?').get(id) as { n: number }).n;
  }

  /**
   * Inserts a snapshot of `kind` on top of committed `parent` ('' = none). containerd's
   * CreateSnapshot allows only active and view; we also allow committed for remote layers.
   */
  create(kind: SnapshotKind, key: string, parent: string, labels: Record<string, string>, now = nowNanos()): SnapshotRow {
    if (key === '') throw new StarlightError('SL_ERR_SNAPSHOT_INVALID', 'snapshot key must not be empty');
    let parentId: number | null = null;
    if (parent !== '') {
      const p = this.get(parent);
      if (!p) throw notFound('parent', parent);
      if (p.kind !== 'committed') {
        throw new StarlightError('SL_ERR_SNAPSHOT_INVALID', `parent ${JSON.stringify(parent)} is not a committed snapshot (it is ${p.kind})`, { details: { key, parent } });
      }
      parentId = p.id;
    }
    if (this.get(key)) {
      throw new StarlightError('SL_ERR_SNAPSHOT_EXISTS', `snapshot ${JSON.stringify(key)} already exists`, { details: { key } });
    }
    const res = this.db
      .prepare('INSERT INTO snapshots (key, kind, parent_id, labels, created, updated) VALUES (?, ?, ?, ?, ?, ?)')
      .run(key, kind, parentId, JSON.stringify(labels), now, now);
    return this.getById(Number(res.lastInsertRowid))!;
  }

  /** containerd CommitActive: active `key` becomes committed `name` (same id); labels replaced. */
  commit(key: string, name: string, usage: Usage, labels: Record<string, string>, now = nowNanos()): SnapshotRow {
    if (name === '') throw new StarlightError('SL_ERR_SNAPSHOT_INVALID', 'committed snapshot name must not be empty');
    if (this.get(name)) {
      throw new StarlightError('SL_ERR_SNAPSHOT_EXISTS', `committed snapshot ${JSON.stringify(name)} already exists`, { details: { name, key } });
    }
    const row = this.get(key);
    if (!row) throw notFound('active snapshot', key);
    if (row.kind !== 'active') {
      throw new StarlightError('SL_ERR_SNAPSHOT_PRECONDITION', `snapshot ${JSON.stringify(key)} is not active (it is ${row.kind}); only active snapshots can be committed`, { details: { key, kind: row.kind } });
    }
    this.db
      .prepare("UPDATE snapshots SET key = ?, kind = 'committed', labels = ?, created = ?, updated = ?, size = ?, inodes = ? WHERE id = ?")
      .run(name, JSON.stringify(labels), now, now, usage.size, usage.inodes, row.id);
    return this.getById(row.id)!;
  }

  /** The row of `key` if it can be removed: not-found if absent, failed-precondition if it has children. */
  removable(key: string): SnapshotRow {
    const row = this.mustGet(key);
    const n = this.childCount(row.id);
    if (n > 0) {
      throw new StarlightError('SL_ERR_SNAPSHOT_PRECONDITION', `cannot remove snapshot ${JSON.stringify(key)}: ${n} snapshot(s) have it as parent; remove them first`, { details: { key, children: n } });
    }
    return row;
  }

  /** Deletes `key` (checked by removable()). Returns the deleted row. */
  remove(key: string): SnapshotRow {
    const row = this.removable(key);
    this.db.prepare('DELETE FROM snapshots WHERE id = ?').run(row.id);
    return row;
  }

  /** containerd UpdateInfo: only labels are mutable. */
  updateLabels(name: string, labels: Record<string, string>, fieldpaths: readonly string[], now = nowNanos()): SnapshotRow {
    const row = this.mustGet(name);
    let next: Record<string, string>;
    if (fieldpaths.length === 0) {
      next = { ...labels };
    } else {
      next = { ...row.labels };
      for (const path of fieldpaths) {
        if (path.startsWith('labels.')) {
          const k = path.slice('labels.'.length);
          const v = labels[k];
          if (v === undefined || v === '') delete next[k];
          else next[k] = v;
        } else if (path === 'labels') {
          next = { ...labels };
        } else {
          throw new StarlightError('SL_ERR_SNAPSHOT_INVALID', `cannot update field ${JSON.stringify(path)} of snapshot ${JSON.stringify(name)}: only labels are mutable`, { details: { name, field: path } });
        }
      }
    }
    this.db.prepare('UPDATE snapshots SET labels = ?, updated = ? WHERE id = ?').run(JSON.stringify(next), now, row.id);
    return this.getById(row.id)!;
  }

  /** Every snapshot id (for directory garbage collection). */
  ids(): Set<number> {
    return new Set((this.db.prepare('SELECT id FROM snapshots').all() as { id: number }[]).map((r) => r.id));
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
