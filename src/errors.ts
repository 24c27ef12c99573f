/**
 * The one error type of Starlight, and the one table of error codes.
 *
 * Every error that crosses a module boundary is a StarlightError with a stable `code` (documented in
 * docs/errors.md, checked by test/unit/errors.test.ts) and an errdefs-style `kind`. Boundaries
 * (gRPC, HTTP, FUSE errno, CLI exit code) translate `kind` once, in their own adapter; nothing else
 * maps errors and nothing tests message text.
 *
 * The bench and demo harness has its own codes (fixtures/harness-error.ts): both tables' errors are
 * CodedErrors, which the CLI boundary prints and maps alike.
 *
 * Not here: logging (src/log.ts), per-boundary mappings (each adapter owns its table).
 */
import { constants as osConstants } from 'node:os';

/** errdefs classes, as in containerd's errdefs package. */
export type Kind =
  | 'not-found'
  | 'already-exists'
  | 'invalid-argument'
  | 'failed-precondition'
  | 'unavailable'
  | 'data-loss'
  | 'resource-exhausted'
  | 'canceled'
  | 'unimplemented'
  | 'unauthenticated'
  | 'permission-denied'
  | 'internal';

/** One row of a code table. */
export interface CodeInfo {
  kind: Kind;
  /** What the user can do about it; appended to messages by the CLI. */
  hint: string;
}

/**
 * Every error code. Add a row here and a line in docs/errors.md; the unit test keeps both in sync.
 * Naming: SL_ERR_<AREA>_<WHAT>.
 */
export const CODES = {
  // generic
  SL_ERR_INTERNAL: { kind: 'internal', hint: 'a bug in Starlight; please report it with the log' },
  SL_ERR_INVALID_ARGUMENT: { kind: 'invalid-argument', hint: 'check the command line or request parameters' },
  SL_ERR_CANCELED: { kind: 'canceled', hint: 'the operation was aborted' },
  SL_ERR_CONFIG: { kind: 'invalid-argument', hint: 'fix the option or config file value named in the message' },

  // oci: references, registry client
  SL_ERR_OCI_REFERENCE: { kind: 'invalid-argument', hint: 'use [registry/]repository[:tag][@sha256:digest]' },
  SL_ERR_OCI_NOT_FOUND: { kind: 'not-found', hint: 'check the repository, tag or digest exist in the registry' },
  SL_ERR_OCI_UNAUTHORIZED: { kind: 'unauthenticated', hint: 'log in (~/.docker/config.json) or pass credentials (proxy: --registry-auth FILE)' },
  SL_ERR_OCI_DENIED: { kind: 'permission-denied', hint: 'the credentials lack access to this repository' },
  SL_ERR_OCI_UNREACHABLE: { kind: 'unavailable', hint: 'check the registry address and that it is running' },
  SL_ERR_OCI_REGISTRY: { kind: 'unavailable', hint: 'the registry answered with an error; retry later' },
  SL_ERR_OCI_DIGEST_MISMATCH: { kind: 'data-loss', hint: 'the registry served bytes that do not match the digest; the blob is corrupt' },
  SL_ERR_OCI_MANIFEST: { kind: 'invalid-argument', hint: 'the manifest or index is malformed or of an unsupported media type' },
  SL_ERR_OCI_PLATFORM: { kind: 'not-found', hint: 'choose a platform the image index lists (--platform os/arch)' },

  // worker content store
  SL_ERR_CAS_DIGEST_MISMATCH: { kind: 'data-loss', hint: 'the content received does not match its digest; it was discarded and will be fetched again' },
  SL_ERR_CAS_SIZE_MISMATCH: { kind: 'data-loss', hint: 'the content received has the wrong size; it was discarded and will be fetched again' },
  SL_ERR_CAS_NOT_FOUND: { kind: 'not-found', hint: 'the content is not in the local store (yet)' },
  SL_ERR_CAS_WRITER_BUSY: { kind: 'already-exists', hint: 'another writer is ingesting this content; wait for it' },
  SL_ERR_DISK_FULL: { kind: 'resource-exhausted', hint: 'free space on the file system holding --root (or --data)' },

  // worker stream
  SL_ERR_PROXY_UNREACHABLE: { kind: 'unavailable', hint: 'check the --proxy URL and that the proxy is running (a stream already under way keeps retrying)' },
  SL_ERR_CONTENT_DEADLINE: { kind: 'unavailable', hint: 'the content did not arrive in time (--read-deadline); check the link to the proxy' },

  // image: layer reading, TOC
  SL_ERR_IMAGE_BAD_TAR: { kind: 'data-loss', hint: 'the layer is not a valid tar archive' },
  SL_ERR_IMAGE_BAD_COMPRESSION: { kind: 'data-loss', hint: 'the layer is truncated or not valid gzip/zstd' },
  SL_ERR_IMAGE_PATH_ESCAPE: { kind: 'invalid-argument', hint: 'the layer has an entry that escapes the root (../ or absolute); it is refused' },
  SL_ERR_IMAGE_DIFFID_MISMATCH: { kind: 'data-loss', hint: "the layer's uncompressed digest differs from the image config's rootfs.diff_ids" },
  SL_ERR_IMAGE_UNSUPPORTED: { kind: 'unimplemented', hint: 'this media type or tar feature is not supported' },
  SL_ERR_IMAGE_BAD_TOC: { kind: 'data-loss', hint: 'the stored TOC is corrupt or from another Starlight version; re-index the layer' },
  SL_ERR_IMAGE_LIMIT: { kind: 'resource-exhausted', hint: 'the layer exceeds a reading limit (named in the message); raise it with the matching proxy --max-* flag if the image is legitimate' },

  // protocol: delta stream frames
  SL_ERR_PROTOCOL_MALFORMED: { kind: 'data-loss', hint: 'the delta stream is corrupt or not a Starlight delta; check the proxy URL' },
  SL_ERR_PROTOCOL_TRUNCATED: { kind: 'data-loss', hint: 'the delta stream ended early; resume with from=<next item>' },
  SL_ERR_PROTOCOL_VERSION: { kind: 'unimplemented', hint: 'the proxy and worker speak different delta versions; upgrade the older one' },
  SL_ERR_PROTOCOL_REMOTE: { kind: 'unavailable', hint: 'the proxy failed while streaming; see its log and retry' },

  // proxy: HTTP service, store, content cache
  SL_ERR_PROXY_UNAUTHORIZED: { kind: 'unauthenticated', hint: 'send Authorization: Bearer <token> with a token from the proxy --token-file' },
  SL_ERR_PROXY_REGISTRY_NOT_ALLOWED: { kind: 'permission-denied', hint: 'the proxy serves only the registries given with --registry' },
  SL_ERR_PROXY_CONTENT_NOT_FOUND: { kind: 'not-found', hint: 'the proxy has not indexed an image holding this content; request a delta of it first' },
  SL_ERR_PROXY_STORE: { kind: 'failed-precondition', hint: 'the proxy data dir is corrupt or from a newer version; use another --data dir' },
  SL_ERR_PROXY_SESSION_NOT_FOUND: { kind: 'not-found', hint: 'the delta stream ended or never existed; bump items only of a stream still being received' },
  SL_ERR_BODY_TOO_LARGE: { kind: 'invalid-argument', hint: 'send a smaller request (trace uploads to the proxy: fewer traces per request, up to 16 MiB)' },
  SL_ERR_PROXY_BUSY: { kind: 'resource-exhausted', hint: 'the proxy is at a concurrency bound (e.g. trace uploads); retry later' },
  // worker/snapshotter: containerd snapshots API (kinds map 1:1 to containerd errdefs / gRPC codes)
  SL_ERR_SNAPSHOT_NOT_FOUND: { kind: 'not-found', hint: 'the snapshot key or parent does not exist; list them with `ctr snapshots ls`' },
  SL_ERR_SNAPSHOT_EXISTS: { kind: 'already-exists', hint: 'a snapshot with this key or name exists; use another key or remove it first' },
  SL_ERR_SNAPSHOT_PRECONDITION: { kind: 'failed-precondition', hint: 'the snapshot is in the wrong state for this call (kind, children, closed)' },
  SL_ERR_SNAPSHOT_INVALID: { kind: 'invalid-argument', hint: 'fix the key, parent, filter or field path in the request' },
  SL_ERR_SNAPSHOT_UNAVAILABLE: { kind: 'unavailable', hint: 'the lazy view under this snapshot is gone; restart the worker daemon or re-pull the image' },
  SL_ERR_SNAPSHOT_UNIMPLEMENTED: { kind: 'unimplemented', hint: 'the snapshotter does not support this call' },
  // worker/images + api: lazy pulls into containerd, the daemon's own API
  SL_ERR_CONTAINERD: { kind: 'unavailable', hint: 'a call to containerd failed; check --containerd-address, the namespace and that containerd runs' },
  SL_ERR_CONTAINERD_NOT_FOUND: { kind: 'not-found', hint: 'containerd has no such record (image, content, snapshot or lease) in this namespace' },
  SL_ERR_CONTAINERD_EXISTS: { kind: 'already-exists', hint: 'containerd already has this record; remove it first (`ctr images rm`, `ctr snapshots rm`)' },
  SL_ERR_CONTAINERD_REJECTED: { kind: 'failed-precondition', hint: 'containerd refused the request as invalid for the record\'s state; see the message and containerd\'s log' },
  SL_ERR_PULL_NOT_LAZY: { kind: 'failed-precondition', hint: 'the starlight snapshotter did not take the layer lazily; is containerd configured with the starlight proxy plugin and the daemon started with --proxy?' },
  SL_ERR_WORKER_STATE_CORRUPT: { kind: 'data-loss', hint: "a file of the worker's state (image record, header or TOC) is empty, truncated or corrupt (a power cut?); it is dropped and the next pull fetches it again" },
  SL_ERR_IMAGE_NOT_PULLED: { kind: 'not-found', hint: 'the daemon has no record of this image or view; pull it again with `starlight pull`' },
  SL_ERR_DAEMON_UNREACHABLE: { kind: 'unavailable', hint: 'start `starlight snapshotter` or pass --daemon <root>/daemon.sock' },
  // worker/fs: FUSE views (native addon)
  SL_ERR_FS_ADDON: { kind: 'failed-precondition', hint: 'the FUSE addon is not built or does not load; run `npm install` (needs libfuse3-dev, g++, make)' },
  SL_ERR_FS_BAD_TREE: { kind: 'invalid-argument', hint: 'the merged tree breaks its contract (missing root/parent, bad hardlink); a bug in TOC merging' },
  SL_ERR_FS_MOUNT: { kind: 'failed-precondition', hint: 'check the mountpoint is an existing directory, /dev/fuse exists and the worker runs as root' },
  SL_ERR_FS_MOUNTED: { kind: 'already-exists', hint: 'a view is already mounted there by this worker; unmount it first' },
  SL_ERR_FS_UNAVAILABLE: { kind: 'unavailable', hint: 'the view is gone or does not answer; unmount and mount it again (restart the worker)' },

  SL_ERR_IMAGE_MISMATCH: { kind: 'data-loss', hint: 'the proxy sent an image other than the one asked for (manifest, config, diffIDs or items do not match); a proxy bug or tampering in transit: use TLS to the proxy' },

  // worker fs: the fd holder (issue 13)
  SL_ERR_FS_HOLDER: { kind: 'unavailable', hint: 'the FUSE fd holder (build/Release/starlight-fuse-holder) could not be started or reached; views still work but will not survive a daemon restart; see <root>/fuse-holder.log' },
  // proxy replicas (issue 15): the shared PostgreSQL store
  SL_ERR_PROXY_DB_UNAVAILABLE: { kind: 'unavailable', hint: 'the proxy cannot reach its PostgreSQL database (--db); check that it runs and accepts connections: the proxy recovers by itself when it does' },
} as const satisfies Record<string, CodeInfo>;

export type Code = keyof typeof CODES;

export interface StarlightErrorOptions {
  cause?: unknown;
  /** Structured fields (digest, path, image, registry…) for logs and wire errors. */
  details?: Record<string, unknown>;
}

/** An error with a stable code from a code table and an errdefs kind (StarlightError, HarnessError). */
export abstract class CodedError<C extends string = string> extends Error {
  readonly code: C;
  readonly kind: Kind;
  readonly details: Record<string, unknown>;
  readonly #table: Readonly<Record<C, CodeInfo>>;

  protected constructor(table: Readonly<Record<C, CodeInfo>>, code: C, message: string, opts: StarlightErrorOptions) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.#table = table;
    this.code = code;
    this.kind = table[code].kind;
    this.details = opts.details ?? {};
  }

  /** What the user can do about it. */
  get hint(): string {
    return this.#table[this.code].hint;
  }
}

export class StarlightError extends CodedError<Code> {
  constructor(code: Code, message: string, opts: StarlightErrorOptions = {}) {
    super(CODES, code, message, opts);
    this.name = 'StarlightError';
  }
}

/** True if `s` names one of our codes (own keys only: 'toString' is not a code). */
export function isCode(s: unknown): s is Code {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(CODES, s);
}

/** True if `err` is a StarlightError of this code (never compare messages). */
export function hasCode(err: unknown, code: Code): boolean {
  return err instanceof StarlightError && err.code === code;
}

/**
 * Adds context once per layer while keeping code and kind: `withContext(err, `commit snapshot ${key}`)`.
 * Non-Starlight errors become SL_ERR_INTERNAL unless they are AbortErrors (SL_ERR_CANCELED).
 */
export function withContext(err: unknown, context: string, details?: Record<string, unknown>): StarlightError {
  if (err instanceof StarlightError) {
    const e = new StarlightError(err.code, `${context}: ${err.message}`, {
      cause: err.cause,
      details: { ...err.details, ...details },
    });
    e.stack = err.stack;
    return e;
  }
  const msg = err instanceof Error ? err.message : String(err);
  const code: Code = err instanceof Error && err.name === 'AbortError' ? 'SL_ERR_CANCELED' : 'SL_ERR_INTERNAL';
  return new StarlightError(code, `${context}: ${msg}`, { cause: err, details });
}

/** The kind of any error: a CodedError's own, else 'canceled' for AbortError, else 'internal'. */
export function kindOf(err: unknown): Kind {
  if (err instanceof CodedError) return err.kind;
  if (err instanceof Error && err.name === 'AbortError') return 'canceled';
  return 'internal';
}

/** errno number → name (ENOSPC, EIO…), for errors and logs at the native boundaries. */
const ERRNO_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(osConstants.errno).map(([name, n]) => [n, name]));

/** The name of errno `n` (ENOSPC…), or undefined for a number the platform does not define. */
export function errnoName(n: number): string | undefined {
  return ERRNO_NAMES.get(n);
}

/**
 * An Error shaped like node:fs's for errno `n` that a native call returned: `code` its name (EIO for
 * an unknown number), `errno` negative as node's, `path` when given; the message says what failed.
 */
export function errnoError(n: number, what: string, path?: string): NodeJS.ErrnoException {
  const code = errnoName(n) ?? 'EIO';
  return Object.assign(new Error(`${code}: ${what} failed (errno ${n})`), { code, errno: -n, ...(path === undefined ? {} : { path }) });
}
