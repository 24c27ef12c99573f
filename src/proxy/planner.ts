/**
 * The delta planner (PURE: no I/O, no clock, no randomness; planSliced() only pauses between slices; a
 * path index per merged tree is kept, which changes no plan): given the target chain's TOCs and merged
 * tree, what the worker already has, and optional priorities, decides which layer TOCs go into the
 * header and which content items are sent, in which order. Identical input → identical plan.
 *
 * Rules (docs/protocol.md "Planning"):
 * - TOCs: every chain layer whose diffID the worker does not have, in chain order.
 * - Items: the distinct digests of regular files (and hardlinks) VISIBLE in the merged target tree.
 *   Files hidden by whiteouts/opaque dirs or overwritten by upper layers are never sent: no view of
 *   the image can read them. Zero-size files need no item. Digests the worker has are skipped; each
 *   digest is sent once (for its first path in plan order).
 * - Order: ranked entries first (rank map by digest or path, lower first; from startup traces), then the
 *   entrypoint executable (Entrypoint[0] or Cmd[0], resolved via the config's PATH and symlinks), then
 *   shared libraries (*.so, *.so.*), then small files under etc/ (≤ SMALL_ETC_BYTES), then the rest by
 *   providing layer (lowest first); ties broken by path bytes.
 *
 * Not here: merging layers (src/layers/merge.ts), reading the cache, encodings (the delta handler).
 */
import { runAtOnce, runSliced } from '../event-loop.js';
import type { LayerToc, MergedTree, TocEntry } from '../layers/toc.js';
import type { ImageConfig } from '../oci/types.js';

/** etc/ files up to this size (bytes) are sent early: programs read their config at startup. */
const SMALL_ETC_BYTES = 64 * 1024;
/** Docker's default PATH when the config has none. */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** Symlink hops followed when resolving the entrypoint (as Linux's MAXSYMLINKS). */
const MAX_SYMLINK_HOPS = 40;

export interface PlanInput {
  /** The target chain's TOCs, lowest layer first. */
  chain: LayerToc[];
  /** mergeLayers(chain). */
  merged: MergedTree;
  /** diffIDs of layers the worker holds (explicit `have` diffIDs plus the chains of `have` images). */
  haveDiffIDs: ReadonlySet<string>;
  /** Content digests the worker holds (see haveContent()). */
  haveDigests: ReadonlySet<string>;
  /** The target image config (for Entrypoint/Cmd/Env/WorkingDir); optional. */
  config?: ImageConfig;
  /** Startup priority: digest ('sha256:…') or path (no leading '/') → rank, lower = earlier. */
  rank?: ReadonlyMap<string, number>;
}

export interface PlannedItem {
  digest: string;
  /** Raw size in bytes. */
  size: number;
  /** First path (plan order) whose content this is. */
  path: string;
  /** diffID of the topmost chain layer holding `path` with this content (where to re-fetch it). */
  sourceDiffID: string;
}

export interface Plan {
  /** Chain layers the worker lacks, chain order: their TOCs go into the header. */
  layers: LayerToc[];
  items: PlannedItem[];
}

/**
 * Content the worker holds, for PlanInput.haveDigests: every regular-file digest of each `have` layer
 * TOC (a worker claiming a diffID asserts it holds ALL that layer's contents), plus the visible files
 * of each `have` image's merged tree (what a Starlight pull of that image delivered).
 */
export function haveContent(haveLayers: readonly LayerToc[], haveTrees: readonly MergedTree[]): Set<string> {
  const out = new Set<string>();
  const add = (e: TocEntry): void => {
    if ((e.type === 'reg' || e.type === 'hardlink') && e.digest !== undefined && e.size > 0) out.add(e.digest);
  };
  for (const l of haveLayers) l.entries.forEach(add);
  for (const t of haveTrees) t.entries.forEach(add);
  return out;
}

const CLASS_RANKED = 0;
const CLASS_ENTRYPOINT = 1;
const CLASS_SHLIB = 2;
const CLASS_ETC = 3;
const CLASS_REST = 4;

/** Shared library file names (*.so, *.so.N…). */
export const SHLIB_RE = /\.so(\.[0-9][^/]*)?$/;

interface Candidate {
  entry: TocEntry;
  cls: number;
  rank: number;
  layer: number;
  key: Buffer;
}

export function plan(input: PlanInput): Plan {
  return runAtOnce(planSteps(input));
}

/** plan() cut into slices with the event loop running between them (src/event-loop.ts). Same plan. */
export function planSliced(input: PlanInput): Promise<Plan> {
  return runSliced(planSteps(input));
}

/** Entries handled between two pause points of planSteps. */
const STEP_ENTRIES = 512;

/**
 * Path → entry of the merged trees planned (resolveEntrypoint's lookups), kept while a tree is: the
 * plan cache (session/plan-cache.ts) plans one memoized tree for each `have` set of an update, and
 * rebuilding this map of every entry was a fifth of such a plan (issue 19, session 11).
 */
const pathIndexes = new WeakMap<MergedTree, Map<string, TocEntry>>();

function* planSteps(input: PlanInput): Generator<void, Plan, undefined> {
  let n = 0;
  const { chain } = input;
  const layers = chain.filter((l) => !input.haveDiffIDs.has(l.diffID));
  let byPath = pathIndexes.get(input.merged);
  if (byPath === undefined) {
    byPath = new Map<string, TocEntry>();
    for (const e of input.merged.entries) byPath.set(e.path, e);
    pathIndexes.set(input.merged, byPath);
    yield;
  }

  // Built when first needed (an update's few items need the maps of the layers they come from, not
  // of the whole chain): each layer's path → digest, and the topmost layer providing each regular
  // file path (for hardlinks, and entries that do not name their layer).
  const digestsByLayer: Map<string, string | undefined>[] = [];
  function* digestsOf(i: number): Generator<void, Map<string, string | undefined>, undefined> {
    let m = digestsByLayer[i];
    if (m === undefined) {
      m = new Map<string, string | undefined>();
      for (const e of chain[i]!.entries) {
        m.set(e.path, e.digest);
        if (++n % STEP_ENTRIES === 0) yield;
      }
      digestsByLayer[i] = m;
    }
    return m;
  }
  let layerOfPath: Map<string, number> | undefined;
  function* layerOf(): Generator<void, Map<string, number>, undefined> {
    if (layerOfPath === undefined) {
      const m = new Map<string, number>();
      for (let i = 0; i < chain.length; i++) {
        for (const e of chain[i]!.entries) {
          if (e.type === 'reg') m.set(e.path, i);
          if (++n % STEP_ENTRIES === 0) yield;
        }
      }
      layerOfPath = m;
    }
    return layerOfPath;
  }

  const entrypoint = resolveEntrypoint(input.config, byPath);
  const cands: Candidate[] = [];
  for (const e of input.merged.entries) {
    if ((e.type !== 'reg' && e.type !== 'hardlink') || e.digest === undefined || e.size === 0) continue;
    if (input.haveDigests.has(e.digest)) continue;
    const srcPath = e.type === 'hardlink' && e.linkname !== undefined ? e.linkname : e.path;
    // Providing layer: a hardlink's content comes from its target's layer; a merged entry knows its
    // own (a hardlink whose target an upper layer replaced is a 'reg' of the lower layer, and no
    // layer has a 'reg' at its path: without `e.layer` it sorted with the top layer, behind its files).
    const layer =
      (e.type === 'hardlink' ? (yield* layerOf()).get(srcPath) : undefined) ?? e.layer ?? (yield* layerOf()).get(e.path) ?? chain.length - 1;
    const r = input.rank?.get(e.digest) ?? input.rank?.get(e.path);
    let cls: number;
    if (r !== undefined) cls = CLASS_RANKED;
    else if (entrypoint !== undefined && (e.path === entrypoint || srcPath === entrypoint)) cls = CLASS_ENTRYPOINT;
    else if (SHLIB_RE.test(e.path)) cls = CLASS_SHLIB;
    else if (e.path.startsWith('etc/') && e.size <= SMALL_ETC_BYTES) cls = CLASS_ETC;
    else cls = CLASS_REST;
    cands.push({ entry: e, cls, rank: r ?? 0, layer, key: Buffer.from(e.path, 'utf8') });
    if (++n % STEP_ENTRIES === 0) yield;
  }
  yield;
  cands.sort(
    (a, b) => a.cls - b.cls || a.rank - b.rank || (a.cls === CLASS_REST ? a.layer - b.layer : 0) || Buffer.compare(a.key, b.key),
  );
  yield;

  const seen = new Set<string>();
  const items: PlannedItem[] = [];
  for (const c of cands) {
    const d = c.entry.digest!;
    if (seen.has(d)) continue;
    seen.add(d);
    const srcPath = c.entry.type === 'hardlink' && c.entry.linkname !== undefined ? c.entry.linkname : c.entry.path;
    // The topmost layer at or below the providing one holding srcPath with digest d (where to
    // re-fetch it); else the providing layer.
    const top = Math.min(c.layer, chain.length - 1);
    let source = chain[Math.max(0, top)]?.diffID ?? '';
    for (let i = top; i >= 0; i--) {
      if ((yield* digestsOf(i)).get(srcPath) === d) {
        source = chain[i]!.diffID;
        break;
      }
    }
    items.push({ digest: d, size: c.entry.size, path: c.entry.path, sourceDiffID: source });
    if (++n % STEP_ENTRIES === 0) yield;
  }
  return { layers, items };
}

/** Path (merged-tree form) of the regular file the container executes first, if it can be found. */
function resolveEntrypoint(config: ImageConfig | undefined, byPath: ReadonlyMap<string, TocEntry>): string | undefined {
  const c = config?.config;
  if (c === undefined) return undefined;
  const argv0 = c.Entrypoint && c.Entrypoint.length > 0 ? c.Entrypoint[0] : c.Cmd?.[0];
  if (argv0 === undefined || argv0 === '') return undefined;
  const candidates: string[] = [];
  if (argv0.includes('/')) {
    candidates.push(argv0.startsWith('/') ? argv0 : `${c.WorkingDir ?? '/'}/${argv0}`);
  } else {
    const env = c.Env?.find((v) => v.startsWith('PATH='));
    const path = env !== undefined ? env.slice(5) : DEFAULT_PATH;
    for (const dir of path.split(':')) if (dir !== '') candidates.push(`${dir}/${argv0}`);
  }
  for (const p of candidates) {
    const r = resolvePath(p, byPath);
    if (r !== undefined && byPath.get(r)?.type === 'reg') return r;
    if (r !== undefined && byPath.get(r)?.type === 'hardlink') return r;
  }
  return undefined;
}

/** Resolves an absolute or root-relative path through symlinks in the tree; undefined if it dangles. */
export function resolvePath(p: string, byPath: ReadonlyMap<string, TocEntry>): string | undefined {
  let todo = p.split('/').filter((s) => s !== '' && s !== '.');
  const done: string[] = [];
  let hops = 0;
  while (todo.length > 0) {
    const comp = todo.shift()!;
    if (comp === '..') {
      done.pop();
      continue;
    }
    const cur = [...done, comp].join('/');
    const e = byPath.get(cur);
    if (e === undefined) return undefined;
    if (e.type === 'symlink' && e.linkname !== undefined) {
      if (++hops > MAX_SYMLINK_HOPS) return undefined;
      const target = e.linkname.split('/').filter((s) => s !== '' && s !== '.');
      if (e.linkname.startsWith('/')) done.length = 0;
      todo = [...target, ...todo];
      continue;
    }
    done.push(comp);
  }
  return done.join('/');
}
