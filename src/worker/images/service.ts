/**
 * The daemon's image service: lazy pulls (delta header from the proxy, content streaming into the
 * CAS), the containerd records of a pulled image (manifest + config blobs with gc labels, the
 * image record, one committed remote snapshot per layer created through containerd's snapshots
 * API under a lease — stargz's remote-snapshot flow), and the RemoteLayerResolver the snapshotter
 * asks on Prepare (our own view label, or CRI's remote-snapshot labels) and on mount.
 *
 * Views: the remote id of a layer is `<manifest digest>/<index>`; its view is the merged tree of the
 * chain's TOCs 0..index (one flattened view per chain, docs/design.md) over the ContentTracker.
 * Everything needed to rebuild a view is on disk (records.ts + LayerStore), so views remount after a
 * restart; an incomplete image resumes streaming (pinned to its manifest digest) when the service opens.
 *
 * Not here: HTTP (api/), the snapshotter, wire formats (protocol/), containerd gRPC (containerd-client.ts).
 */
import { join } from 'node:path';
import { StarlightError } from '../../errors.js';
import { SHA256_DIGEST_PATTERN } from '../../oci/digest.js';
import { yieldToLoop } from '../../event-loop.js';
import { mergeLayers } from '../../layers/merge.js';
import type { MergedTree } from '../../layers/toc.js';
import { nullLogger, type Logger } from '../../log.js';
import type { DeltaHeader, DeltaImage } from '../../protocol/types.js';
import type { Relocations } from '../cas/store.js';
import type { InodeTable } from '../fs/inodes.js';
import type { ViewRequest } from '../fs/view.js';
import type { LayerStore } from '../pull/layer-store.js';
import { PhaseLog, PhaseTimer, type PhaseRecord, type Phases } from '../phases.js';
import type { Puller } from '../pull/puller.js';
import type { RemoteLayer, RemoteLayerRequest, RemoteLayerResolver } from '../snapshotter/remote.js';
import { LABEL_SNAPSHOT_REF, LABEL_STARLIGHT_VIEW } from '../snapshotter/labels.js';
import type { ContentTracker } from '../stream/content-tracker.js';
import type { DeltaReceiver } from '../stream/receiver.js';
import { chainIds, imageName, parseRemoteId, pinnedRef, remoteIdFor } from './chain.js';
import { ContainerdClient } from './containerd-client.js';
import type { Graduations } from './graduation.js';
import type { ImageRecord, ImageRecords } from './records.js';

/** The config digest the manifest of `header` names, if any (checked against the config by header-check.ts). */
function configDigestOf(header: DeltaImage): string | undefined {
  try {
    const manifest = JSON.parse(Buffer.from(header.manifest).toString('utf8')) as { config?: { digest?: unknown } };
    return typeof manifest.config?.digest === 'string' ? manifest.config.digest : undefined;
  } catch {
    return undefined;
  }
}

/** A pull's independent containerd calls in flight (askContainerd). */
interface Asked {
  /** Manifest and config written. */
  blobs: Promise<void>;
  /** Every layer's snapshot Prepared in chain order (taken lazily, or already in containerd). */
  snapshots: Promise<void>;
  /** Stops Prepares not sent yet (the pull failed; what was prepared goes with the lease). */
  stop(): void;
}

/** gc label on a manifest naming its config (containerd images/handlers.go SetChildrenLabels). */
const LABEL_GC_CONFIG = 'containerd.io/gc.ref.content.config';
/** gc label prefix on a config naming the snapshot of its top layer (containerd unpacker). */
const LABEL_GC_SNAPSHOT_PREFIX = 'containerd.io/gc.ref.snapshot.';
/**
 * An image pulled less than this long ago is never released, even without snapshots: its remote
 * snapshots may still be being created (`starlight pull`, CRI Prepare). ms; default 5000.
 */
const DEFAULT_RELEASE_GRACE_MS = 5_000;
/**
 * A complete image graduates no sooner than this after its pull, ms (issue 19): graduation copies
 * every file of the image (8 at a time on node's thread pool), and an update's small stream completes
 * within the first container's start, whose view mount and snapshot calls would wait behind it.
 */
const DEFAULT_GRADUATE_DELAY_MS = 3_000;
/**
 * How often relocation is tried again while some graduated content still has its blob, ms: a dropped
 * view is followed within this; cheap (a flag) when there is nothing to do.
 */
const RELOCATE_RETRY_MS = 5_000;
/** Blobs relocated per log append (and per check that no view started). */
const RELOCATE_BATCH = 512;
/** Shortest delay of a release retry (an image still pulling is checked again this often), ms. */
const RELEASE_RETRY_MIN_MS = 1_000;

export interface ImageServiceOptions {
  puller: Puller;
  tracker: ContentTracker;
  layers: LayerStore;
  records: ImageRecords;
  /** containerd's socket, for `pull` (records in containerd). */
  containerdAddress: string;
  /** The name containerd knows our proxy snapshotter by; default 'starlight'. */
  snapshotterName?: string;
  /** See DEFAULT_RELEASE_GRACE_MS; ms, default 5000. */
  releaseGraceMs?: number;
  /**
   * Mounts the lazy view of committed snapshot `key` (a chain id) ahead of the first container on
   * it, in the background (the snapshotter's warmView); default none (views mount on first Mounts).
   */
  warmView?: (key: string) => void;
  /**
   * Builds the inode table of a tree (fs/inodes.ts over the tracker), in slices with the event loop
   * running: given, a pull builds its top view's table while containerd is asked, and the view's
   * mount uses it (issue 19); default none (the mount builds it).
   */
  buildTable?: (tree: MergedTree) => Promise<InodeTable>;
  /** Told about view mounts and container starts (startup traces); default none. */
  observer?: ViewObserver;
  /**
   * Where complete images graduate to plain directories for new containers (issue 12); default
   * none (every container runs on the lazy view).
   */
  graduations?: Graduations;
  /** See DEFAULT_GRADUATE_DELAY_MS; ms, default 3000. */
  graduateDelayMs?: number;
  /**
   * One copy per content (issue 12): the CAS may serve content from the graduated layer dirs' files
   * and drop its blobs (relocateContent); default none (both copies kept).
   */
  relocations?: Relocations;
  /**
   * True when no lazy view is mounted, being mounted or held for adoption (their inode tables name
   * blob paths, which relocation deletes); default: never true (nothing is relocated).
   */
  viewsIdle?: () => boolean;
  log?: Logger;
}

/** What the trace recorder needs to know about views (src/worker/trace/recorder.ts implements it). */
export interface ViewObserver {
  /** The view `remoteId` of image `image` (chain `tree`) was mounted now. */
  viewMounted(remoteId: string, image: TracedImage, tree: MergedTree): void;
  /** A container started on view `remoteId` now (first Mounts of active snapshot `key`). */
  containerStarted(remoteId: string, key: string): void;
  /** First access of `path` in view `remoteId`, `sinceMountMs` after its mount (FUSE addon). */
  accessed(remoteId: string, path: string, sinceMountMs: number): void;
}

/** The image a traced view shows. */
export interface TracedImage {
  ref: string;
  manifestDigest: string;
  platform: string;
}

export interface PullRequest {
  ref: string;
  /** containerd namespace; default 'default'. */
  namespace?: string;
  platform?: string;
}

export interface PullResult {
  name: string;
  manifestDigest: string;
  chainIds: string[];
  /** Items of the stream and how many this worker already had (dedup/update). */
  items: number;
  have: number;
  /** Where the daemon's time went, ms (issue 19): puller phases, records, containerd calls. */
  phases?: Phases;
}

export interface ImageStatus {
  ref: string;
  name: string;
  manifestDigest: string;
  complete: boolean;
  /** Content still arriving, or the stream ended and its completion is being recorded (not yet `complete`). */
  streaming: boolean;
  files: number;
  filesPresent: number;
  bytes: number;
  bytesPresent: number;
  wireBytes: number;
  /**
   * When this daemon's stream of the image ended, its last content landed and verified (ms since the
   * epoch): the transfer's end, before its completion is made durable and recorded (`complete`).
   * Absent while streaming and for an image restored at start.
   */
  streamEndedAt?: number;
  /**
   * When this daemon sent the stream's first delta request (ms since the epoch): with streamEndedAt,
   * the transfer alone, as one GET of the same delta takes (bench download-only). Absent as streamEndedAt.
   */
  streamRequestedAt?: number;
  /**
   * The top layer's tree is materialised: new containers run on a plain overlay lowerdir (issue 12).
   * Absent when graduation is off.
   */
  graduated?: boolean;
  /**
   * Every content its graduated layers hold as files is served from them, its blob dropped (one copy
   * per content, issue 12). Absent when relocation is off or the image did not graduate.
   */
  relocated?: boolean;
}

/** An image the daemon knows: its record, header and (while streaming) receiver. */
interface Known {
  rec: ImageRecord;
  header: DeltaHeader;
  chain: string[];
  receiver?: DeltaReceiver;
  /** The chain's merged tree as the pull built it: the top view's tree (not merged again). */
  tree?: MergedTree;
  /** Puller phases of the pull that brought this header (none after a restart). */
  phases?: Phases;
  /** Header and record on disk (written while containerd is asked; `pull` awaits it). */
  persisted?: Promise<void>;
  /** The top view's inode table, being built by `pull` for the view's first mount (taken by viewRequest). */
  table?: Promise<InodeTable | undefined>;
  /**
   * The stream ended and its completion is being recorded (content and TOCs made durable, then the
   * record): status() still says `streaming`, so that no poller takes this for a stream that
   * stopped incomplete.
   */
  completing?: boolean;
  /**
   * Settles when the stream's end has been dealt with (completion recorded, or the failure logged):
   * release() waits for it, so that a completion still flushing cannot mark layers complete or write
   * the record after release() withdrew them and deleted the content (a pull's only).
   */
  settled?: Promise<void>;
}

export class ImageService implements RemoteLayerResolver {
  private readonly log: Logger;
  private readonly snapshotter: string;
  private readonly byManifest = new Map<string, Known>();
  /** Pulls in flight by normalized name (single-flight for concurrent CRI Prepares). */
  private readonly pulling = new Map<string, Promise<Known>>();
  private readonly trees = new Map<string, MergedTree>();
  /**
   * Chains of pulls whose header's image was checked but whose pull has not finished (manifest →
   * chain ids): their layers' Prepares go out while the TOCs are checked and the chain merged
   * (issue 19), and resolve() must answer them before the image is known.
   */
  private readonly checkedChains = new Map<string, string[]>();
  /** Timings of the last pulls and view mounts (`GET /v1/status`, the bench's phase breakdown). */
  readonly timings = new PhaseLog();
  /** containerd connections, opened on the first `pull` (namespaces share them). */
  private containerd: ContainerdClient | undefined;
  /** Remote ids whose view was requested (for status). */
  readonly viewsServed = new Set<string>();
  /** Remote ids whose own image is gone, served by another image's same chain (servingImage). */
  private readonly servedBy = new Map<string, string>();
  private closed = false;
  /** Graduations waiting for DEFAULT_GRADUATE_DELAY_MS, by remote id (cleared at close()). */
  private readonly graduateTimers = new Map<string, NodeJS.Timeout>();
  /** Aborts pulls still waiting for their header (a resume while the proxy is down) at close(). */
  private readonly closing = new AbortController();
  /** pull() and viewRequest() calls in progress: they may build inode tables naming blob paths. */
  private busy = 0;
  /** The relocation batch in flight: a view's table is built after it (see relocateContent). */
  private relocating: Promise<unknown> = Promise.resolve();
  private relocationRunning = false;
  /** Some graduated content may still have its blob (relocateContent has work). */
  private relocationPending = true;
  /** Images whose graduated content relocateContent went through completely. */
  private readonly relocatedImages = new Set<string>();
  private readonly relocateTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: ImageServiceOptions) {
    this.log = opts.log ?? nullLogger;
    this.snapshotter = opts.snapshotterName ?? 'starlight';
    if (opts.relocations && opts.graduations && opts.viewsIdle) {
      this.relocateTimer = setInterval(() => void this.relocateContent(), RELOCATE_RETRY_MS);
      this.relocateTimer.unref();
    }
  }

  /** Loads the records; resumes the streams of incomplete images in the background. */
  async open(): Promise<this> {
    // containerd's protos are parsed now, not in the first pull (issue 19). Not connected yet:
    // containerd may start after the daemon, and a failed early connect fails the first calls.
    setImmediate(() => {
      if (!this.closed) this.containerdClient();
    });
    for (const rec of await this.opts.records.all()) {
      const header = await this.restorable(rec);
      if (!header) continue;
      const known: Known = { rec, header, chain: chainIds(header.diffIDs) };
      this.byManifest.set(rec.manifestDigest, known);
      if (rec.complete) this.graduate(known); // no-op when done; finishes one a restart interrupted
      if (!rec.complete) {
        this.startPull(pinnedRef(rec.ref, rec.manifestDigest), rec.ref, header.platform, true).then(
          () => this.log.info('image-pull-resumed', { ref: rec.ref, manifest: rec.manifestDigest }),
          (err: unknown) => this.log.warn('image-pull-resume-failed', { ref: rec.ref, err }),
        );
      }
    }
    return this;
  }

  /**
   * The header of a record found at open, if it and every TOC of its chain are readable; else the
   * record is dropped (a power cut may have left them empty: records.ts) and logged, and the daemon
   * starts without the image. Reads the chain's TOCs now (LayerStore caches them for the views).
   */
  private async restorable(rec: ImageRecord): Promise<DeltaHeader | undefined> {
    let header: DeltaHeader | undefined;
    let err: unknown;
    try {
      header = await this.opts.records.header(rec.manifestDigest);
    } catch (e) {
      if (!(e instanceof StarlightError && e.code === 'SL_ERR_WORKER_STATE_CORRUPT')) throw e;
      err = e;
    }
    const missingTocs: string[] = [];
    for (const d of header?.diffIDs ?? []) if ((await this.opts.layers.toc(d)) === undefined) missingTocs.push(d);
    if (header && missingTocs.length === 0) return header;
    await this.opts.records.remove(rec.manifestDigest);
    const reason = err ? 'header unreadable' : header ? 'TOCs missing or unreadable' : 'header missing';
    this.log.warn('image-record-dropped', {
      ref: rec.ref,
      manifest: rec.manifestDigest,
      reason,
      ...(missingTocs.length > 0 ? { missingTocs } : {}),
      ...(err ? { err } : {}),
      next: 'the daemon starts without this image; pull it again (`starlight pull`) before running containers of it',
    });
    return undefined;
  }

  /** Header in, TOCs stored, record written; content keeps streaming. Single-flight per name. */
  private startPull(requestRef: string, recordRef: string, platform?: string, resume = false, onImageChecked?: (image: DeltaImage) => void): Promise<Known> {
    const key = imageName(requestRef);
    let p = this.pulling.get(key);
    if (!p) {
      // onImageChecked: only the caller that starts the pull hears it (one joining it records later).
      p = this.doPull(requestRef, recordRef, platform, resume, onImageChecked).finally(() => this.pulling.delete(key));
      this.pulling.set(key, p);
    }
    return p;
  }

  private async doPull(requestRef: string, recordRef: string, platform: string | undefined, resume: boolean, onImageChecked?: (image: DeltaImage) => void): Promise<Known> {
    if (this.closed) throw new StarlightError('SL_ERR_SNAPSHOT_PRECONDITION', 'the image service is closed');
    // The record's write (persisted, below) before the completion's syncfs, which then covers it: a
    // small update's stream ends while the pull still answers. (A pull that throws in puller.pull()
    // never starts that flush: nothing waits on `durableAfter` then.)
    let recorded!: () => void;
    const durableAfter = new Promise<void>((r) => (recorded = r));
    const pulled = await this.opts.puller.pull(requestRef, platform, { resume, signal: this.closing.signal, durableAfter, ...(onImageChecked ? { onImageChecked } : {}) });
    const { header, receiver } = pulled;
    if (this.closed) {
      recorded();
      receiver.close();
      throw new StarlightError('SL_ERR_SNAPSHOT_PRECONDITION', 'the image service is closed');
    }
    const prev = this.byManifest.get(header.manifestDigest);
    prev?.receiver?.close();
    const rec: ImageRecord = { ref: recordRef, name: imageName(recordRef), manifestDigest: header.manifestDigest, complete: false, pulledAt: Date.now() };
    // Header and TOCs before record (a record needs them after a restart); written while the caller
    // records the image in containerd, and awaited before the pull answers.
    const persisted = Promise.all([pulled.stored, this.opts.records.putHeader(header)]).then(() => this.opts.records.put(rec));
    persisted.catch((err: unknown) => this.log.warn('image-record-write-failed', { ref: recordRef, manifest: header.manifestDigest, err }));
    persisted.finally(recorded).catch(() => undefined);
    const known: Known = { rec, header, chain: chainIds(header.diffIDs), receiver, tree: pulled.tree, phases: pulled.phases, persisted };
    this.trees.delete(remoteIdFor(header.manifestDigest, header.diffIDs.length - 1));
    this.byManifest.set(header.manifestDigest, known);
    known.settled = receiver.done.then(
      async () => {
        known.completing = true;
        await persisted;
        this.log.info('delta-complete', { ref: recordRef, manifest: header.manifestDigest, ...receiver.progress() });
        // `complete` claims content, TOCs and header are on disk: written only after the content's
        // sync and the TOCs' flush (pulled.durable) and a flush after the header's write (one
        // syncfs with the puller's, batched: lazy-pull.ts), layer-store.ts "the rule".
        await Promise.all([pulled.durable, this.opts.layers.flush()]);
        // Released meanwhile (its record removed) or pulled again (the new pull records it).
        if (this.byManifest.get(header.manifestDigest) !== known) {
          this.log.info('image-completion-not-recorded', { ref: recordRef, manifest: header.manifestDigest, reason: 'released or pulled again while its stream ended' });
          return;
        }
        rec.complete = true;
        await this.opts.records.put(rec);
        this.graduate(known);
      },
      (err: unknown) => {
        if (!this.closed) this.log.warn('delta-failed', { ref: recordRef, manifest: header.manifestDigest, err });
      },
    )
      .catch((err: unknown) => this.log.warn('image-record-complete-failed', { ref: recordRef, manifest: header.manifestDigest, err, next: 'the record stays incomplete: a restart resumes the stream' }))
      .finally(() => (known.completing = false));
    return known;
  }

  /**
   * `starlight pull`: pulls lazily and records the image in containerd (namespace) so that
   * `ctr run --snapshotter starlight NAME` starts it while content still streams.
   */
  pull(req: PullRequest): Promise<PullResult> {
    return this.notRelocating(() => this.pullNow(req));
  }

  /**
   * Runs `fn` (which may build inode tables naming blob paths) after the relocation batch in flight,
   * and keeps relocation from starting another until it is done (relocateContent).
   */
  private async notRelocating<T>(fn: () => Promise<T>): Promise<T> {
    this.busy++;
    try {
      await this.relocating;
      return await fn();
    } finally {
      this.busy--;
    }
  }

  private async pullNow(req: PullRequest): Promise<PullResult> {
    const at = Date.now();
    const t = new PhaseTimer();
    const cd = this.containerdClient().inNamespace(req.namespace ?? 'default');
    // The lease's round trip overlaps the proxy's answer; dropped if the pull fails.
    const lease = cd.createLease();
    lease.catch(() => undefined); // its failure is the containerd step's (withLease awaits it)
    // containerd's blobs and snapshot Prepares go out as soon as the image is checked — from the
    // proxy's IMAGE frame while it still indexes (issue 10) or plans (an update, issue 19 session 11),
    // else from the header (an older proxy) while the puller checks the TOCs and merges the chain
    // (issue 19); dropped with the lease on failure.
    let early: { manifestDigest: string; asked: Asked } | undefined;
    const onImageChecked = (h: DeltaImage): void => {
      const configDigest = configDigestOf(h);
      if (configDigest === undefined) return; // reported below
      const leased = lease.then((id) => cd.leased(id));
      const chain = chainIds(h.diffIDs);
      this.checkedChains.set(h.manifestDigest, chain);
      const asked = this.askContainerd(leased, h, chain, configDigest, req.ref);
      early = { manifestDigest: h.manifestDigest, asked };
    };
    let known: Known;
    try {
      known = await this.startPull(req.ref, req.ref, req.platform, false, onImageChecked);
    } catch (err) {
      early?.asked.stop();
      lease.then((id) => cd.dropLease(id), () => undefined);
      throw err;
    } finally {
      if (early) this.checkedChains.delete(early.manifestDigest);
    }
    t.lap('pull');
    const { header, chain } = known;
    const name = imageName(req.ref);
    const configDigest = configDigestOf(header);
    if (!configDigest) {
      early?.asked.stop();
      lease.then((id) => cd.dropLease(id), () => undefined);
      throw new StarlightError('SL_ERR_PROTOCOL_MALFORMED', `manifest ${header.manifestDigest} of ${req.ref} has no config descriptor`);
    }
    await cd.withLease(async (c) => {
      t.lap('containerd-lease');
      if (early && early.manifestDigest !== header.manifestDigest) early.asked.stop();
      const asked = early?.manifestDigest === header.manifestDigest ? early.asked : this.askContainerd(Promise.resolve(c), header, chain, configDigest, req.ref);
      // The top view's inode table, built in slices while containerd answers (the calls are out first).
      await yieldToLoop();
      this.prebuildTable(known, req.ref);
      try {
        await asked.snapshots;
      } catch (err) {
        asked.stop();
        throw err;
      }
      t.lap('containerd-snapshots');
      await asked.blobs;
      t.lap('containerd-blobs');
      const imaged = c.putImage(name, { mediaType: header.manifestMediaType, digest: header.manifestDigest, size: header.manifest.length });
      // The view the first container will need: its snapshot exists now, so it is mounted while the
      // image record is written, the pull answers and the caller starts `ctr run` (issue 19). A turn
      // later: its FUSE mount holds this loop for a few ms, after the record's request has left.
      const top = chain[chain.length - 1]!;
      setImmediate(() => this.opts.warmView?.(top));
      await imaged;
      t.lap('containerd-image');
    }, lease);
    t.lap('containerd-lease');
    await known.persisted;
    t.lap('records');
    const have = header.items.filter((i) => this.opts.tracker.has(i.digest)).length;
    const phases = { ...prefixed(known.phases, 'pull.'), ...t.phases };
    this.record({ op: 'pull', subject: req.ref, at, totalMs: t.total(), phases });
    this.log.info('image-pulled', { ref: req.ref, name, manifest: header.manifestDigest, namespace: req.namespace ?? 'default', phases });
    return { name, manifestDigest: header.manifestDigest, chainIds: chain, items: header.items.length, have, phases };
  }

  /**
   * The containerd calls of a pull, on `client` once it is there (leased): the two blobs, and the
   * snapshot of every layer Prepared in chain order, without a Stat first: containerd answers
   * already-exists for a layer it has (an update's shared layers; no call into our snapshotter) as
   * for one our snapshotter provides lazily. Sent as soon as the header's image is checked, so
   * they overlap the TOC check and the merge (issue 19); resolve() answers them from checkedChains.
   */
  private askContainerd(client: Promise<ContainerdClient>, header: DeltaImage, chain: string[], configDigest: string, ref: string): Asked {
    const blobs = client.then((c) =>
      Promise.all([
        c.writeBlob(`starlight-${configDigest}`, header.config, configDigest, { [LABEL_GC_SNAPSHOT_PREFIX + this.snapshotter]: chain[chain.length - 1]! }),
        c.writeBlob(`starlight-${header.manifestDigest}`, header.manifest, header.manifestDigest, { [LABEL_GC_CONFIG]: configDigest }),
      ]).then(() => undefined),
    );
    let stopped = false;
    const snapshots = client.then(async (c) => {
      // Layers containerd has already (an update's base): one parallel round of Stats, read
      // transactions that do not queue behind the blob commits as a Prepare does; Prepares from the
      // first layer it lacks (each waits for the one below: containerd needs the parent).
      const known = await Promise.all(chain.map((id) => c.statSnapshot(this.snapshotter, id).then((info) => info?.kind === 'COMMITTED')));
      let k = 0;
      while (k < chain.length && known[k]) k++;
      let parent = k > 0 ? chain[k - 1]! : '';
      for (const id of chain.slice(k)) {
        if (stopped) throw new StarlightError('SL_ERR_CANCELED', `pull of ${ref} failed before layer ${id} was prepared`, { details: { ref, chainId: id } });
        const key = `extract-${process.hrtime.bigint()} ${id}`;
        const remote = await c.prepareSnapshot(this.snapshotter, key, parent, { [LABEL_SNAPSHOT_REF]: id, [LABEL_STARLIGHT_VIEW]: header.manifestDigest });
        if (!remote) {
          await c.removeSnapshot(this.snapshotter, key).catch(() => undefined);
          throw new StarlightError('SL_ERR_PULL_NOT_LAZY', `snapshotter ${this.snapshotter} did not take layer ${id} of ${ref} lazily`, { details: { ref, chainId: id } });
        }
        parent = id;
      }
    });
    // Awaited by the pull, or dropped with it when it fails (the lease goes, and gc takes what was written).
    blobs.catch(() => undefined);
    snapshots.catch(() => undefined);
    return { blobs, snapshots, stop: () => (stopped = true) };
  }

  /**
   * Starts building the top view's inode table for its first mount (buildTable). A tree the table
   * refuses leaves none: the mount builds it again and reports the error where it counts.
   */
  private prebuildTable(known: Known, ref: string): void {
    const build = this.opts.buildTable;
    if (!build || !known.tree || known.table) return;
    known.table = build(known.tree).catch((err: unknown) => {
      this.log.warn('view-table-prebuild-failed', { ref, manifest: known.rec.manifestDigest, err });
      return undefined;
    });
  }

  /** containerd connections, made once per service (namespaces share them). */
  private containerdClient(): ContainerdClient {
    return (this.containerd ??= new ContainerdClient(this.opts.containerdAddress, 'default'));
  }

  private record(r: PhaseRecord): void {
    this.timings.push(r);
    this.log.info(`${r.op}-phases`, { subject: r.subject, totalMs: r.totalMs, phases: r.phases });
  }

  // ---- RemoteLayerResolver ----

  async resolve(req: RemoteLayerRequest): Promise<RemoteLayer | null> {
    const { hints } = req;
    let known: Known | undefined;
    if (hints.view !== undefined) {
      known = this.byManifest.get(hints.view);
      // A pull's early Prepare (askContainerd): the header's image is checked, the image not known yet.
      const checked = known ? undefined : this.checkedChains.get(hints.view);
      if (checked) return checked.includes(hints.chainId) ? { remoteId: remoteIdFor(hints.view, checked.indexOf(hints.chainId)) } : null;
    } else if (hints.imageRef !== undefined) {
      // CRI: pull through the proxy on the first layer's Prepare; later layers find the record.
      known = [...this.byManifest.values()].find((k) => k.rec.name === imageName(hints.imageRef!) && (!hints.manifestDigest || k.rec.manifestDigest === hints.manifestDigest));
      known ??= await this.startPull(hints.imageRef, hints.imageRef);
    }
    if (!known) return null;
    const index = known.chain.indexOf(hints.chainId);
    if (index < 0) return null;
    return { remoteId: remoteIdFor(known.rec.manifestDigest, index) };
  }

  viewRequest(remoteId: string, opts?: { chainId?: string }): Promise<ViewRequest> {
    return this.notRelocating(() => this.viewRequestNow(remoteId, opts?.chainId));
  }

  /**
   * The image serving `remoteId`: its own, or — when that image is not pulled (a pull that failed
   * after its early Prepares left the snapshot, and the next pull of the same layers found it as
   * already-exists) — another pulled image whose chain has `chainId` at that index: the same
   * chain ID is the same layers, so the same tree. Remembered, so release() keeps that image.
   */
  private servingImage(remoteId: string, chainId: string | undefined): { known: Known; index: number } | undefined {
    const { manifestDigest, index } = parseRemoteId(remoteId);
    const own = this.byManifest.get(manifestDigest);
    if (own && index < own.header.diffIDs.length) return { known: own, index };
    if (chainId === undefined) return undefined;
    for (const known of this.byManifest.values()) {
      if (known.chain[index] !== chainId) continue;
      this.servedBy.set(remoteId, known.rec.manifestDigest);
      this.log.info('view-served-by-chain', { remoteId, chainId, manifest: known.rec.manifestDigest, ref: known.rec.ref });
      return { known, index };
    }
    return undefined;
  }

  private async viewRequestNow(remoteId: string, chainId?: string): Promise<ViewRequest> {
    const serving = this.servingImage(remoteId, chainId);
    if (!serving) {
      throw new StarlightError('SL_ERR_IMAGE_NOT_PULLED', `no pulled image has view ${remoteId}`, { details: { remoteId, ...(chainId ? { chainId } : {}) } });
    }
    const { known, index } = serving;
    const at = Date.now();
    const t = new PhaseTimer();
    const tree = await this.treeOf(known, remoteIdFor(known.rec.manifestDigest, index), index, t);
    // The pull's table is for the top view's first mount (a remount builds one with what is here then).
    const building = index === known.header.diffIDs.length - 1 && tree === known.tree ? known.table : undefined;
    delete known.table;
    const table = await building;
    if (building) t.lap('table-wait');
    this.viewsServed.add(remoteId);
    const obs = this.opts.observer;
    const record: PhaseRecord = { op: 'view', subject: remoteId, at, totalMs: 0, phases: t.phases };
    let firstRead = true;
    return {
      tree,
      ...(table ? { table } : {}),
      content: this.opts.tracker,
      onMounted: (mount) => {
        t.add(mount);
        record.totalMs = t.total();
        this.record(record);
      },
      onFirstAccess: (path, ms) => {
        if (firstRead) {
          // Kept in the record already listed (status shows it); not logged a second time.
          firstRead = false;
          record.phases['first-access-after-mount'] = Math.round(ms * 10) / 10;
        }
        obs?.accessed(remoteId, path, ms);
      },
    };
  }

  /** The merged tree of `known`'s chain 0..index (cached; the top one is the pull's own). */
  private async treeOf(known: Known, remoteId: string, index: number, t?: PhaseTimer): Promise<MergedTree> {
    let tree = this.trees.get(remoteId);
    if (!tree && index === known.header.diffIDs.length - 1 && known.tree) tree = known.tree;
    if (tree) {
      // The top view's tree is the one the pull merged (or a remount's).
      t?.lap('tree-reused');
    } else {
      tree = mergeLayers(await this.opts.puller.chainTocs({ ...known.header, diffIDs: known.header.diffIDs.slice(0, index + 1) }));
      t?.lap('merge');
    }
    this.trees.set(remoteId, tree);
    return tree;
  }

  /**
   * Materialises the layers of a complete image in the background (issue 12); containers created
   * afterwards use them (materialised()). A failure is logged; they keep using the view.
   */
  private graduate(known: Known): void {
    const g = this.opts.graduations;
    if (!g || this.closed || !known.rec.complete) return;
    const remoteId = remoteIdFor(known.rec.manifestDigest, known.header.diffIDs.length - 1);
    if (g.layers(known.chain) || this.graduateTimers.has(remoteId)) return;
    const wait = known.rec.pulledAt + (this.opts.graduateDelayMs ?? DEFAULT_GRADUATE_DELAY_MS) - Date.now();
    if (wait > 0) {
      const timer = setTimeout(() => {
        this.graduateTimers.delete(remoteId);
        if (this.byManifest.get(known.rec.manifestDigest) === known) this.graduate(known);
      }, wait);
      this.graduateTimers.set(remoteId, timer);
      return;
    }
    void (async () => {
      const at = Date.now();
      const t = new PhaseTimer();
      const tocs = await this.opts.puller.chainTocs(known.header);
      t.lap('tocs');
      try {
        await g.graduate(known.chain, tocs, (d) => this.opts.tracker.locate(d));
      } finally {
        // Released while its layers were built: release() pruned before the last ones existed.
        if (this.byManifest.get(known.rec.manifestDigest) !== known) await this.pruneGraduated();
      }
      t.lap('materialise');
      this.record({ op: 'graduate', subject: remoteId, at, totalMs: t.total(), phases: t.phases });
      this.relocationPending = true;
      void this.relocateContent();
    })().catch((err: unknown) => this.log.warn('image-graduation-failed', { ref: known.rec.ref, remoteId, err }));
  }

  /** RemoteLayerResolver: the graduated layer dirs (top first) of `remoteId`'s chain, once all exist. */
  materialised(remoteId: string): string[] | undefined {
    const g = this.opts.graduations;
    if (!g) return undefined;
    const { manifestDigest, index } = parseRemoteId(remoteId);
    const known = this.byManifest.get(manifestDigest);
    return known?.rec.complete ? g.layers(known.chain.slice(0, index + 1)) : undefined;
  }

  viewMounted(remoteId: string): void {
    const obs = this.opts.observer;
    const { manifestDigest } = parseRemoteId(remoteId);
    const known = this.byManifest.get(manifestDigest);
    const tree = this.trees.get(remoteId);
    if (!obs || !known || !tree) return;
    obs.viewMounted(remoteId, { ref: known.rec.ref, manifestDigest, platform: known.header.platform }, tree);
  }

  activeMounted(remoteId: string, key: string): void {
    this.opts.observer?.containerStarted(remoteId, key);
  }

  /**
   * Frees images no remaining snapshot shows (issue 5): their records, the 'complete' markers of
   * their layers (first, so the next `have` never claims deleted content) and every CAS digest of
   * their chains that no kept image needs. Images pulled within the grace period or still pulling
   * are kept. Content that is arriving right now is left alone.
   */
  async release(liveRemoteIds: ReadonlySet<string>): Promise<{ retryAfterMs?: number }> {
    const liveManifests = new Set<string>();
    for (const id of liveRemoteIds) {
      const m = new RegExp(`^(${SHA256_DIGEST_PATTERN})/`).exec(id);
      if (m) liveManifests.add(m[1]!);
      const substitute = this.servedBy.get(id);
      if (substitute) liveManifests.add(substitute);
    }
    const grace = this.opts.releaseGraceMs ?? DEFAULT_RELEASE_GRACE_MS;
    const now = Date.now();
    const unused = [...this.byManifest.values()].filter((k) => !liveManifests.has(k.rec.manifestDigest));
    const drop = unused.filter((k) => !this.pulling.has(k.rec.name) && now - k.rec.pulledAt >= grace);
    // Unused images kept for now (within the grace, or pulling): ask to be called again.
    const kept = unused.filter((k) => !drop.includes(k));
    const retry = kept.length > 0 ? { retryAfterMs: Math.max(RELEASE_RETRY_MIN_MS, ...kept.map((k) => k.rec.pulledAt + grace - now)) } : {};
    if (drop.length === 0) return retry;
    for (const k of drop) {
      this.byManifest.delete(k.rec.manifestDigest);
      k.receiver?.close();
      for (const id of [...this.trees.keys()]) if (id.startsWith(k.rec.manifestDigest + '/')) this.trees.delete(id);
      delete k.tree;
      delete k.table;
      for (const id of [...this.viewsServed]) if (id.startsWith(k.rec.manifestDigest + '/')) this.viewsServed.delete(id);
    }
    // A stream that ended just now may still be flushing before it marks its layers complete (the
    // puller) and writes its record: that must come before the markers are withdrawn below, not after.
    await Promise.all(drop.map((k) => k.settled));
    const keepDigests = await this.liveDigests(() => true);
    const keepLayers = new Set([...this.byManifest.values()].flatMap((k) => k.header.diffIDs));
    const { tracker, layers, records } = this.opts;
    const unusedLayers = [...new Set(drop.flatMap((k) => k.header.diffIDs))].filter((d) => !keepLayers.has(d));
    await layers.unmarkComplete(unusedLayers);
    let digests = 0;
    let bytes = 0;
    for (const k of drop) {
      const tocs = await this.opts.puller.chainTocs(k.header).catch(() => []);
      for (const toc of tocs) {
        for (const e of toc.entries) {
          if (!e.digest || keepDigests.has(e.digest) || tracker.arriving(e.digest) || !tracker.has(e.digest)) continue;
          bytes += (await tracker.store.info(e.digest))?.size ?? 0;
          await tracker.store.delete(e.digest);
          digests++;
        }
      }
      await records.remove(k.rec.manifestDigest);
      await this.opts.graduations?.removeLegacy(k.rec.manifestDigest);
    }
    // Layer dirs no kept image's chain has (v1 and v2 share their common layers' dirs).
    await this.pruneGraduated();
    // Last: the loop above reads the dropped chains' TOCs.
    await layers.removeTocs(unusedLayers);
    this.log.info('image-content-freed', { manifests: drop.map((k) => k.rec.manifestDigest), refs: drop.map((k) => k.rec.ref), digests, bytes, tocs: unusedLayers.length });
    return retry;
  }

  // ---- status and cleanup ----

  status(): ImageStatus[] {
    return [...this.byManifest.values()].map(({ rec, header, receiver, completing }) => {
      let filesPresent = 0;
      let bytes = 0;
      let bytesPresent = 0;
      for (const it of header.items) {
        bytes += it.size;
        if (this.opts.tracker.has(it.digest)) {
          filesPresent++;
          bytesPresent += it.size;
        }
      }
      const p = receiver?.progress();
      return {
        ref: rec.ref,
        name: rec.name,
        manifestDigest: rec.manifestDigest,
        complete: rec.complete,
        streaming: (p !== undefined && !p.done) || completing === true,
        files: header.items.length,
        filesPresent,
        bytes,
        bytesPresent,
        wireBytes: p?.wireBytes ?? 0,
        ...(p?.doneAt !== undefined ? { streamEndedAt: p.doneAt } : {}),
        ...(p?.requestedAt !== undefined ? { streamRequestedAt: p.requestedAt } : {}),
        ...(this.opts.graduations ? { graduated: this.materialised(remoteIdFor(rec.manifestDigest, header.diffIDs.length - 1)) !== undefined } : {}),
        ...(this.opts.relocations && this.opts.viewsIdle && this.opts.graduations?.layers(chainIds(header.diffIDs)) ? { relocated: this.relocatedImages.has(rec.manifestDigest) } : {}),
      };
    });
  }

  /** Content digests the images kept by `keep` need (every file of their chains' TOCs). */
  async liveDigests(keep: (manifestDigest: string) => boolean): Promise<Set<string>> {
    const live = new Set<string>();
    for (const [m, k] of this.byManifest) {
      if (!keep(m)) continue;
      for (const toc of await this.opts.puller.chainTocs(k.header)) for (const e of toc.entries) if (e.digest) live.add(e.digest);
    }
    return live;
  }

  /**
   * Deletes the graduated layer dirs no kept image mounts; content relocated into them that a kept
   * image still needs becomes a blob again first.
   */
  private async pruneGraduated(): Promise<void> {
    const rel = this.opts.relocations;
    await this.opts.graduations?.prune(this.keptChains(), rel ? (dir, now) => rel.restoreUnder(dir, now) : undefined);
  }

  /**
   * One copy per content (issue 12): drops the blob of every content that a graduated layer dir
   * holds as a file (a copy graduation made), the CAS serving that file from then on. Runs only
   * while no lazy view is mounted, being mounted or held, and no pull or view request is in progress
   * (their inode tables name blob paths); checked before each batch, and a view or pull that starts
   * meanwhile waits for the batch in flight (`relocating`). Serialised with graduations and prunes.
   * Stopped early, it is tried again every RELOCATE_RETRY_MS.
   */
  private async relocateContent(): Promise<void> {
    const { relocations: rel, graduations: g } = this.opts;
    if (!rel || !g || this.relocationRunning || !this.relocationPending || !this.mayRelocate()) return;
    this.relocationRunning = true;
    try {
      const t0 = Date.now();
      let blobs = 0;
      let bytes = 0;
      // Reported relocated only once the unlinks are written back (below).
      const finished: string[] = [];
      const done = await g.exclusive(async () => {
        for (const known of [...this.byManifest.values()]) {
          const dirs = known.rec.complete ? g.layers(known.chain) : undefined;
          if (!dirs) continue;
          const tocs = await this.opts.puller.chainTocs(known.header);
          const bottomFirst = [...dirs].reverse();
          let batch: { digest: string; file: string; size: number }[] = [];
          const seen = new Set<string>();
          const flush = async (): Promise<boolean> => {
            if (batch.length === 0) return true;
            if (!this.mayRelocate() || this.byManifest.get(known.rec.manifestDigest) !== known) return false;
            const p = rel.relocate(batch);
            this.relocating = p.catch(() => undefined);
            await p;
            blobs += batch.length;
            for (const b of batch) bytes += b.size;
            batch = [];
            return true;
          };
          for (const [i, toc] of tocs.entries()) {
            const dir = bottomFirst[i]!;
            const omitted = new Set(g.omitted(dir));
            for (const e of toc.entries) {
              const d = e.digest;
              if (e.type !== 'reg' || d === undefined || e.size === 0 || omitted.has(e.path) || seen.has(d)) continue;
              if (!this.opts.tracker.has(d) || rel.isRelocated(d) || this.opts.tracker.arriving(d)) continue;
              seen.add(d);
              batch.push({ digest: d, file: join(dir, e.path), size: e.size });
              if (batch.length >= RELOCATE_BATCH && !(await flush())) return false;
            }
          }
          if (!(await flush())) return false;
          finished.push(known.rec.manifestDigest);
        }
        return true;
      });
      // Outside the batches a view or pull waits for (`relocating`): their unlinks' metadata
      // written back once, so that no later writeback lands on a container reading the disk.
      if (blobs > 0) await rel.writeBack();
      for (const m of finished) this.relocatedImages.add(m);
      if (done) this.relocationPending = false;
      if (blobs > 0) this.log.info('content-relocated', { blobs, bytes, done, ms: Date.now() - t0 });
    } catch (err) {
      this.log.warn('content-relocation-failed', { err });
    } finally {
      this.relocationRunning = false;
    }
  }

  /** No lazy view mounted, mounting or held, no pull or view request in progress, no table prebuilt. */
  private mayRelocate(): boolean {
    if (this.closed || this.busy > 0 || !(this.opts.viewsIdle?.() ?? false)) return false;
    for (const k of this.byManifest.values()) if (k.table) return false;
    return true;
  }

  /** Top chain ids of the images this service knows (their graduated layer dirs stay). */
  private keptChains(): Set<string> {
    return new Set([...this.byManifest.values()].map((k) => k.chain[k.chain.length - 1]!));
  }

  /** Manifest digests of the images this service knows. */
  manifests(): string[] {
    return [...this.byManifest.keys()];
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.closing.abort();
    clearInterval(this.relocateTimer);
    for (const timer of this.graduateTimers.values()) clearTimeout(timer);
    this.graduateTimers.clear();
    for (const k of this.byManifest.values()) k.receiver?.close();
    this.containerd?.close();
    this.containerd = undefined;
  }
}

function prefixed(phases: Phases | undefined, prefix: string): Phases {
  const out: Phases = {};
  for (const [k, v] of Object.entries(phases ?? {})) out[prefix + k] = v;
  return out;
}
