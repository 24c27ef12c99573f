/**
 * Graduation (issue 12): once every file of an image's chain is present and verified, each of its
 * layers is materialised from the CAS as a plain directory in overlayfs' layer format (layer-dir.ts),
 * and NEW containers get the chain's layer dirs (top first) as their overlay lowerdir instead of the
 * lazy FUSE view (src/worker/snapshotter/mounts.ts): exactly what containerd's overlayfs snapshotter
 * mounts. Running containers stay on the view they mounted.
 *
 * Layout under the root:
 * - `layers/<chain id hex>[-<n>]/`: one layer's dir. It depends on the chain below it (implied dirs,
 *   whiteouts), so it is named by the layer's chain id, and chains with a common prefix (v1 and its
 *   update v2) share those layers' dirs. A layer dir may leave out files an upper layer of the chain
 *   that built it hides and whose content never arrived (layer-dir.ts); their paths are listed in
 *   `layers/<name>.omit`, and such a dir is used for another chain only if that chain hides them too
 *   (else that chain gets its own dir `<chain id hex>-<n>`).
 * - `chains/<top chain id hex>`: the dir names (lowest layer first) a graduated chain mounts.
 * A dir is built in `layers/new-*`, its `.omit` written, then renamed into place when complete and
 * synced; the chain's record is written (tmp + rename) once all its dirs exist. So a record means
 * "complete", and `open()` deletes half-built dirs and omit lists without a dir.
 * `<manifest hex>-<index>/` dirs at the root are whole-image trees of the earlier per-image layout:
 * no longer used for mounts (a container started before an upgrade may still run on one) and deleted
 * with their image (removeLegacy).
 *
 * Files are COPIED from the CAS (copy_file_range): a hardlink to a CAS blob would show the blob's
 * inode (its mode/owner/mtime/xattrs, and one inode for every path and image with that content);
 * this host's ext4 has no reflinks. The cost is counted in design-notes.md.
 *
 * Not here: when to graduate and freeing (ImageService), mounts (snapshotter), one layer's dir
 * (layer-dir.ts).
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { mergeLayers, mergeOnto } from '../../layers/merge.js';
import type { LayerToc, MergedTree } from '../../layers/toc.js';
import { nullLogger, type Logger } from '../../log.js';
import { materialiseLayer, type LayerSource, type Locate } from './layer-dir.js';

export type { Locate } from './layer-dir.js';

const run = promisify(execFile);

/** Prefix of dirs being built. */
const NEW_PREFIX = 'new-';
/** Suffix of a layer dir's list of omitted paths. */
const OMIT_SUFFIX = '.omit';

const hexOf = (chainId: string): string => chainId.replace(/^sha256:/, '');

/**
 * The graduated layer dirs under one root directory. Safe to call concurrently; graduating is
 * single-flight per chain (and layer dirs are built one chain at a time).
 */
export class Graduations {
  /** Top chain id → its layer dir names, lowest first (the `chains/` records). */
  private readonly chains = new Map<string, string[]>();
  /** Layer dir name → the paths it leaves out (none: not listed). */
  private readonly omits = new Map<string, string[]>();
  /** Graduations in flight, by top chain id. */
  private readonly inflight = new Map<string, Promise<string[]>>();
  /** Builds run one after another (dirs are chosen by what exists). */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly layersDir: string;
  private readonly chainsDir: string;

  constructor(
    readonly root: string,
    private readonly log: Logger = nullLogger,
  ) {
    this.layersDir = join(root, 'layers');
    this.chainsDir = join(root, 'chains');
  }

  /** Creates the dirs; loads the records; removes half-built dirs of an earlier run. */
  async open(): Promise<this> {
    for (const d of [this.root, this.layersDir, this.chainsDir]) await mkdir(d, { recursive: true, mode: 0o700 });
    const names = new Set(await readdir(this.layersDir));
    for (const name of names) {
      const omit = name.endsWith(OMIT_SUFFIX) ? name.slice(0, -OMIT_SUFFIX.length) : undefined;
      if (name.startsWith(NEW_PREFIX) || (omit !== undefined && !names.has(omit))) await rm(join(this.layersDir, name), { recursive: true, force: true });
      else if (omit !== undefined) this.omits.set(omit, JSON.parse(await readFile(join(this.layersDir, name), 'utf8')) as string[]);
    }
    for (const name of await readdir(this.chainsDir)) {
      if (name.startsWith(NEW_PREFIX)) await rm(join(this.chainsDir, name), { force: true });
      else this.chains.set(`sha256:${name}`, JSON.parse(await readFile(join(this.chainsDir, name), 'utf8')) as string[]);
    }
    return this;
  }

  /**
   * The lowerdir list of the chain `chain` (chain ids, lowest first): its layer dirs TOP FIRST,
   * or undefined unless it graduated.
   */
  layers(chain: readonly string[]): string[] | undefined {
    const top = chain[chain.length - 1];
    const names = top === undefined || this.inflight.has(top) ? undefined : this.chains.get(top);
    if (names === undefined || names.length !== chain.length) return undefined;
    return names.map((n) => join(this.layersDir, n)).reverse();
  }

  /**
   * Materialises the layers of `chain` (chain ids, lowest first; `tocs` their TOCs, same order),
   * reusing the layer dirs that fit; resolves with layers(chain).
   */
  graduate(chain: readonly string[], tocs: readonly LayerToc[], locate: Locate): Promise<string[]> {
    const top = chain[chain.length - 1]!;
    const done = this.layers(chain);
    if (done) return Promise.resolve(done);
    let p = this.inflight.get(top);
    if (!p) {
      const run = this.queue.then(() => this.build(chain, tocs, locate));
      this.queue = run.catch(() => undefined);
      p = run.finally(() => this.inflight.delete(top)).then(() => this.layers(chain)!);
      this.inflight.set(top, p);
    }
    return p;
  }

  private async build(chain: readonly string[], tocs: readonly LayerToc[], locate: Locate): Promise<void> {
    const started = Date.now();
    // Which layer shows each path of the chain's tree: a layer's entry anywhere else is hidden.
    const whole = mergeLayers(tocs);
    const shownBy = new Map(whole.entries.map((e) => [e.path, e.layer]));
    const names: string[] = [];
    let below: MergedTree | undefined;
    for (let i = 0; i < chain.length; i++) {
      const toc = tocs[i]!;
      // The top layer's is the whole chain's tree, merged above.
      const upTo = i === chain.length - 1 ? whole : ((below && mergeOnto(below, [toc])) ?? mergeLayers(tocs.slice(0, i + 1)));
      const hidden = (path: string): boolean => shownBy.get(path) !== i;
      const hex = hexOf(chain[i]!);
      // An existing dir of this layer fits unless it left out something this chain shows.
      let name = [...this.dirsOf(hex)].find((n) => (this.omits.get(n) ?? []).every(hidden));
      if (name === undefined) {
        name = this.freeName(hex);
        await this.buildLayer(name, { toc, below, upTo, hidden }, locate);
      }
      names.push(name);
      below = upTo;
    }
    const top = hexOf(chain[chain.length - 1]!);
    const tmp = join(this.chainsDir, `${NEW_PREFIX}${top}`);
    await writeFile(tmp, JSON.stringify(names));
    await rename(tmp, join(this.chainsDir, top));
    this.chains.set(chain[chain.length - 1]!, names);
    this.log.info('chain-graduated', { chainId: chain[chain.length - 1], layers: names, ms: Date.now() - started });
  }

  /** Names of the complete dirs of the layer whose chain id hex is `hex`. */
  private *dirsOf(hex: string): Iterable<string> {
    for (let n = 0; ; n++) {
      const name = n === 0 ? hex : `${hex}-${n}`;
      if (!existsSync(join(this.layersDir, name))) return;
      yield name;
    }
  }

  private freeName(hex: string): string {
    let n = 0;
    for (const _ of this.dirsOf(hex)) n++;
    return n === 0 ? hex : `${hex}-${n}`;
  }

  private async buildLayer(name: string, src: LayerSource, locate: Locate): Promise<void> {
    const started = Date.now();
    const tmp = await mkdtemp(join(this.layersDir, NEW_PREFIX));
    const dest = join(this.layersDir, name);
    try {
      const omitted = await materialiseLayer(src, locate, tmp);
      // The omit list before the dir: a dir never exists without it (a list without a dir is removed).
      if (omitted.length > 0) await writeFile(dest + OMIT_SUFFIX, JSON.stringify(omitted));
      // Durable before it counts as complete (a crash must not leave a renamed dir with unwritten
      // data), and its writeback done before new containers read it. `sync -f` = syncfs(2).
      await run('sync', ['-f', tmp]);
      await rename(tmp, dest);
      if (omitted.length > 0) this.omits.set(name, omitted);
      this.log.info('layer-graduated', { dir: dest, diffID: src.toc.diffID, entries: src.toc.entries.length, omitted: omitted.length, ms: Date.now() - started });
    } catch (err) {
      await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
      await rm(dest + OMIT_SUFFIX, { force: true }).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Deletes the records of graduated chains whose top chain id is not in `keep`, and every layer
   * dir no kept record names (also the leftovers of a graduation that failed half-way). Runs after
   * the graduations queued before it. `beforeRemove(dir, now)` is called for each dir, moved to
   * `now` meanwhile. Resolves with the dir names deleted.
   */
  prune(keep: ReadonlySet<string>, beforeRemove?: (dir: string, now: string) => Promise<unknown>): Promise<string[]> {
    // After the builds queued before it, and before any queued after it: a dir built for a chain
    // whose record is not written yet is never taken for unused.
    const run = this.queue.then(() => this.pruneNow(keep, beforeRemove));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async pruneNow(keep: ReadonlySet<string>, beforeRemove?: (dir: string, now: string) => Promise<unknown>): Promise<string[]> {
    for (const id of [...this.chains.keys()]) {
      if (keep.has(id)) continue;
      await rm(join(this.chainsDir, hexOf(id)), { force: true });
      this.chains.delete(id);
    }
    const used = new Set([...this.chains.values()].flat());
    const gone: string[] = [];
    for (const name of await readdir(this.layersDir).catch(() => [] as string[])) {
      if (name.startsWith(NEW_PREFIX) || name.endsWith(OMIT_SUFFIX) || used.has(name)) continue;
      // Out of the way first: a dir half emptied by beforeRemove is never found and reused (open()
      // deletes `new-*`).
      const trash = join(this.layersDir, `${NEW_PREFIX}gone-${name}`);
      await rename(join(this.layersDir, name), trash);
      await beforeRemove?.(join(this.layersDir, name), trash);
      await rm(trash, { recursive: true, force: true });
      await rm(join(this.layersDir, name + OMIT_SUFFIX), { force: true });
      this.omits.delete(name);
      gone.push(name);
    }
    return gone;
  }

  /**
   * Runs `fn` with no graduation or prune running meanwhile (in the same queue): `fn` may rely on
   * the layer dirs of every graduated chain staying as they are.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Paths the layer dir `dir` (as layers() names it) leaves out (see the file comment). */
  omitted(dir: string): readonly string[] {
    return this.omits.get(basename(dir)) ?? [];
  }

  /** Deletes the whole-image trees of `manifestDigest` left by the per-image layout. */
  async removeLegacy(manifestDigest: string): Promise<void> {
    const prefix = manifestDigest.replace(/^sha256:/, '') + '-';
    for (const name of await readdir(this.root).catch(() => [] as string[])) {
      if (name.startsWith(prefix)) await rm(join(this.root, name), { recursive: true, force: true });
    }
  }
}
