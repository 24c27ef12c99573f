/**
 * Early items: whole small contents a first-contact delta sends before its header, while the proxy
 * is still indexing the image (docs/protocol.md "Early items", docs/design-notes.md "First contact",
 * session 7). The index pass is CPU-bound for ~1.5–2 s on a cold python-web and the link is idle
 * meanwhile; contents the container will likely read first fill that time.
 *
 * An EarlyFeed belongs to one image being indexed (IndexerService creates it, single-flight with the
 * image): layer passes offer() each staged file that earlyRank() ranks (bytes copied as they pass),
 * and every delta waiting on the image takes them with next(), best rank first, each digest once per
 * stream. Before the merged tree exists no startup prediction does, so the rank is a cheap per-path
 * guess from the image config and the scripts it runs (EarlyRank). Bounds: contents ≤ EARLY_MAX_ITEM_BYTES (one EARLY frame),
 * at most EARLY_FEED_BYTES raw per feed (a better-ranked content evicts the worst one). Each content
 * is encoded once per feed (brotli q1, off the main thread), shared by the streams.
 *
 * Not here: writing frames (protocol/encoder.ts), when a stream stops sending them (handlers.ts).
 */
import { promisify } from 'node:util';
import { brotliCompress, constants as zc, type BrotliOptions } from 'node:zlib';
import { EARLY_HEAD_BYTES, MAX_CONTENT_FRAME_BYTES, type Encoding } from '../protocol/constants.js';
import type { ImageConfig } from '../oci/types.js';
import { MAX_USEFUL_RATIO, MIN_COMPRESS_BYTES } from './content-cache.js';

/** Largest content sent early (raw bytes): its identity form must fit one EARLY frame. */
export const EARLY_MAX_ITEM_BYTES = MAX_CONTENT_FRAME_BYTES - EARLY_HEAD_BYTES - 64;
/** Raw bytes one feed holds at most (~2.5 s of a 100 Mbit/s link at q1's ratio). */
export const EARLY_FEED_BYTES = 24 * 1024 * 1024;
/** Brotli quality of early items (as send-time encoding: item-source.ts SEND_TIME_BROTLI_QUALITY). */
const EARLY_BROTLI_QUALITY = 1;

const brotli = promisify(brotliCompress) as (buf: Buffer, opts: BrotliOptions) => Promise<Buffer>;

/** One content offered early. */
export interface EarlyCandidate {
  digest: string;
  size: number;
  path: string;
  rank: number;
  /** Its encoded form (computed once, on first use). */
  encoded(): Promise<{ encoding: Encoding; data: Buffer }>;
}

/** Scripts up to this size (bytes) among the first-tier files are read for the commands they run. */
const SCRIPT_MAX_BYTES = 64 * 1024;
/** System library directories whose shared libraries are worth sending early (not their subdirectories). */
const LIB_DIR = /^(usr\/(local\/)?)?lib(64|32)?(\/[a-z0-9_]+-linux-[a-z0-9_]+)?$/;
const BIN_DIR = /(^|\/)s?bin$/;
const SHARED_LIB = /\.so(\.[0-9]+)*$/;

/**
 * Rank of a file for early sending (lower first), or undefined for files not worth it. Tiers, each
 * ordered by size within (a tier's small files first):
 * 0 the dynamic loader, libc, ld.so.cache, the commands the config's Entrypoint/Cmd name (in a bin
 *   dir, or as a path), and the commands and paths named by such a command when it is a script
 *   (learnScript: /app/start.sh runs bash, /app/run, cat…) — every start needs them;
 * 1 shared libraries named after such a command (libpython3.11.so for python3), files of WorkingDir
 *   and of the entrypoint's own directory (the application);
 * 2 an interpreter's top-level compiled modules (`lib/python3.X/__pycache__/*.pyc`, one package deep);
 * 3 other shared libraries directly in the system lib dirs (not gconv/, perl/…) up to 1 MiB.
 */
export class EarlyRank {
  private readonly names = new Set<string>();
  private readonly paths = new Set<string>();
  private readonly homes: string[] = [];

  constructor(config: ImageConfig) {
    const c = config.config ?? {};
    this.learnWords([...(c.Entrypoint ?? []), ...(c.Cmd ?? [])].join(' '));
    const first = (c.Entrypoint ?? c.Cmd ?? [])[0];
    const workdir = (c.WorkingDir ?? '').replace(/^\/+|\/+$/g, '');
    if (workdir !== '') this.homes.push(`${workdir}/`);
    if (first?.startsWith('/') === true && first.lastIndexOf('/') > 0) this.homes.push(first.slice(1, first.lastIndexOf('/') + 1));
  }

  rank(path: string, size: number): number | undefined {
    if (size > EARLY_MAX_ITEM_BYTES) return undefined;
    const slash = path.lastIndexOf('/');
    const base = path.slice(slash + 1);
    const dir = slash < 0 ? '' : path.slice(0, slash);
    if (this.firstTier(path, base, dir)) return tier(0, size);
    const isLib = SHARED_LIB.test(base) && LIB_DIR.test(dir);
    if (isLib && [...this.names].some((n) => n.replace(/[0-9.]+$/, '').length >= 3 && base.startsWith(`lib${n.replace(/[0-9.]+$/, '')}`))) return tier(1, size);
    if (size <= 1024 * 1024 && this.homes.some((h) => path.startsWith(h))) return tier(1, size);
    const py = /(^|\/)lib\/python3\.[0-9]+\/(.*)$/.exec(dir);
    if (py !== null && base.endsWith('.pyc') && !py[2]!.includes('site-packages') && py[2]!.split('/').length <= 2 && py[2]!.endsWith('__pycache__')) {
      return tier(2, size);
    }
    if (isLib && size <= 1024 * 1024) return tier(3, size);
    return undefined;
  }

  /** A first-tier file's bytes: when it is a script (`#!`), the commands and paths it names join the first tier. */
  learnScript(path: string, raw: Buffer): void {
    if (raw.length > SCRIPT_MAX_BYTES || raw[0] !== 0x23 || raw[1] !== 0x21) return;
    const slash = path.lastIndexOf('/');
    if (!this.firstTier(path, path.slice(slash + 1), slash < 0 ? '' : path.slice(0, slash))) return;
    this.learnWords(raw.toString('latin1'));
  }

  private firstTier(path: string, base: string, dir: string): boolean {
    if (base.startsWith('ld-linux') || base.startsWith('ld-musl') || base === 'libc.so.6' || path === 'etc/ld.so.cache') return true;
    return this.paths.has(path) || (BIN_DIR.test(dir) && this.names.has(base));
  }

  private learnWords(text: string): void {
    for (const w of text.match(/[A-Za-z0-9_./+-]+/g) ?? []) {
      if (w.startsWith('-')) continue;
      const base = w.slice(w.lastIndexOf('/') + 1);
      if (base === '' || base.length > 255) continue;
      this.names.add(base);
      if (w.startsWith('/')) this.paths.add(w.slice(1));
    }
  }
}

function tier(t: number, size: number): number {
  return t * 2 ** 32 + size;
}

interface Held extends EarlyCandidate {
  raw: Buffer | undefined;
  enc: Promise<{ encoding: Encoding; data: Buffer }> | undefined;
}

export class EarlyFeed {
  private rank: EarlyRank | undefined;
  private readonly held = new Map<string, Held>();
  private heldBytes = 0;
  private closed = false;
  private waiters: (() => void)[] = [];
  /** The image's manifest digest, once resolved (the response's docker-content-digest). */
  manifestDigest: string | undefined;

  constructor(private readonly maxBytes = EARLY_FEED_BYTES) {}

  /** The image's config is known (resolved): files can be ranked from now on. */
  configure(config: ImageConfig, manifestDigest: string): void {
    this.rank = new EarlyRank(config);
    this.manifestDigest = manifestDigest;
  }

  /** Rank of a file of this image, or undefined when it is not sent early (or the config is unknown). */
  wants(path: string, size: number): number | undefined {
    return this.closed ? undefined : this.rank?.rank(path, size);
  }

  /** A staged content's raw bytes: held (within the byte bound) for the streams waiting. */
  offer(digest: string, path: string, raw: Buffer): void {
    const rank = this.wants(path, raw.length);
    if (rank === undefined || this.held.has(digest)) return;
    this.rank!.learnScript(path, raw);
    while (this.heldBytes + raw.length > this.maxBytes) {
      let worst: Held | undefined;
      for (const h of this.held.values()) if (worst === undefined || h.rank > worst.rank) worst = h;
      if (worst === undefined || worst.rank <= rank) return;
      this.held.delete(worst.digest);
      this.heldBytes -= worst.size;
    }
    const h: Held = {
      digest,
      size: raw.length,
      path,
      rank,
      raw,
      enc: undefined,
      encoded: () => (h.enc ??= encodeEarly(h)),
    };
    this.held.set(digest, h);
    this.heldBytes += raw.length;
    this.wake();
  }

  /**
   * The image's passes ended: no more offers, and next() returns undefined from now on. What is left
   * goes in the header's plan, in the predicted order: bytes written now would sit in the socket
   * buffers in front of the header (one BDP and more on a WAN) while the proxy plans.
   */
  close(): void {
    this.closed = true;
    this.wake();
  }

  /**
   * The best-ranked held content not in `sent`; waits for one while the feed is open. Undefined once
   * the feed is closed, or when `stop` aborts.
   */
  async next(sent: ReadonlySet<string>, stop: AbortSignal): Promise<EarlyCandidate | undefined> {
    for (;;) {
      if (stop.aborted || this.closed) return undefined;
      let best: Held | undefined;
      for (const h of this.held.values()) if (!sent.has(h.digest) && (best === undefined || h.rank < best.rank)) best = h;
      if (best !== undefined) return best;
      await new Promise<void>((resolve) => {
        const done = (): void => {
          stop.removeEventListener('abort', done);
          resolve();
        };
        this.waiters.push(done);
        stop.addEventListener('abort', done, { once: true });
      });
    }
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

/** brotli q1 when it pays (as send-time encoding), else identity; the raw copy is dropped once encoded. */
async function encodeEarly(h: Held): Promise<{ encoding: Encoding; data: Buffer }> {
  const raw = h.raw!;
  if (raw.length < MIN_COMPRESS_BYTES) return { encoding: 'identity', data: raw };
  const enc = await brotli(raw, { params: { [zc.BROTLI_PARAM_QUALITY]: EARLY_BROTLI_QUALITY, [zc.BROTLI_PARAM_SIZE_HINT]: raw.length } });
  const out: { encoding: Encoding; data: Buffer } = enc.length <= raw.length * MAX_USEFUL_RATIO ? { encoding: 'br', data: enc } : { encoding: 'identity', data: raw };
  h.raw = undefined;
  return out;
}
