/**
 * A user-space WAN emulator: a TCP proxy that adds latency and caps bandwidth between a client and
 * one target (the kernel here has no netem; design.md "Things that bite").
 *
 * Model per accepted connection: the target is dialled at once, but nothing crosses before one RTT
 * has passed (the TCP handshake a real WAN charges every new connection); then every chunk is
 * delayed by RTT/2 in its direction, after the direction's shared token bucket (bits/s, bursts of
 * `burstBytes`) lets it leave. So a request/response on an open connection costs one RTT, a first
 * one two. Backpressure is end to end (see pipe.ts): a slow reader stalls its sender, never memory.
 * The socket that reads from the target gets a small fixed receive buffer (TARGET_RCVBUF_BYTES): the
 * loopback hop between target and emulator is not part of the emulated link, and with autotuned
 * buffers it held ~4 MB in front of every byte the target sent later (a queue jump's bytes, issue 11),
 * which a real link does not (the target's own send buffer is the target's business: the proxy bounds
 * its unsent bytes with TCP_NOTSENT_LOWAT).
 * Counters (bytes per direction, connections) can be read and reset between bench trials.
 *
 * CLI: node dist/bench/wan/emulator.js --listen 127.0.0.1:0 --target 127.0.0.1:5000 --rtt 150
 *      --bandwidth 100mbit   → prints "listening 127.0.0.1:<port>" and runs until SIGINT/SIGTERM.
 *
 * Not here: packet loss, jitter, per-packet (MTU) modelling, UDP.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { StarlightError } from '../../src/errors.js';
import { createLogger, nullLogger, type Logger } from '../../src/log.js';
import { setSocketOption } from '../../src/socket-options.js';
import { formatHostPort, parseBandwidth, parseHostPort, parseSize, type HostPort } from '../lib/units.js';
import { DEFAULT_BURST_BYTES, LinkShaper } from './link.js';
import { DelayedPipe } from './pipe.js';

/** Smallest per-direction window, bytes (Linux's default tcp_rmem max is 6 MiB; 4 MiB is typical of a tuned WAN TCP window). */
const MIN_WINDOW_BYTES = 4 * 1024 * 1024;
/** Default router buffer, ms: how far ahead the link may be booked before sources are paused. */
const DEFAULT_QUEUE_MS = 25;
/** SO_RCVBUF of the socket reading from the target (the kernel doubles it), bytes. */
const TARGET_RCVBUF_BYTES = 64 * 1024;

export interface WanEmulatorOptions {
  /** Listen address "host:port"; port 0 picks a free port. Default "127.0.0.1:0". */
  listen?: string;
  /** Forward to "host:port". Required. */
  target: string;
  /** Round-trip time added, ms; RTT/2 each way plus one RTT per new connection. Default 0. */
  rttMs?: number;
  /** Link capacity per direction, bits/s; 0 = unlimited. Default 0. */
  bandwidthBps?: number;
  /** Token-bucket depth, bytes. Default 64 KiB. */
  burstBytes?: number;
  /** Bytes one connection direction may hold before its source is paused. Default max(4 MiB, 2 × bandwidth × RTT). */
  windowBytes?: number;
  /** Router buffer, ms (see pipe.ts). Default 25. */
  queueMs?: number;
  log?: Logger;
}

interface ResolvedOptions {
  listen: HostPort;
  target: HostPort;
  rttMs: number;
  bandwidthBps: number;
  burstBytes: number;
  windowBytes: number;
  queueMs: number;
  log: Logger;
}

/** Counters since start or the last resetStats(). "up" = client → target, "down" = target → client. */
export interface WanStats {
  /** Connections accepted. */
  connections: number;
  /** Connections open now (not reset by resetStats). */
  activeConnections: number;
  /** Bytes forwarded client → target. */
  bytesUp: number;
  /** Bytes forwarded target → client. */
  bytesDown: number;
  /** Bytes the emulator holds in user space now (queues + socket buffers), all connections. */
  bufferedBytes: number;
  /** Largest total queued bytes seen (excludes socket buffers). */
  peakQueuedBytes: number;
}

function invalid(field: string, value: unknown, want: string): StarlightError {
  return new StarlightError('SL_ERR_CONFIG', `WAN emulator option ${field}=${JSON.stringify(value)} is invalid: ${want}`, {
    details: { field, value },
  });
}

function nonNegative(field: string, v: number | undefined, dflt: number): number {
  const n = v ?? dflt;
  if (!Number.isFinite(n) || n < 0) throw invalid(field, v, 'want a finite number ≥ 0');
  return n;
}

/** Defaults and validation in one place (house style: resolve once at construction). */
export function resolveOptions(o: WanEmulatorOptions): ResolvedOptions {
  const rttMs = nonNegative('rttMs', o.rttMs, 0);
  const bandwidthBps = nonNegative('bandwidthBps', o.bandwidthBps, 0);
  const burstBytes = nonNegative('burstBytes', o.burstBytes, DEFAULT_BURST_BYTES);
  if (burstBytes < 1) throw invalid('burstBytes', o.burstBytes, 'want ≥ 1 byte');
  const bdp = bandwidthBps > 0 ? (bandwidthBps / 8) * (rttMs / 1000) : 0;
  const windowBytes = nonNegative('windowBytes', o.windowBytes, Math.max(MIN_WINDOW_BYTES, Math.ceil(2 * bdp)));
  if (windowBytes < 1) throw invalid('windowBytes', o.windowBytes, 'want ≥ 1 byte');
  const queueMs = nonNegative('queueMs', o.queueMs, DEFAULT_QUEUE_MS);
  const wrap = (field: string, text: string | undefined): HostPort => {
    if (typeof text !== 'string') throw invalid(field, text, 'want "host:port"');
    try {
      return parseHostPort(text, field);
    } catch {
      throw invalid(field, text, 'want "host:port", e.g. 127.0.0.1:5000');
    }
  };
  return {
    listen: wrap('listen', o.listen ?? '127.0.0.1:0'),
    target: wrap('target', o.target),
    rttMs,
    bandwidthBps,
    burstBytes,
    windowBytes,
    queueMs,
    log: o.log ?? nullLogger,
  };
}

interface Conn {
  client: Socket;
  target: Socket;
  up: DelayedPipe;
  down: DelayedPipe;
}

export class WanEmulator {
  private readonly o: ResolvedOptions;
  private readonly server: Server;
  private readonly conns = new Set<Conn>();
  private readonly upLink: LinkShaper;
  private readonly downLink: LinkShaper;
  private counters = { connections: 0, bytesUp: 0, bytesDown: 0, peakQueuedBytes: 0 };
  private rcvbufWarned = false;
  /** Bytes in all pipes' queues now. */
  private queuedTotal = 0;
  private closing: Promise<void> | null = null;

  private constructor(o: ResolvedOptions) {
    this.o = o;
    this.upLink = new LinkShaper({ bandwidthBps: o.bandwidthBps, burstBytes: o.burstBytes });
    this.downLink = new LinkShaper({ bandwidthBps: o.bandwidthBps, burstBytes: o.burstBytes });
    this.server = createServer({ allowHalfOpen: true, noDelay: true }, (s) => this.accept(s));
  }

  /** Starts listening; resolves once the port is bound. */
  static async start(opts: WanEmulatorOptions): Promise<WanEmulator> {
    const emu = new WanEmulator(resolveOptions(opts));
    await new Promise<void>((resolve, reject) => {
      emu.server.once('error', (err) =>
        reject(new StarlightError('SL_ERR_CONFIG', `WAN emulator cannot listen on ${formatHostPort(emu.o.listen)}: ${err.message}`, { cause: err })),
      );
      emu.server.listen(emu.o.listen.port, emu.o.listen.host, () => resolve());
    });
    emu.o.log.info('wan-emulator-listening', { listen: emu.address, target: formatHostPort(emu.o.target), rttMs: emu.o.rttMs, bandwidthBps: emu.o.bandwidthBps });
    return emu;
  }

  get port(): number {
    const a = this.server.address();
    return a !== null && typeof a === 'object' ? a.port : 0;
  }

  get host(): string {
    return this.o.listen.host;
  }

  /** "host:port" clients dial instead of the target. */
  get address(): string {
    return formatHostPort({ host: this.host, port: this.port });
  }

  stats(): WanStats {
    let buffered = 0;
    for (const c of this.conns) buffered += c.up.bufferedBytes + c.down.bufferedBytes;
    return { ...this.counters, activeConnections: this.conns.size, bufferedBytes: buffered };
  }

  resetStats(): void {
    this.counters = { connections: 0, bytesUp: 0, bytesDown: 0, peakQueuedBytes: 0 };
  }

  /** Stops accepting and resets every open connection (in-flight bytes are dropped). Idempotent. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const c of this.conns) this.drop(c);
    });
    return this.closing;
  }

  private accept(client: Socket): void {
    if (this.closing) {
      client.destroy();
      return;
    }
    const now = performance.now();
    const { rttMs, target: t } = this.o;
    const target = connect({ host: t.host, port: t.port, allowHalfOpen: true, noDelay: true });
    target.once('connect', () => {
      if (!setSocketOption(target, 'SO_RCVBUF', TARGET_RCVBUF_BYTES) && !this.rcvbufWarned) {
        this.rcvbufWarned = true;
        this.o.log.warn('wan-rcvbuf-not-set', { hint: 'build/Release/starlight_net.node missing (npm install): the loopback hop may hold megabytes in front of the link' });
      }
    });
    const common = { delayMs: rttMs / 2, gateUntil: now + rttMs, windowBytes: this.o.windowBytes, queueMs: this.o.queueMs };
    const conn: Conn = {
      client,
      target,
      up: new DelayedPipe({ ...common, src: client, dst: target, shaper: this.upLink, onQueued: this.queuedFn, onDelivered: (n, w) => this.delivered('bytesUp', n, w) }),
      down: new DelayedPipe({ ...common, src: target, dst: client, shaper: this.downLink, onQueued: this.queuedFn, onDelivered: (n, w) => this.delivered('bytesDown', n, w) }),
    };
    client.setNoDelay(true);
    this.conns.add(conn);
    this.counters.connections++;
    const onError = (side: string) => (err: Error) => {
      this.o.log.debug('wan-connection-error', { side, error: err });
      this.drop(conn);
    };
    client.on('error', onError('client'));
    target.on('error', onError('target'));
    const onClose = () => {
      if (client.destroyed && target.destroyed) this.drop(conn);
      else if ((client.destroyed && !conn.down.done) || (target.destroyed && !conn.up.done)) {
        // One side vanished with data still owed to it or from it: a reset, propagate it.
        this.drop(conn);
      }
    };
    client.on('close', onClose);
    target.on('close', onClose);
  }

  private readonly queuedFn = (n: number): void => {
    this.queuedTotal += n;
    if (this.queuedTotal > this.counters.peakQueuedBytes) this.counters.peakQueuedBytes = this.queuedTotal;
  };

  private delivered(dir: 'bytesUp' | 'bytesDown', n: number, written: boolean): void {
    this.queuedTotal -= n;
    if (written) this.counters[dir] += n;
  }

  private drop(c: Conn): void {
    if (!this.conns.delete(c)) return;
    this.queuedTotal -= c.up.queuedBytes + c.down.queuedBytes;
    c.up.stop();
    c.down.stop();
    for (const s of [c.client, c.target]) resetOrClose(s);
  }
}

/**
 * Ends `s` with a reset, as a real peer's failure or a cut link would look (a FIN could pass for a
 * clean end) — except while our own FIN (a forwarded half-close) is in flight. Then libuv's
 * uv_tcp_close_reset refuses with EINVAL, and Node 20's TCPWrap::Reset marks the handle closing
 * anyway without closing it: the socket reads as destroyed, its fd stays open, and at exit
 * node::Environment::CleanupHandles spins forever in uv_run waiting for that handle (issue 17: the
 * pull-resume test's process never exited). So then close it plainly: everything before the FIN is
 * already in the kernel (Writable calls _final only after the last write), so the peer gets those
 * bytes and the FIN the source really sent. Reproducer: test/unit/bench/wan-close-child.ts.
 */
function resetOrClose(s: Socket): void {
  if (s.destroyed) return;
  const finInFlight = s.writableEnded && s.writableLength === 0 && !s.writableFinished;
  if (finInFlight) s.destroy();
  else s.resetAndDestroy();
}

function parseArgs(argv: string[]): WanEmulatorOptions {
  const o: WanEmulatorOptions = { target: '' };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const val = argv[i + 1];
    if (val === undefined) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `${flag} needs a value`);
    i++;
    if (flag === '--listen') o.listen = val;
    else if (flag === '--target') o.target = val;
    else if (flag === '--rtt') o.rttMs = Number(val);
    else if (flag === '--bandwidth') o.bandwidthBps = parseBandwidth(val);
    else if (flag === '--burst') o.burstBytes = parseSize(val, 'burst');
    else throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `unknown flag ${flag}; use --listen --target --rtt (ms) --bandwidth (e.g. 100mbit) --burst (e.g. 64KiB)`);
  }
  return o;
}

async function main(): Promise<void> {
  const log = createLogger({ fields: { component: 'wan-emulator' } });
  const emu = await WanEmulator.start({ ...parseArgs(process.argv.slice(2)), log });
  process.stdout.write(`listening ${emu.address}\n`);
  const stop = (): void => {
    void emu.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    const e = err as { code?: string; message?: string };
    process.stderr.write(`wan emulator: ${e.code ?? 'error'}: ${e.message ?? String(err)}\n`);
    process.exit(2);
  });
}
