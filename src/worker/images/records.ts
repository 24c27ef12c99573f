/**
 * The daemon's persistent record of the images it pulled lazily, so that views can be rebuilt and
 * incomplete streams resumed after a restart without asking containerd:
 *   <root>/<manifest hex>.json   { ref, name, manifestDigest, complete, pulledAt }
 * plus the delta header minus its TOCs (msgpack) in LayerStore's headers/ (TOCs live in tocs/).
 *
 * None of these files is fsync'ed on its own (pull/layer-store.ts "the rule"): a record is written
 * after its header and TOCs were written, before the pull answers (a daemon killed mid-stream
 * resumes it, issue 13), so after a power cut it may name files that came back empty or truncated.
 * Reading checks them: all() drops a record that does not parse, header() refuses a header that
 * does not decode or does not hash to its manifest digest (SL_ERR_WORKER_STATE_CORRUPT), and the
 * service's restart drops a record whose header or TOCs are unreadable (service.ts open()).
 *
 * Not here: content (cas/), TOCs (layer-store.ts), what a pull does (service.ts).
 */
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pack, unpack } from 'msgpackr';
import { StarlightError } from '../../errors.js';
import { nullLogger, type Logger } from '../../log.js';
import type { DeltaHeader } from '../../protocol/types.js';
import { digestHex } from '../cas/store.js';
import { checkHeaderImage } from '../pull/header-check.js';
import type { LayerStore } from '../pull/layer-store.js';
import { removeLeftoverTemps, replaceFile } from '../state-files.js';

export interface ImageRecord {
  /** The reference as the user gave it to `starlight pull` (or CRI's image ref). */
  ref: string;
  /** Normalized name (chain.ts imageName). */
  name: string;
  manifestDigest: string;
  /**
   * Every item of the image's stream is in the CAS, durably, and so are its header and TOCs
   * (written true only after they were flushed: service.ts).
   */
  complete: boolean;
  /** ms since the epoch. */
  pulledAt: number;
}

export interface ImageRecordsOptions {
  /** Logs records dropped as unreadable; default nullLogger. */
  log?: Logger;
}

const RECORD_FILE_RE = /^([0-9a-f]{64})\.json$/;

function corrupt(what: string, manifestDigest: string, cause?: unknown): StarlightError {
  return new StarlightError('SL_ERR_WORKER_STATE_CORRUPT', `the stored ${what} of image ${manifestDigest} is unreadable`, { cause, details: { manifestDigest } });
}

/** A record as JSON.parse gave it, if it has every field with its type and names `manifestDigest`. */
function isRecord(v: unknown, manifestDigest: string): v is ImageRecord {
  const r = v as Partial<ImageRecord> | null;
  return (
    typeof r === 'object' && r !== null && r.manifestDigest === manifestDigest && typeof r.ref === 'string' && typeof r.name === 'string' && typeof r.complete === 'boolean' && typeof r.pulledAt === 'number'
  );
}

/**
 * The header putHeader() stored for `manifestDigest`, checked: every field a restart uses has its
 * type, and its manifest, config and chain agree (header-check.ts: the manifest bytes hash to their
 * digest). Throws SL_ERR_WORKER_STATE_CORRUPT otherwise.
 */
function storedHeader(raw: Buffer, manifestDigest: string): DeltaHeader {
  let h: Partial<DeltaHeader> | null;
  try {
    h = unpack(raw) as Partial<DeltaHeader> | null;
  } catch (err) {
    throw corrupt('header', manifestDigest, err);
  }
  const fields =
    typeof h === 'object' &&
    h !== null &&
    h.manifestDigest === manifestDigest &&
    typeof h.ref === 'string' &&
    typeof h.platform === 'string' &&
    h.manifest instanceof Uint8Array &&
    h.config instanceof Uint8Array &&
    Array.isArray(h.diffIDs) &&
    h.diffIDs.every((d) => typeof d === 'string') &&
    Array.isArray(h.items) &&
    h.items.every((i) => typeof i?.digest === 'string' && typeof i.size === 'number') &&
    typeof h.firstItem === 'number';
  if (!fields) throw corrupt('header', manifestDigest);
  const header = h as DeltaHeader;
  try {
    checkHeaderImage(header, header.ref);
  } catch (err) {
    throw corrupt('header', manifestDigest, err);
  }
  return header;
}

export class ImageRecords {
  private readonly log: Logger;

  constructor(
    readonly root: string,
    private readonly layers: LayerStore,
    opts: ImageRecordsOptions = {},
  ) {
    this.log = opts.log ?? nullLogger;
  }

  async open(): Promise<this> {
    await mkdir(this.root, { recursive: true });
    await removeLeftoverTemps(this.root);
    return this;
  }

  async put(rec: ImageRecord): Promise<void> {
    await replaceFile(join(this.root, `${digestHex(rec.manifestDigest)}.json`), JSON.stringify(rec));
  }

  /** Every readable record. One that does not parse (empty, truncated) is removed with its header, and logged. */
  async all(): Promise<ImageRecord[]> {
    const out: ImageRecord[] = [];
    for (const f of await readdir(this.root)) {
      const m = RECORD_FILE_RE.exec(f);
      if (!m) continue;
      const manifestDigest = 'sha256:' + m[1]!;
      const text = await readFile(join(this.root, f), 'utf8');
      let rec: unknown;
      try {
        rec = JSON.parse(text);
      } catch {
        rec = undefined;
      }
      if (isRecord(rec, manifestDigest)) {
        out.push(rec);
        continue;
      }
      await this.remove(manifestDigest);
      this.log.warn('image-record-unreadable', { manifest: manifestDigest, bytes: text.length, next: 'dropped; pull the image again (`starlight pull`) to show it' });
    }
    return out;
  }

  /** Forgets an image (record and header); its TOCs stay in LayerStore. Idempotent. */
  async remove(manifestDigest: string): Promise<void> {
    await rm(join(this.root, `${digestHex(manifestDigest)}.json`), { force: true });
    await this.layers.removeHeader(manifestDigest);
  }

  /** Stores the header without its TOCs (those are in LayerStore tocs/). */
  async putHeader(h: DeltaHeader): Promise<void> {
    await this.layers.putHeader(h.manifestDigest, pack({ ...h, layers: [] }));
  }

  /** The stored header, or undefined if there is none; SL_ERR_WORKER_STATE_CORRUPT if it is unreadable (storedHeader). */
  async header(manifestDigest: string): Promise<DeltaHeader | undefined> {
    const raw = await this.layers.header(manifestDigest);
    return raw === undefined ? undefined : storedHeader(raw, manifestDigest);
  }
}
