/**
 * CONTENT frames of runs of small items, built once and written by every stream of a plan. In a
 * rollout, 50 streams of one image send the same ~6 300 small items in the same order; framing,
 * gathering (Buffer.concat) and opening each item per stream cost the proxy's one thread more than
 * the socket writes (bench/proxy.ts --fanout, docs/design-notes.md "Frames shared across streams").
 *
 * Contract:
 * - A FramedRuns belongs to one item table (a plan's header.items, shared by the streams that reuse
 *   the plan). Its runs tile the table: maximal stretches of consecutive items each at most
 *   RUN_ITEM_BYTES encoded, a run's frames at most RUN_BYTES; larger items are in no run.
 * - at(start) gives the run starting at item `start`: its end (exclusive) and contentFrames() of its
 *   items in the encoding the table announces, built from the content cache's memory tier at first
 *   use and kept in the proxy's FramedRunStore (LRU bounded by bytes); undefined when no run starts
 *   there or an item of it is not in memory as announced (the caller then sends items one by one).
 * - The frames do not depend on any stream's order or position: a stream writes a run only when its
 *   queue would send exactly those items next (SendQueue.takeRun), so bumps, resumes and `from`
 *   still decide the order. A replan makes a new table and so new runs (nothing stale is served).
 *
 * Not here: when a stream uses a run (session.ts), the frame layout (protocol/frames.ts).
 */
import { LRUCache } from 'lru-cache';
import { CONTENT_HEAD_BYTES, FRAME_HEAD_BYTES, type ContentItem, type Encoding } from '../../protocol/index.js';
import { contentFrames } from '../../protocol/frames.js';

/**
 * Largest frames of one run, bytes: one response write (the encoder's batch size). A bump waits for
 * at most the run being written, as it waited for a batch before.
 */
export const RUN_BYTES = 256 * 1024;
/** Items up to this many encoded bytes join runs; larger ones are read and framed per stream. */
export const RUN_ITEM_BYTES = 64 * 1024;
/**
 * Default bound of the frames kept, bytes (FramedRunStore). python-web's small items are ~32 MB; the
 * frames copy bytes the memory tier holds as well, so this is what the proxy's RSS may grow by
 * (server.ts: never more than a quarter of --cache-size).
 */
export const DEFAULT_FRAMED_RUN_BYTES = 64 * 1024 * 1024;

/** An item's verified encoded bytes if they are in memory (ContentCache.inMemory). */
export type InMemorySource = (digest: string) => { rec: { encoding: Encoding; encodedSize: number }; data: Buffer } | undefined;

/** The built runs of all tables of one proxy, bounded by bytes. */
export class FramedRunStore {
  private readonly built: LRUCache<string, Buffer> | undefined;
  private tables = 0;

  constructor(maxBytes = DEFAULT_FRAMED_RUN_BYTES) {
    this.built = maxBytes > 0 ? new LRUCache<string, Buffer>({ maxSize: maxBytes, sizeCalculation: (b) => Math.max(1, b.length) }) : undefined;
  }

  /** Bytes of frames kept. */
  get bytes(): number {
    return this.built?.calculatedSize ?? 0;
  }

  /** The runs of item table `items` (the caller keeps one per table), or undefined when runs are off. */
  runsOf(items: readonly ContentItem[], source: InMemorySource): FramedRuns | undefined {
    return this.built === undefined ? undefined : new FramedRuns(items, source, this.built, this.tables++);
  }
}

export class FramedRuns {
  /** ends[i]: end (exclusive) of the run starting at item i; 0 where none starts. */
  private readonly ends: Uint32Array;

  constructor(
    readonly items: readonly ContentItem[],
    private readonly source: InMemorySource,
    private readonly built: LRUCache<string, Buffer>,
    private readonly id: number,
  ) {
    this.ends = new Uint32Array(items.length);
    const frameOf = (i: number): number => FRAME_HEAD_BYTES + CONTENT_HEAD_BYTES + items[i]!.encodedSize;
    for (let i = 0; i < items.length; ) {
      if (items[i]!.encodedSize > RUN_ITEM_BYTES) {
        i++;
        continue;
      }
      const start = i;
      let bytes = 0;
      while (i < items.length && items[i]!.encodedSize <= RUN_ITEM_BYTES && bytes + frameOf(i) <= RUN_BYTES) bytes += frameOf(i++);
      this.ends[start] = i;
    }
  }

  /** True if the frames of a run starting at `start` are built (its items will likely go out as a run). */
  isBuilt(start: number): boolean {
    return this.ends[start] !== undefined && this.ends[start] !== 0 && this.built.has(this.key(start));
  }

  /** The run starting at `start` (see the contract), or undefined. */
  at(start: number): { end: number; frames: Buffer } | undefined {
    const end = this.ends[start];
    if (end === undefined || end === 0) return undefined;
    const key = this.key(start);
    let frames = this.built.get(key);
    if (frames === undefined) {
      const data: Buffer[] = [];
      for (let i = start; i < end; i++) {
        const item = this.items[i]!;
        if (item.encodedSize === 0) {
          data.push(EMPTY);
          continue;
        }
        const got = this.source(item.digest);
        if (got === undefined || got.rec.encoding !== item.encoding || got.data.length !== item.encodedSize) return undefined;
        data.push(got.data);
      }
      frames = contentFrames(start, data);
      this.built.set(key, frames);
    }
    return { end, frames };
  }

  private key(start: number): string {
    return `${this.id}:${start}`;
  }
}

const EMPTY = Buffer.alloc(0);
