/**
 * One TCP connection to the proxy opened ahead of the next delta stream (issue 19): a delta stream
 * is a `Connection: close` request (http-stream.ts), so without this every pull pays the TCP
 * handshake's round trip before its request can leave (150 ms of a pull at 150 ms RTT). The daemon
 * keeps one idle, connected socket per proxy; a delta request takes it and a new one is dialled
 * at once for the next pull.
 *
 * Contract: take() hands out a socket only while it is connected, has received nothing and is
 * younger than `maxIdleMs` (a spare older than that is replaced, so that the proxy's own limit on
 * silent connections, 60 s for node's headersTimeout, never closes one just as it is used). The
 * caller owns a taken socket; if it fails before any response byte (the proxy closed it at that very
 * moment), the caller retries once on a fresh connection (proxy-client.ts). A spare that fails
 * while idle is dropped and not redialled until the next take(): a proxy that is down costs no
 * retry loop. Only plain http: https requests go through node's keep-alive Agent.
 *
 * Not here: the request (http-stream.ts), which proxy is current (proxy-client.ts).
 */
import { connect, type Socket } from 'node:net';

/** A spare is replaced after this long unused, ms (below node's 60 s headersTimeout on the proxy). */
export const DEFAULT_WARM_MAX_IDLE_MS = 30_000;

interface Spare {
  /** host:port it is connected to. */
  host: string;
  socket: Socket;
  connected: boolean;
  openedAt: number;
  timer: NodeJS.Timeout;
}

export class WarmConnection {
  private spare: Spare | undefined;
  private closed = false;

  constructor(private readonly maxIdleMs = DEFAULT_WARM_MAX_IDLE_MS) {}

  /** Dials a spare to `url` (http: only) unless one to it is open already. */
  warm(url: URL): void {
    if (this.closed || url.protocol !== 'http:') return;
    const host = url.host;
    if (this.spare?.host === host) return;
    this.drop();
    const socket = connect({ host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 80) });
    socket.setNoDelay(true);
    const spare: Spare = {
      host,
      socket,
      connected: false,
      openedAt: Date.now(),
      // Replaced before the proxy's limit on silent connections; the timer keeps no process alive.
      timer: setTimeout(() => {
        if (this.spare !== spare) return;
        this.drop();
        this.warm(url);
      }, this.maxIdleMs).unref(),
    };
    socket.once('connect', () => (spare.connected = true));
    // Idle: any byte, end or error means it is unusable; dropped, redialled at the next take().
    const gone = (): void => {
      if (this.spare === spare) this.drop();
    };
    socket.on('error', gone);
    socket.once('data', gone);
    socket.once('end', gone);
    socket.once('close', gone);
    socket.unref();
    this.spare = spare;
  }

  /**
   * The spare connected to `url`'s host, if it is usable now (connected, silent, young); the caller
   * owns it. A new spare is dialled for the next request either way.
   */
  take(url: URL): Socket | undefined {
    const s = this.spare;
    let socket: Socket | undefined;
    if (s !== undefined && s.host === url.host && s.connected && !s.socket.destroyed && Date.now() - s.openedAt < this.maxIdleMs) {
      clearTimeout(s.timer);
      s.socket.removeAllListeners('error');
      s.socket.removeAllListeners('data');
      s.socket.removeAllListeners('end');
      s.socket.removeAllListeners('close');
      s.socket.removeAllListeners('connect');
      s.socket.ref();
      socket = s.socket;
      this.spare = undefined;
    } else if (s !== undefined && s.host === url.host && !s.connected) {
      return undefined; // still dialling: keep it for the next request rather than dial twice
    }
    this.warm(url);
    return socket;
  }

  /** Closes the spare; no more are dialled. */
  close(): void {
    this.closed = true;
    this.drop();
  }

  private drop(): void {
    const s = this.spare;
    if (s === undefined) return;
    this.spare = undefined;
    clearTimeout(s.timer);
    s.socket.destroy();
  }
}
