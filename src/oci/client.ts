/**
 * RegistryClient: the OCI distribution API as Starlight uses it — resolve a reference (through an
 * index, for a platform) to a verified manifest and config, stream blobs (whole and verified, or a
 * byte range), and push blobs and manifests (for fixtures and bench images).
 *
 * Plain HTTP is used for loopback hosts and `insecureHosts`, HTTPS otherwise. Transport policy
 * (auth, timeout, retry) is in http.ts; errors are mapped in http-errors.ts.
 *
 * Not here: layer contents (src/layers), caching, mirrors, chunked/resumable uploads, cross-repo mounts.
 */
import { Readable, type Transform, pipeline } from 'node:stream';
import { StarlightError } from '../errors.js';
import { type Logger, nullLogger } from '../log.js';
import { Authenticator, type Credential, type CredentialProvider, loadDockerConfig, repositoryScope, staticCredentials } from './auth.js';
import { LengthCheckStream, SliceStream, VerifyingStream, sha256Digest, verifyBuffer } from './digest.js';
import type { ByteRange, FetchOptions, Fetcher, KnownConfig } from './fetcher.js';
import { type ErrorContext } from './http-errors.js';
import { RegistryHttp, bodyStream, type HttpRequest } from './http.js';
import { MANIFEST_ACCEPT, type ManifestDocument, parseManifestDocument } from './manifest.js';
import { formatPlatform, hostPlatform, normalizePlatform, parsePlatform, platformEquals, selectPlatform } from './platform.js';
import { isDigest } from './digest.js';
import { type Reference, apiHost, formatReference, hostname, isLoopback, toReference, withDigest } from './reference.js';
import type { Descriptor, ImageConfig, ImageManifest, Platform } from './types.js';

export interface RegistryClientOptions {
  /** Credentials per registry host. Default: ~/.docker/config.json ($DOCKER_CONFIG), read on first use. */
  credentials?: CredentialProvider | Record<string, Credential>;
  /** Hosts ('host' or 'host:port') spoken to over plain HTTP. Loopback hosts always are. Default []. */
  insecureHosts?: string[];
  /** Retries of a failed GET/HEAD (connection error, timeout, 429, 5xx). Default 3. */
  retries?: number;
  /** First backoff, ms; doubles per retry (jittered, capped at 10 s). Default 200. */
  retryBaseMs?: number;
  /** User-Agent header. Default 'starlight/0.1'. */
  userAgent?: string;
  /** Default nullLogger. Retries are logged at debug as 'oci-request-retry'. */
  logger?: Logger;
  /** Per attempt: ms until response headers (buffered reads: until the whole body). Default 30000. */
  timeoutMs?: number;
}

export interface ResolvedImage {
  ref: Reference;
  /** The platform of the chosen manifest (from the index entry, else from the config). */
  platform: Platform;
  /** Set when the reference named an index / manifest list. */
  indexDigest?: string;
  manifestDigest: string;
  manifestMediaType: string;
  /** The manifest exactly as stored in the registry (its sha256 is manifestDigest). */
  manifestBytes: Buffer;
  manifest: ImageManifest;
  configBytes: Buffer;
  config: ImageConfig;
}

const DEFAULTS = { retries: 3, retryBaseMs: 200, userAgent: 'starlight/0.1', timeoutMs: 30_000 };
/** Largest manifest or config accepted, bytes (containerd's limit for manifests is 4 MiB). */
const MAX_METADATA_BYTES = 4 * 1024 * 1024;

function configError(field: string, why: string): StarlightError {
  return new StarlightError('SL_ERR_CONFIG', `RegistryClient option ${field} ${why}`, { details: { field } });
}

function nonNegativeInt(v: number | undefined, field: string, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isSafeInteger(v) || v < 0) throw configError(field, `must be a non-negative integer, got ${String(v)}`);
  return v;
}

export class RegistryClient {
  private readonly http: RegistryHttp;
  private readonly insecure: ReadonlySet<string>;

  constructor(opts: RegistryClientOptions = {}) {
    const timeoutMs = nonNegativeInt(opts.timeoutMs, 'timeoutMs', DEFAULTS.timeoutMs);
    if (timeoutMs === 0) throw configError('timeoutMs', 'must be > 0');
    const settings = {
      retries: nonNegativeInt(opts.retries, 'retries', DEFAULTS.retries),
      retryBaseMs: nonNegativeInt(opts.retryBaseMs, 'retryBaseMs', DEFAULTS.retryBaseMs),
      timeoutMs,
      userAgent: opts.userAgent ?? DEFAULTS.userAgent,
      logger: opts.logger ?? nullLogger,
    };
    this.insecure = new Set((opts.insecureHosts ?? []).map((h) => h.toLowerCase()));
    const creds = opts.credentials;
    let docker: CredentialProvider | undefined;
    const provider: CredentialProvider =
      typeof creds === 'function'
        ? creds
        : creds !== undefined
          ? staticCredentials(creds)
          : (registry) => (docker ??= loadDockerConfig())(registry);
    const auth = new Authenticator(provider, (url, headers) =>
      this.http.getToken(url, headers, { registry: new URL(url).host, subject: `token ${new URL(url).pathname}` }),
    );
    this.http = new RegistryHttp(settings, auth);
  }

  /** Resolves `ref` to one platform's manifest and config, both verified against their digests. */
  async resolve(refIn: Reference | string, platformIn?: Platform | string, signal?: AbortSignal, knownConfig?: KnownConfig): Promise<ResolvedImage> {
    const ref = toReference(refIn);
    const want = platformIn === undefined ? hostPlatform() : typeof platformIn === 'string' ? parsePlatform(platformIn) : platformIn;
    const top = await this.getManifest(ref, signal);
    let chosen: { doc: ManifestDocument; bytes: Buffer; digest: string } = top;
    let indexDigest: string | undefined;
    let platform: Platform | undefined;
    if (top.doc.kind === 'index') {
      const entries = top.doc.index.manifests;
      const desc = selectPlatform(entries, want);
      if (!desc) {
        const available = entries.filter((d) => d.platform).map((d) => formatPlatform(normalizePlatform(d.platform as Platform)));
        throw new StarlightError(
          'SL_ERR_OCI_PLATFORM',
          `image ${formatReference(ref)} has no manifest for platform ${formatPlatform(want)}; available: ${available.join(', ') || 'none'}`,
          { details: { image: formatReference(ref), platform: formatPlatform(want), available } },
        );
      }
      indexDigest = top.digest;
      platform = normalizePlatform(desc.platform as Platform);
      chosen = await this.getManifest(withDigest(ref, desc.digest), signal, desc);
      if (chosen.doc.kind !== 'manifest') {
        throw new StarlightError('SL_ERR_OCI_MANIFEST', `image ${formatReference(ref)}: index entry ${desc.digest} is itself an index (nested indexes are not supported)`, {
          details: { image: formatReference(ref), digest: desc.digest },
        });
      }
    }
    const doc = chosen.doc as Extract<ManifestDocument, { kind: 'manifest' }>;
    const configBytes = knownBytes(knownConfig?.(chosen.digest), doc.manifest.config) ?? (await this.getBlobBuffer(ref, doc.manifest.config, signal));
    const config = parseConfig(configBytes, ref);
    if (platform === undefined) {
      platform = normalizePlatform({ os: config.os, architecture: config.architecture, variant: config.variant });
      // A single-manifest image has no choice to make; refuse only a platform the caller asked for.
      if (platformIn !== undefined && !platformEquals(want, platform)) {
        throw new StarlightError(
          'SL_ERR_OCI_PLATFORM',
          `image ${formatReference(ref)} is ${formatPlatform(platform)} only, not ${formatPlatform(want)}`,
          { details: { image: formatReference(ref), platform: formatPlatform(want), available: [formatPlatform(platform)] } },
        );
      }
    }
    const out: ResolvedImage = {
      ref,
      platform,
      manifestDigest: chosen.digest,
      manifestMediaType: doc.mediaType,
      manifestBytes: chosen.bytes,
      manifest: doc.manifest,
      configBytes,
      config,
    };
    if (indexDigest !== undefined) out.indexDigest = indexDigest;
    return out;
  }

  /** The manifest or index `ref` names, verified (by the ref's digest, `expected`, or Docker-Content-Digest). */
  async getManifest(
    refIn: Reference | string,
    signal?: AbortSignal,
    expected?: Descriptor,
  ): Promise<{ doc: ManifestDocument; bytes: Buffer; digest: string; mediaType: string }> {
    const ref = toReference(refIn);
    const image = formatReference(ref);
    const ctx: ErrorContext = { registry: ref.registry, subject: `image ${image}`, details: { image } };
    const { res, body } = await this.http.sendBuffered({
      ...this.base(ref, 'manifests', ref.digest ?? ref.tag ?? 'latest', 'GET', false, ctx, signal),
      headers: { accept: MANIFEST_ACCEPT },
    });
    if (body.length > MAX_METADATA_BYTES) {
      throw new StarlightError('SL_ERR_OCI_MANIFEST', `image ${image}: manifest of ${body.length} bytes exceeds ${MAX_METADATA_BYTES}`, { details: ctx.details });
    }
    const header = res.headers.get('docker-content-digest');
    const want = expected?.digest ?? ref.digest ?? (header && isDigest(header) ? header : undefined);
    if (want) verifyBuffer(body, { digest: want, size: expected?.size }, { subject: `manifest of image ${image}`, details: ctx.details });
    const doc = parseManifestDocument(body, res.headers.get('content-type'), `image ${image}`);
    return { doc, bytes: body, digest: want ?? sha256Digest(body), mediaType: doc.mediaType };
  }

  /**
   * Streams a blob (see Fetcher for the contract). Whole reads are verified against desc.digest/size;
   * range reads ask for `Range` and cut the range themselves if the registry answers 200.
   */
  async fetchBlob(refIn: Reference | string, desc: Descriptor, opts: FetchOptions = {}): Promise<Readable> {
    const ref = toReference(refIn);
    const ctx = blobContext(ref, desc.digest);
    const { range, signal } = opts;
    if (range) checkRange(range, desc, ctx);
    const req: HttpRequest = {
      ...this.base(ref, 'blobs', desc.digest, 'GET', false, ctx, signal),
      expect: range ? [200, 206] : [200],
    };
    if (range) req.headers = { range: `bytes=${range.start}-${range.end - 1}` };
    const res = await this.http.send(req);
    const src = mapStreamErrors(bodyStream(res), ctx, signal);
    const stages: Transform[] = [];
    if (!range) stages.push(new VerifyingStream({ digest: desc.digest, size: desc.size }, ctx));
    else {
      if (res.status === 200) stages.push(new SliceStream(range.start, range.end));
      else checkContentRange(res.headers.get('content-range'), range, ctx);
      stages.push(new LengthCheckStream(range.end - range.start, ctx));
    }
    const out = stages[stages.length - 1];
    pipeline([src, ...stages], () => {
      // Errors reach the consumer through `out`; nothing else to do here.
    });
    return out;
  }

  /** The blob's size if the repository has it, else undefined. */
  async headBlob(refIn: Reference | string, digest: string, signal?: AbortSignal): Promise<{ digest: string; size: number } | undefined> {
    const ref = toReference(refIn);
    const req = { ...this.base(ref, 'blobs', digest, 'HEAD', false, blobContext(ref, digest), signal), expect: [200, 404] };
    const res = await this.http.send(req);
    await res.body?.cancel();
    if (res.status === 404) return undefined;
    return { digest, size: Number(res.headers.get('content-length') ?? -1) };
  }

  /** Uploads a blob monolithically (POST then PUT); returns false if the registry already had it. */
  async pushBlob(refIn: Reference | string, data: Buffer | (() => Readable), desc: Descriptor, signal?: AbortSignal): Promise<boolean> {
    const ref = toReference(refIn);
    const ctx = blobContext(ref, desc.digest);
    if (Buffer.isBuffer(data)) verifyBuffer(data, desc, { subject: `upload of ${ctx.subject}`, details: ctx.details });
    if (await this.headBlob(ref, desc.digest, signal)) return false;
    const post = await this.http.send({ ...this.base(ref, 'blobs', 'uploads/', 'POST', true, ctx, signal), expect: [202] });
    await post.body?.cancel();
    const location = post.headers.get('location');
    if (!location) {
      throw new StarlightError('SL_ERR_OCI_REGISTRY', `registry ${ref.registry} started an upload for ${ctx.subject} without a Location`, { details: ctx.details });
    }
    const url = new URL(location, this.baseUrl(ref.registry));
    url.searchParams.set('digest', desc.digest);
    const put = await this.http.send({
      method: 'PUT',
      url: url.toString(),
      headers: { 'content-type': 'application/octet-stream' },
      body: data,
      expect: [201],
      scope: repositoryScope(ref.repository, true),
      ctx,
      signal,
    });
    await put.body?.cancel();
    return true;
  }

  /** PUTs a manifest or index under the ref's tag (else its digest); returns the manifest digest. */
  async pushManifest(refIn: Reference | string, bytes: Buffer, mediaType: string, signal?: AbortSignal): Promise<string> {
    const ref = toReference(refIn);
    const digest = sha256Digest(bytes);
    const image = formatReference(ref);
    const ctx: ErrorContext = { registry: ref.registry, subject: `manifest of image ${image}`, details: { image, digest } };
    if (ref.digest !== undefined && ref.digest !== digest) {
      throw new StarlightError('SL_ERR_OCI_DIGEST_MISMATCH', `cannot push ${ctx.subject}: the bytes have digest ${digest}`, { details: ctx.details });
    }
    const res = await this.http.send({
      ...this.base(ref, 'manifests', ref.tag ?? digest, 'PUT', true, ctx, signal),
      headers: { 'content-type': mediaType },
      body: bytes,
      expect: [201],
    });
    await res.body?.cancel();
    return digest;
  }

  /** All tags of the reference's repository (follows `Link: <…>; rel="next"` pages). */
  async listTags(repoIn: Reference | string, signal?: AbortSignal): Promise<string[]> {
    const ref = toReference(repoIn);
    const ctx: ErrorContext = { registry: ref.registry, subject: `repository ${ref.registry}/${ref.repository}`, details: { repository: ref.repository } };
    const tags: string[] = [];
    let url: string | undefined = `${this.baseUrl(ref.registry)}${ref.repository}/tags/list`;
    while (url) {
      const { res, body }: { res: Response; body: Buffer } = await this.http.sendBuffered({
        ...this.base(ref, 'tags', 'list', 'GET', false, ctx, signal),
        url,
      });
      const doc = JSON.parse(body.toString('utf8')) as { tags?: string[] | null };
      tags.push(...(doc.tags ?? []));
      const next = /<([^>]+)>\s*;\s*rel="?next"?/.exec(res.headers.get('link') ?? '');
      url = next ? new URL(next[1], url).toString() : undefined;
    }
    return tags;
  }

  /** A Fetcher bound to the reference's repository (the seam the proxy uses). */
  fetcher(refIn: Reference | string): Fetcher {
    const ref = toReference(refIn);
    return { fetch: (desc, opts) => this.fetchBlob(ref, desc, opts) };
  }

  private async getBlobBuffer(ref: Reference, desc: Descriptor, signal?: AbortSignal): Promise<Buffer> {
    const ctx = blobContext(ref, desc.digest);
    if (desc.size > MAX_METADATA_BYTES) {
      throw new StarlightError('SL_ERR_OCI_MANIFEST', `image ${formatReference(ref)}: config of ${desc.size} bytes exceeds ${MAX_METADATA_BYTES}`, { details: ctx.details });
    }
    const { body } = await this.http.sendBuffered(this.base(ref, 'blobs', desc.digest, 'GET', false, ctx, signal));
    verifyBuffer(body, desc, ctx);
    return body;
  }

  private baseUrl(registry: string): string {
    const plain = isLoopback(registry) || this.insecure.has(registry.toLowerCase()) || this.insecure.has(hostname(registry));
    return `${plain ? 'http' : 'https'}://${apiHost(registry)}/v2/`;
  }

  private base(ref: Reference, kind: 'manifests' | 'blobs' | 'tags', id: string, method: HttpRequest['method'], push: boolean, ctx: ErrorContext, signal?: AbortSignal): HttpRequest {
    return {
      method,
      url: `${this.baseUrl(ref.registry)}${ref.repository}/${kind}/${id}`,
      expect: [200],
      scope: repositoryScope(ref.repository, push),
      ctx,
      signal,
    };
  }
}

/** `bytes` when they are the blob `desc` names (size and sha256), else undefined (fetch it). */
function knownBytes(bytes: Buffer | undefined, desc: Descriptor): Buffer | undefined {
  return bytes !== undefined && bytes.length === desc.size && sha256Digest(bytes) === desc.digest ? bytes : undefined;
}

function blobContext(ref: Reference, digest: string): ErrorContext {
  // A layer shared by a repository's images is fetched by `repository@<its own digest>` (the proxy's
  // indexer): name the repository then, not an "image" that is the blob itself.
  if (ref.digest === digest) {
    const repository = `${ref.registry}/${ref.repository}`;
    return { registry: ref.registry, subject: `blob ${digest} of repository ${repository}`, details: { repository, digest } };
  }
  const image = formatReference(ref);
  return { registry: ref.registry, subject: `blob ${digest} of image ${image}`, details: { image, digest } };
}

function checkRange(range: ByteRange, desc: Descriptor, ctx: ErrorContext): void {
  const ok = Number.isSafeInteger(range.start) && Number.isSafeInteger(range.end) && range.start >= 0 && range.end > range.start && range.end <= desc.size;
  if (!ok) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `${ctx.subject}: range [${range.start}, ${range.end}) is not within its ${desc.size} bytes`, { details: ctx.details });
  }
}

function checkContentRange(header: string | null, range: ByteRange, ctx: ErrorContext): void {
  const m = header ? /^bytes (\d+)-(\d+)\//.exec(header) : null;
  if (m && (Number(m[1]) !== range.start || Number(m[2]) !== range.end - 1)) {
    throw new StarlightError('SL_ERR_OCI_REGISTRY', `${ctx.subject}: registry answered range ${header} for bytes=${range.start}-${range.end - 1}`, { details: ctx.details });
  }
}

/** Re-throws transport errors of a streamed body as SL_ERR_OCI_UNREACHABLE / SL_ERR_CANCELED. */
function mapStreamErrors(src: Readable, ctx: ErrorContext, signal?: AbortSignal): Readable {
  async function* relay(): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of src) yield chunk as Buffer;
    } catch (err) {
      if (signal?.aborted) {
        throw new StarlightError('SL_ERR_CANCELED', `download of ${ctx.subject} was aborted`, { cause: err, details: ctx.details });
      }
      throw new StarlightError('SL_ERR_OCI_UNREACHABLE', `registry ${ctx.registry}: connection lost while streaming ${ctx.subject}: ${(err as Error).message}`, {
        cause: err,
        details: ctx.details,
      });
    }
  }
  return Readable.from(relay(), { objectMode: false });
}

function parseConfig(bytes: Buffer, ref: Reference): ImageConfig {
  const image = formatReference(ref);
  let cfg: ImageConfig;
  try {
    cfg = JSON.parse(bytes.toString('utf8')) as ImageConfig;
  } catch (err) {
    throw new StarlightError('SL_ERR_OCI_MANIFEST', `image ${image}: config is not JSON (${(err as Error).message})`, { details: { image } });
  }
  if (typeof cfg !== 'object' || cfg === null || typeof cfg.os !== 'string' || typeof cfg.architecture !== 'string' || !Array.isArray(cfg.rootfs?.diff_ids)) {
    throw new StarlightError('SL_ERR_OCI_MANIFEST', `image ${image}: config lacks os, architecture or rootfs.diff_ids`, { details: { image } });
  }
  return cfg;
}
