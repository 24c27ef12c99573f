/**
 * The Fetcher seam: read one repository's blobs as streams. The proxy and worker depend on this
 * interface only; RegistryClient.fetcher(ref) is the implementation (auth, retry and verification
 * live behind it).
 */
import type { Readable } from 'node:stream';
import type { Descriptor } from './types.js';

/** A byte range [start, end) of a blob: `end` is exclusive. */
export interface ByteRange {
  start: number;
  end: number;
}

export interface FetchOptions {
  /** Only these bytes. Range reads are NOT digest-verified (a part cannot be); whole reads always are. */
  range?: ByteRange;
  /** Aborts the request and destroys the returned stream (error code SL_ERR_CANCELED). */
  signal?: AbortSignal;
}

/**
 * Contract:
 * - `fetch` resolves once the registry answered with the blob (errors before that reject: not found,
 *   unauthorized, unreachable after retries); the stream then yields exactly `desc.size` bytes (or
 *   `range.end - range.start`), and errors with SL_ERR_OCI_DIGEST_MISMATCH at its end when the whole
 *   blob's sha256 or size differ from `desc` — consumers must not trust data before 'end'.
 * - No retry happens after the promise resolved: a dropped connection errors the stream; the caller
 *   resumes with a range read.
 * - Destroying the stream aborts the transfer. Cost: one HTTP request (plus a token fetch at most).
 */
export interface Fetcher {
  fetch(desc: Descriptor, opts?: FetchOptions): Promise<Readable>;
}
