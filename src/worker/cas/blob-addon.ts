/**
 * The blob-file addon (build/Release/starlight_blob.node, native/blob.cc), typed once for its two
 * users: the item-pool threads' content files (stream/create-blob.ts) and the daemon's syncfs
 * (cas/syncfs.ts). Null when it was not built: both fall back to node:fs / coreutils.
 */
import { loadOptionalAddon } from '../../build-artifact.js';

export interface BlobAddon {
  /** Creates, fills, stats and closes one content file: 0, or the errno of the step that failed. */
  createBlob(path: string, data: Uint8Array, stamps: BigUint64Array, index: number): number;
  /** syncfs(2) of the file system holding `path`, on the libuv pool; the callback gets 0 or the errno. */
  syncfs(path: string, callback: (errno: number) => void): void;
}

export const blobAddon = loadOptionalAddon<BlobAddon>('starlight_blob.node');
