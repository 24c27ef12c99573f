/**
 * The registry seams the proxy depends on: `ImageSource` (resolve an image, then read its blobs
 * through a `Fetcher`). RegistryClient is the implementation (auth, retry and verification live
 * behind it); tests may give their own.
 */
import type { Readable } from 'node:stream';
import type { ResolvedImage } from './client.js';
import type { Reference } from './reference.js';
import type { Descriptor, Platform } from './types.js';

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

/**
 * Config bytes a caller already holds for a manifest digest (e.g. the proxy's record of an image it
 * indexed): `resolve` uses them instead of asking the registry, if they match the manifest's config
 * descriptor (digest and size; anything else is fetched as usual).
 */
export type KnownConfig = (manifestDigest: string) => Buffer | undefined;

/**
 * Contract: `resolve` picks one platform's manifest of `ref` and returns it with its config, both
 * verified against their digests (SL_ERR_OCI_* errors: not found, unauthorized, unreachable after
 * retries, bad manifest); with `knownConfig`, a config the caller holds costs no request (a tag of an
 * image seen before resolves in one round trip). `fetcher(ref)` reads blobs of that repository (see
 * Fetcher).
 */
export interface ImageSource {
  resolve(ref: Reference, platform?: Platform | string, signal?: AbortSignal, knownConfig?: KnownConfig): Promise<ResolvedImage>;
  fetcher(ref: Reference): Fetcher;
}
