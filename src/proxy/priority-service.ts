/**
 * Startup priorities of the proxy: stores uploaded traces (metadata store) and answers "in which
 * order should the files of image M (for workload group G) go out" (docs/protocol.md "Planning",
 * "Merging traces"). The order is the concatenation, each file at its first place, of:
 *   A. LEARNED: the first of these trace tiers that ranks at least one of M's files:
 *      1. M's own traces of group G (only when a group is asked for);
 *      2. M's own traces of every group (the image's group-less order);
 *      3. traces of images of the same repository (v1 of an update v2) of group G;
 *      4. those images' traces of every group;
 *   B. PREDICTED CORE: what M's config executes, its interpreters, loader and libraries, and the files
 *      every process start reads (startup/predict.ts; computed once per image by prepare());
 *   C. CONFIRMED REST: the files of D below that traces of OTHER traced images (at most
 *      MAX_MERGE_TRACES newest) read, in their learned order — matched by content digest, and by path
 *      only where the trace entry's layer is one of M's layers — bounded: files of at most
 *      PRIOR_PROMOTE_MAX_FILE_BYTES, PRIOR_PROMOTE_BYTES in all (a library every other program loads,
 *      such as libcrypto, says little about M: session 6 measured 5.9 MB of such files promoted
 *      ahead of python-web's own modules);
 *   D. PREDICTED REST: directory and program-home guesses of the prediction (those not in C);
 *   E. PRIOR: the other files those traces read, after the whole prediction, less
 *   F. shared libraries in a directory where M's own libraries were found (by the ELF analysis) that
 *      M's programs do not link — another program's closure — last.
 * So other images' traces refine the order of M's own prediction but never add bytes in front of any
 * of it: no other image's trace can push M's entrypoint, loader, libraries or program home down
 * (session 5: with them between B and D, python-web and redis sent 5–9 MB more before ready).
 * Merged orders are memoized per (image, group) until the next upload.
 *
 * Not here: the merge itself (priority.ts, pure), HTTP (trace-handlers.ts), the prediction
 * (startup-service.ts, startup/), the heuristic for files still unranked (planner.ts).
 */
import { LRUCache } from 'lru-cache';
import { parentPath } from '../layers/paths.js';
import type { MergedTree } from '../layers/toc.js';
import { parseReference } from '../oci/reference.js';
import type { OrderSource, TraceUploadBody } from '../protocol/traces.js';
import { SHLIB_RE } from './planner.js';
import { type MergeTrace, mergeTraces, rankFiles, type RankedFile } from './priority.js';
import type { PredictedFile, Prediction } from './startup/predict.js';
import type { PredictTarget } from './startup-service.js';
import type { ReplicaSync } from './replica-sync.js';
import { KEEP_GROUPS_PER_IMAGE, KEEP_TRACES_PER_IMAGE, KEEP_TRACES_PER_UPLOADER, type MetadataStore, type TraceMeta } from './store.js';

/** Newest traces merged into one order (bounds the work of a merge: ≤ this × 65536 entries). */
const MAX_MERGE_TRACES = 256;
/** Learned orders kept in memory, (image, group) pairs. */
const MEMO_ORDERS = 64;
/** C: largest predicted-rest file that other images' traces may move up, bytes. */
export const PRIOR_PROMOTE_MAX_FILE_BYTES = 256 * 1024;
/** C: bytes other images' traces may move up in all (~0.17 s at 100 Mbit/s). */
export const PRIOR_PROMOTE_BYTES = 2 * 1024 * 1024;

export interface LearnedFiles {
  source: OrderSource;
  /** Traces merged into the learned part (A). */
  traces: number;
  /** Traces of other images merged into the prior part (C). */
  priorTraces: number;
  /** Ranked files of the image, in order (rank 0 first). */
  files: RankedFile[];
}

/** The image an order is asked for. */
export interface OrderTarget {
  manifestDigest: string;
  /** registry/repository (ImageRecord.repository). */
  repository: string;
  diffIDs: readonly string[];
  merged: MergedTree;
}

const NONE: LearnedFiles = { source: 'none', traces: 0, priorTraces: 0, files: [] };

/** The predictions the service combines with traces (StartupService satisfies it). */
export interface StartupPredictions {
  /** The prediction of an image if computed (cheap, synchronous). */
  get(manifestDigest: string): Prediction | undefined;
  /** Computes it once per image. */
  ensure(t: PredictTarget): Promise<Prediction>;
}

/** registry/repository of a trace's ref ('' when it does not parse). Refs without a host name `defaultRegistry`. */
export function repositoryOf(ref: string, defaultRegistry: string): string {
  const first = ref.split('/')[0]!;
  const hasHost = ref.includes('/') && (/[.:]/.test(first) || first === 'localhost');
  try {
    const r = parseReference(hasHost ? ref : `${defaultRegistry}/${ref}`);
    return `${r.registry}/${r.repository}`;
  } catch {
    return '';
  }
}

export class PriorityService {
  private readonly memo = new LRUCache<string, LearnedFiles>({ max: MEMO_ORDERS });

  constructor(
    private readonly store: MetadataStore,
    /** Registry host for trace refs without one (the proxy's first --registry). */
    private readonly defaultRegistry: string,
    /** Startup predictions (none: traces only). */
    private readonly startup?: StartupPredictions,
    /** Replicas sharing a database (--db): traces are stored there and copied in (replica-sync.ts). */
    private readonly replicas?: ReplicaSync,
  ) {}

  /** True when `manifestDigest` needs no prepare() (predicted already, or no predictor). */
  prepared(manifestDigest: string): boolean {
    return this.startup === undefined || this.startup.get(manifestDigest) !== undefined;
  }

  /**
   * Index-time step: computes the image's startup prediction once (later calls: a map lookup). Call
   * it after indexing and before order(); order() without it uses traces only. Never fails: a
   * prediction error leaves the image with its traces and the planner's heuristic.
   */
  async prepare(t: PredictTarget): Promise<void> {
    if (this.prepared(t.manifestDigest)) return;
    await this.startup!.ensure(t).then(
      () => this.memo.clear(),
      () => undefined,
    );
  }

  /**
   * Stores a validated upload where every replica sees it (the shared store with --db, else this
   * store); returns the number of traces stored. `uploader` identifies who sent it (authenticated
   * token or peer address, never the body's own claim): its traces are bounded and, in a merge, weigh
   * as one source. (The shared PostgreSQL store bounds per image and group only.)
   */
  async accept(body: TraceUploadBody, now: number, uploader?: string): Promise<number> {
    if (this.replicas === undefined) return this.record(body, now, uploader);
    const { meta, layers } = this.traceMeta(body, now, uploader);
    const n = await this.replicas.shared.addTraces(meta, body.traces, layers, KEEP_TRACES_PER_IMAGE);
    await this.refresh();
    return n;
  }

  /** Copies traces uploaded to other replicas (no-op without --db); call before order(). */
  async refresh(): Promise<void> {
    if (this.replicas !== undefined && (await this.replicas.syncTraces()) > 0) this.memo.clear();
  }

  private traceMeta(body: TraceUploadBody, now: number, uploader: string | undefined): { meta: TraceMeta; layers: string[] } {
    const known = this.store.manifest(body.manifestDigest);
    const layers = new Set<string>(known?.diffIDs ?? []);
    for (const t of body.traces) for (const e of t.entries) if (e.layer !== undefined) layers.add(e.layer);
    const meta = {
      manifestDigest: body.manifestDigest,
      repository: known?.repository ?? repositoryOf(body.ref, this.defaultRegistry),
      ref: body.ref,
      platform: body.platform,
      receivedAt: now,
      ...(body.group !== undefined ? { group: body.group } : {}),
      ...(uploader !== undefined ? { worker: uploader } : body.worker !== undefined ? { worker: body.worker } : {}),
    };
    return { meta, layers: [...layers].sort() };
  }

  /** Stores a validated upload in this replica's store; returns the number of traces stored. */
  record(body: TraceUploadBody, now: number, uploader?: string): number {
    const { meta, layers } = this.traceMeta(body, now, uploader);
    const n = this.store.addTraces(meta, body.traces, layers, {
      perGroup: KEEP_TRACES_PER_IMAGE,
      ...(uploader !== undefined ? { perWorker: KEEP_TRACES_PER_UPLOADER } : {}),
      groups: KEEP_GROUPS_PER_IMAGE,
    });
    this.memo.clear();
    return n;
  }

  /** The order of `target`'s files for `group` (see the file header); 'none' without traces or prediction. */
  order(target: OrderTarget, group?: string): LearnedFiles {
    const predicted = this.startup?.get(target.manifestDigest);
    const key = `${target.manifestDigest}|${group ?? ''}|${predicted !== undefined ? 'p' : ''}`;
    const hit = this.memo.get(key);
    if (hit !== undefined) return hit;
    const got = this.compute(target, group, predicted);
    this.memo.set(key, got);
    return got;
  }

  private compute(target: OrderTarget, group: string | undefined, predicted: Prediction | undefined): LearnedFiles {
    const learned = this.learned(target, group);
    const prior = this.prior(target, learned.images);
    if (learned.files.length === 0 && prior.files.length === 0 && (predicted === undefined || predicted.files.length === 0)) return NONE;
    const out: RankedFile[] = [];
    const seen = new Set<string>();
    const push = (f: Omit<RankedFile, 'rank'>): void => {
      if (seen.has(f.path)) return;
      seen.add(f.path);
      out.push({ ...f, rank: out.length });
    };
    for (const f of learned.files) push({ ...f, signal: 'trace' });
    const pf = predicted?.files ?? [];
    const predictedFile = (f: PredictedFile): Omit<RankedFile, 'rank'> => ({ path: f.path, digest: f.digest, size: f.size, signal: f.signal, ...(f.via !== undefined ? { via: f.via } : {}) });
    for (const f of pf) if (f.core) push(predictedFile(f));
    // C: the rest files other images' traces confirm, in their learned order (placed by the prior trace;
    // `via` keeps what the prediction said of them).
    const rest = new Map(pf.filter((f) => !f.core).map((f) => [f.path, f]));
    let promote = PRIOR_PROMOTE_BYTES;
    for (const f of prior.files) {
      const r = rest.get(f.path);
      if (r === undefined || r.size > PRIOR_PROMOTE_MAX_FILE_BYTES || r.size > promote || seen.has(r.path)) continue;
      promote -= r.size;
      push({ ...predictedFile(r), signal: 'prior-trace' });
    }
    for (const f of rest.values()) push(predictedFile(f));
    // The ELF analysis knows the link-time closure: another image's trace of a shared library in the
    // same library directory that this image's programs do not link is that other program's, not ours.
    const libDirs = new Set(pf.filter((f) => f.signal === 'needed-lib').map((f) => parentPath(f.path)));
    const foreignLib = (f: RankedFile): boolean => SHLIB_RE.test(f.path) && libDirs.has(parentPath(f.path)) && !seen.has(f.path);
    for (const f of prior.files) if (!foreignLib(f)) push({ ...f, signal: 'prior-trace' });
    for (const f of prior.files) push({ ...f, signal: 'prior-trace' });
    return { source: learned.files.length > 0 ? learned.source : 'predicted', traces: learned.traces, priorTraces: prior.traces, files: out };
  }

  /** Part A (see the file header), with the images whose traces it used. */
  private learned(target: OrderTarget, group: string | undefined): LearnedFiles & { images: string[] } {
    let related: string[] | undefined;
    // Same repository only: images merely sharing a layer count as PRIOR (bounded below the prediction).
    const relatedImages = (): string[] => (related ??= this.store.relatedTracedImages(target.manifestDigest, target.repository, []));
    const own = (): string[] => [target.manifestDigest];
    const tiers: [OrderSource, () => string[], string | undefined][] = [];
    if (group !== undefined) tiers.push(['image-group', own, group]);
    tiers.push(['image', own, undefined]);
    if (group !== undefined) tiers.push(['related-group', relatedImages, group]);
    tiers.push(['related', relatedImages, undefined]);
    for (const [source, images, g] of tiers) {
      const ids = images();
      if (ids.length === 0) continue;
      const traces = this.store.traces(ids, g, MAX_MERGE_TRACES);
      if (traces.length === 0) continue;
      const files = rankFiles(target.merged.entries, mergeTraces(traces.map((t) => ({ entries: t.entries, ...(t.worker !== undefined ? { source: t.worker } : {}) }))));
      if (files.length > 0) return { source, traces: traces.length, priorTraces: 0, files, images: ids };
    }
    return { ...NONE, images: [] };
  }

  /**
   * Part C: traces of every other traced image; an entry counts for M's file of the same content
   * digest, or of the same path when the entry's layer is one of M's layers (a shared base layer).
   */
  private prior(target: OrderTarget, exclude: readonly string[]): { traces: number; files: RankedFile[] } {
    const skip = new Set([target.manifestDigest, ...exclude]);
    const others = this.store.tracedImages().filter((m) => !skip.has(m));
    if (others.length === 0) return { traces: 0, files: [] };
    const traces = this.store.traces(others, undefined, MAX_MERGE_TRACES);
    const mine = new Set(target.diffIDs);
    // An entry of a layer M does not have keeps only its digest ('\0' can never be a path of M).
    const masked: MergeTrace[] = traces.map((t) => ({
      entries: t.entries.map((e) => ({ path: e.layer !== undefined && mine.has(e.layer) ? e.path : `\0${e.path}`, ...(e.digest !== undefined ? { digest: e.digest } : {}) })),
      ...(t.worker !== undefined ? { source: t.worker } : {}),
    }));
    return { traces: traces.length, files: rankFiles(target.merged.entries, mergeTraces(masked)) };
  }
}
