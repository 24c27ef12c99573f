/**
 * Startup priorities of the proxy: stores uploaded traces (metadata store) and answers "in which
 * order should the files of image M (for workload group G) go out", choosing which traces to merge
 * (docs/protocol.md "Merging traces"), first that wins:
 *   1. M's own traces of group G (only when a group is asked for);
 *   2. M's own traces of every group (the image's group-less order);
 *   3. traces of RELATED images of group G: the same repository (v1 of an update v2), or sharing a
 *      layer with M (a common base layer): their files count for M's files with the same path or
 *      the same content digest;
 *   4. related images' traces of every group.
 * A tier is used when it ranks at least one of M's files. Merged orders are memoized per
 * (image, group) until the next upload.
 *
 * Not here: the merge itself (priority.ts, pure), HTTP (trace-handlers.ts), the heuristic (planner.ts).
 */
import { LRUCache } from 'lru-cache';
import type { MergedTree } from '../image/toc.js';
import { parseReference } from '../oci/reference.js';
import type { OrderSource, TraceUploadBody } from '../protocol/traces.js';
import { mergeTraces, rankFiles, type RankedFile } from './priority.js';
import type { MetadataStore } from './store.js';

/** Newest traces kept per (image, group); older ones are deleted on upload. */
export const KEEP_TRACES_PER_IMAGE = 64;
/** Newest traces merged into one order (bounds the work of a merge: ≤ this × 65536 entries). */
export const MAX_MERGE_TRACES = 256;
/** Learned orders kept in memory, (image, group) pairs. */
const MEMO_ORDERS = 64;

export interface LearnedFiles {
  source: OrderSource;
  /** Traces merged. */
  traces: number;
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

const NONE: LearnedFiles = { source: 'none', traces: 0, files: [] };

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
  ) {}

  /** Stores a validated upload; returns the number of traces stored. */
  record(body: TraceUploadBody, now: number): number {
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
      ...(body.worker !== undefined ? { worker: body.worker } : {}),
    };
    const n = this.store.addTraces(meta, body.traces, [...layers].sort(), KEEP_TRACES_PER_IMAGE);
    this.memo.clear();
    return n;
  }

  /** The learned order of `target`'s files for `group` (see the file header); 'none' without traces. */
  order(target: OrderTarget, group?: string): LearnedFiles {
    const key = `${target.manifestDigest}|${group ?? ''}`;
    const hit = this.memo.get(key);
    if (hit !== undefined) return hit;
    const got = this.compute(target, group);
    this.memo.set(key, got);
    return got;
  }

  private compute(target: OrderTarget, group: string | undefined): LearnedFiles {
    let related: string[] | undefined;
    const relatedImages = (): string[] => (related ??= this.store.relatedTracedImages(target.manifestDigest, target.repository, target.diffIDs));
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
      const files = rankFiles(target.merged.entries, mergeTraces(traces));
      if (files.length > 0) return { source, traces: traces.length, files };
    }
    return NONE;
  }
}
