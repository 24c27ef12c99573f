/**
 * Turns an uncompressed layer tar into what an OCI manifest needs: its diff_id (sha256 of the tar)
 * and a gzip blob, computed in one pass and cached next to the tar (`X.tar.gz`, `X.tar.diffid`), so a
 * second push of the same layer costs one stat. A cache entry older than its tar is recomputed.
 *
 * Not here: building the tars (build-rootfs.sh), config/manifest and registry I/O (push.ts).
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { StarlightError } from '../../src/errors.js';

/** Gzip level of bench layers: zlib's default, what `docker build` produces (registry-realistic sizes). */
const GZIP_LEVEL = 6;
/** zlib chunk size, bytes: 256 KiB streams ~1.6x faster than the 16 KiB default (design.md). */
const GZIP_CHUNK = 256 * 1024;

export interface CompressedLayer {
  /** The uncompressed tar. */
  tarPath: string;
  /** The gzip blob pushed to the registry. */
  gzPath: string;
  /** sha256 of the uncompressed tar ("sha256:<hex>"), for the config's rootfs.diff_ids. */
  diffId: string;
}

/** Hashes what flows through it. */
class HashTap extends Transform {
  readonly hash = createHash('sha256');
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    cb(null, chunk);
  }
}

async function mtimeMs(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).mtimeMs;
  } catch {
    return undefined;
  }
}

/** diff_id + gzip of `tarPath`, from the cache when it is at least as new as the tar. */
export async function compressLayer(tarPath: string): Promise<CompressedLayer> {
  const gzPath = `${tarPath}.gz`;
  const idPath = `${tarPath}.diffid`;
  const tarTime = await mtimeMs(tarPath);
  if (tarTime === undefined) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `layer tar ${tarPath} does not exist; build it with bench/images/build-rootfs.sh`, {
      details: { path: tarPath },
    });
  }
  const [gzTime, idTime] = await Promise.all([mtimeMs(gzPath), mtimeMs(idPath)]);
  if (gzTime !== undefined && idTime !== undefined && gzTime >= tarTime && idTime >= gzTime) {
    const diffId = (await readFile(idPath, 'utf8')).trim();
    if (/^sha256:[0-9a-f]{64}$/.test(diffId)) return { tarPath, gzPath, diffId };
  }
  const tap = new HashTap();
  const tmp = `${gzPath}.${process.pid}.tmp`;
  try {
    await pipeline(createReadStream(tarPath), tap, createGzip({ level: GZIP_LEVEL, chunkSize: GZIP_CHUNK }), createWriteStream(tmp));
    await rename(tmp, gzPath);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  const diffId = `sha256:${tap.hash.digest('hex')}`;
  await writeFile(idPath, diffId + '\n');
  return { tarPath, gzPath, diffId };
}
