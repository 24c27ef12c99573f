/**
 * One direction of one emulated connection: bytes read from `src` are written to `dst` after the
 * link lets them leave (LinkShaper) plus the one-way propagation delay, in order, with end-to-end
 * backpressure.
 *
 * The queue is a FIFO of (deliverAt, chunk) with ONE timer for its head, not a timer per chunk.
 * Backpressure: `src` is paused while (a) the bytes this pipe holds plus `dst`'s unsent buffer exceed
 * `windowBytes` (a slow reader; the TCP window analogue) or (b) the shared link is booked more than
 * `queueMs` ahead (a router buffer: keeps one bulk connection from queueing seconds of data in front
 * of every other connection's small requests). So memory per pipe stays ≤ windowBytes + one read.
 * A FIN is delayed like data and forwarded as `dst.end()` (half-close preserved).
 *
 * Not here: accepting/connecting sockets, error policy, counters across connections (emulator.ts).
 */
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { LinkShaper } from './link.js';

export interface PipeOptions {
  src: Socket;
  dst: Socket;
  /** One-way propagation delay, ms (RTT/2). */
  delayMs: number;
  /** Nothing is delivered before this performance.now() time, ms (the connection's handshake). */
  gateUntil: number;
  /** The link direction this pipe crosses (shared with other connections). */
  shaper: LinkShaper;
  /** Pause `src` while this many bytes are held (queue + dst's unsent buffer). */
  windowBytes: number;
  /** Pause `src` while the link is booked more than this far ahead, ms. */
  queueMs: number;
  /** Called when bytes entered the queue. */
  onQueued: (bytes: number) => void;
  /** Called after queued bytes were handed to `dst` (or dropped because `dst` is gone). */
  onDelivered: (bytes: number, written: boolean) => void;
}

interface Item {
  at: number;
  /** null = the source's FIN. */
  chunk: Buffer | null;
}

export class DelayedPipe {
  private readonly items: Item[] = [];
  private head = 0;
  private queued = 0;
  private lastAt = 0;
  private timer: NodeJS.Timeout | null = null;
  private resumeTimer: NodeJS.Timeout | null = null;
  private waitingDrain = false;
  private pausedByUs = false;
  private finished = false;
  private stopped = false;

  constructor(private readonly o: PipeOptions) {
    o.src.on('data', (chunk: Buffer) => this.onData(chunk));
    o.src.on('end', () => this.enqueue(null, performance.now()));
    o.dst.on('drain', () => {
      this.waitingDrain = false;
      this.flush();
    });
  }

  /** Bytes this pipe holds in user space: its queue plus dst's unsent and src's unread buffers. */
  get bufferedBytes(): number {
    return this.queued + this.o.dst.writableLength + this.o.src.readableLength;
  }

  /** Bytes in this pipe's own queue (excludes the sockets' buffers). */
  get queuedBytes(): number {
    return this.queued;
  }

  /** True once the FIN was forwarded (or the pipe was stopped). */
  get done(): boolean {
    return this.finished || this.stopped;
  }

  /** Drops the queue and timers; the caller destroys the sockets. Idempotent. */
  stop(): void {
    this.stopped = true;
    this.items.length = 0;
    this.head = 0;
    this.queued = 0;
    if (this.timer) clearTimeout(this.timer);
    if (this.resumeTimer) clearTimeout(this.resumeTimer);
    this.timer = this.resumeTimer = null;
  }

  private onData(chunk: Buffer): void {
    if (this.stopped) return;
    const now = performance.now();
    const left = this.o.shaper.depart(now, chunk.length);
    this.enqueue(chunk, Math.max(left, this.o.gateUntil) + this.o.delayMs);
    this.queued += chunk.length;
    this.o.onQueued(chunk.length);
    this.applyBackpressure(now);
  }

  private enqueue(chunk: Buffer | null, at: number): void {
    if (this.stopped) return;
    if (chunk === null) at = Math.max(at, this.o.gateUntil) + this.o.delayMs;
    this.lastAt = Math.max(this.lastAt, at);
    this.items.push({ at: this.lastAt, chunk });
    this.schedule();
  }

  private schedule(): void {
    if (this.timer || this.waitingDrain || this.stopped || this.head >= this.items.length) return;
    const wait = this.items[this.head]!.at - performance.now();
    if (wait <= 0) {
      this.flush();
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flush();
    }, wait);
  }

  private flush(): void {
    if (this.stopped || this.timer) return;
    const now = performance.now();
    const dst = this.o.dst;
    while (!this.waitingDrain && this.head < this.items.length && this.items[this.head]!.at <= now) {
      const { chunk } = this.items[this.head]!;
      this.head++;
      if (chunk === null) {
        this.finished = true;
        if (!dst.destroyed) dst.end();
        break;
      }
      this.queued -= chunk.length;
      if (dst.destroyed) {
        this.o.onDelivered(chunk.length, false);
        continue;
      }
      this.waitingDrain = !dst.write(chunk);
      this.o.onDelivered(chunk.length, true);
    }
    // Compact the array now and then instead of shift()ing per chunk.
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items.splice(0, this.head);
      this.head = 0;
    }
    this.applyBackpressure(now);
    this.schedule();
  }

  private applyBackpressure(now: number): void {
    if (this.stopped) return;
    const src = this.o.src;
    const full = this.queued + this.o.dst.writableLength >= this.o.windowBytes;
    const backlog = this.o.shaper.backlogMs(now);
    if (full || backlog > this.o.queueMs) {
      if (!this.pausedByUs) {
        this.pausedByUs = true;
        src.pause();
      }
      // A full window is released by flush()/drain; a booked link by time alone.
      if (!full && !this.resumeTimer) {
        this.resumeTimer = setTimeout(() => {
          this.resumeTimer = null;
          this.applyBackpressure(performance.now());
        }, backlog - this.o.queueMs / 2);
      }
      return;
    }
    const low = this.queued + this.o.dst.writableLength <= this.o.windowBytes / 2;
    if (this.pausedByUs && low && backlog <= this.o.queueMs / 2) {
      this.pausedByUs = false;
      if (!src.destroyed) src.resume();
    } else if (this.pausedByUs && low && !this.resumeTimer) {
      this.resumeTimer = setTimeout(() => {
        this.resumeTimer = null;
        this.applyBackpressure(performance.now());
      }, backlog - this.o.queueMs / 2);
    }
  }
}
