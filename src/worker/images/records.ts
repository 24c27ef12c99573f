/**
 * The daemon's persistent record of the images it pulled lazily, so that views can be rebuilt and
 * incomplete streams resumed after a restart without asking containerd:
 *   <root>/<manifest hex>.json   { ref, name, manifestDigest, complete, pulledAt }
 * plus the delta header minus its TOCs (msgpack) in LayerStore's headers/ (TOCs live in tocs/).
 *
 * Not here: content (cas/), TOCs (layer-store.ts), what a pull does (service.ts).
 */
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pack, unpack } from 'msgpackr';
import type { DeltaHeader } from '../../protocol/types.js';
import { digestHex } from '../cas/store.js';
import type { LayerStore } from '../pull/layer-store.js';

export interface ImageRecord {
  /** The reference as the user gave it to `starlight pull` (or CRI's image ref). */
  ref: string;
  /** Normalized name (chain.ts imageName). */
  name: string;
  manifestDigest: string;
  /** Every item of the image's stream is in the CAS. */
  complete: boolean;
  /** ms since the epoch. */
  pulledAt: number;
}

export class ImageRecords {
  constructor(
    readonly root: string,
    private readonly layers: LayerStore,
  ) {}

  async open(): Promise<this> {
    await mkdir(this.root, { recursive: true });
    return this;
  }

  async put(rec: ImageRecord): Promise<void> {
    const path = join(this.root, `${digestHex(rec.manifestDigest)}.json`);
    const tmp = `${path}.tmp-${process.pid}`;
    await writeFile(tmp, JSON.stringify(rec));
    await rename(tmp, path);
  }

  async all(): Promise<ImageRecord[]> {
    const out: ImageRecord[] = [];
    for (const f of await readdir(this.root)) {
      if (!/^[0-9a-f]{64}\.json$/.test(f)) continue;
      out.push(JSON.parse(await readFile(join(this.root, f), 'utf8')) as ImageRecord);
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

  async header(manifestDigest: string): Promise<DeltaHeader | undefined> {
    const raw = await this.layers.header(manifestDigest);
    return raw === undefined ? undefined : (unpack(raw) as DeltaHeader);
  }
}
