/**
 * FdHolderClient: the daemon's side of the fd holder (native/holder.cc, a small separate process),
 * which keeps each mounted view's /dev/fuse fd and state fd open while no daemon runs, so running
 * containers survive a daemon restart, crash or upgrade (issue 13; docs/lazy-pull.md "Daemon
 * restarts"). The daemon keeps one connection open ("attached") for its whole life: when it closes
 * (exit, crash, SIGKILL) the holder knows no daemon serves and, after the read deadline, answers the
 * views' requests with EIO itself, so no read hangs.
 *
 * Contract: connect() spawns the holder when none answers at the socket; every call is synchronous
 * with a short timeout (a local socket; the holder answers at once) and throws SL_ERR_FS_HOLDER.
 *
 * Not here: mounting and adopting (fuse-views.ts), the SCM_RIGHTS code (native/fd_passing.cc).
 */
import { spawn } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { StarlightError } from '../../errors.js';
import type { FuseAddon, FuseAddonLoader } from './native.js';

/** How long one request to the holder may take, ms. */
const REQUEST_TIMEOUT_MS = 5_000;
/** How long a freshly spawned holder may take to listen, ms. */
const SPAWN_TIMEOUT_MS = 5_000;

/** The fds of one held view: its FUSE device and its state (both owned by whoever received them). */
export interface HeldView {
  devFd: number;
  stateFd: number;
}

export interface FdHolderOptions {
  /** The holder's unix socket (≤ 107 bytes). */
  socket: string;
  /** The daemon's read deadline: how long the holder waits for a daemon before answering EIO, ms. */
  readDeadlineMs: number;
  /** Where the holder writes its few log lines (append); default: nowhere. */
  logFile?: string;
}

export class FdHolderClient {
  private fd: number;
  /** The holder's process id (from its ATTACH reply). */
  readonly pid: number;

  private constructor(
    private readonly addon: FuseAddon,
    private readonly socket: string,
    fd: number,
    pid: number,
  ) {
    this.fd = fd;
    this.pid = pid;
  }

  private static fail(what: string, socket: string, cause?: unknown): StarlightError {
    return new StarlightError('SL_ERR_FS_HOLDER', `the FUSE fd holder at ${socket}: ${what}`, { cause, details: { socket } });
  }

  /** Connects to the holder at `socket` (spawning it from `loader`'s build when none answers) and attaches. */
  static async connect(loader: FuseAddonLoader, o: FdHolderOptions): Promise<FdHolderClient> {
    const addon = loader.load();
    let fd = FdHolderClient.tryConnect(addon, o.socket);
    if (fd < 0) {
      const out = o.logFile === undefined ? 'ignore' : openSync(o.logFile, 'a');
      try {
        // Own session and process group: a signal to the daemon's group never reaches the holder.
        const child = spawn(loader.holderPath(), [o.socket], { detached: true, stdio: ['ignore', out, out] });
        child.on('error', () => undefined);
        child.unref();
      } finally {
        if (typeof out === 'number') closeSync(out);
      }
      const deadline = Date.now() + SPAWN_TIMEOUT_MS;
      while ((fd = FdHolderClient.tryConnect(addon, o.socket)) < 0) {
        if (Date.now() > deadline) throw FdHolderClient.fail(`not listening ${SPAWN_TIMEOUT_MS} ms after it was started (${loader.holderPath()})`, o.socket);
        await sleep(20);
      }
    }
    let reply;
    try {
      reply = addon.holderRequest(fd, `ATTACH ${Math.ceil(o.readDeadlineMs)}`, [], REQUEST_TIMEOUT_MS);
    } catch (err) {
      addon.closeFd(fd);
      throw FdHolderClient.fail('attach failed', o.socket, err);
    }
    const m = /^OK (\d+) (\d+)$/.exec(reply.text);
    if (m === null) {
      addon.closeFd(fd);
      throw FdHolderClient.fail(`unexpected reply ${JSON.stringify(reply.text)}`, o.socket);
    }
    return new FdHolderClient(addon, o.socket, fd, Number(m[1]));
  }

  /**
   * Ends the holder at `socket`, if one runs (never spawns one): it closes every connection it
   * keeps. Returns how many views it held. For `starlight snapshotter --shutdown-views`.
   */
  static end(loader: FuseAddonLoader, socket: string): number {
    const addon = loader.load();
    const fd = FdHolderClient.tryConnect(addon, socket);
    if (fd < 0) return 0;
    const c = new FdHolderClient(addon, socket, fd, 0);
    try {
      const held = c.takeAll();
      for (const v of held.values()) c.closeFds(v);
      c.quit();
      return held.size;
    } finally {
      c.close();
    }
  }

  private static tryConnect(addon: FuseAddon, socket: string): number {
    try {
      return addon.holderConnect(socket);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'ENOENT' || code === 'ECONNREFUSED') return -1;
      throw FdHolderClient.fail('cannot connect', socket, err);
    }
  }

  private request(text: string, fds: number[] = []): { text: string; fds: number[] } {
    if (this.fd < 0) throw FdHolderClient.fail('this client is closed', this.socket);
    try {
      return this.addon.holderRequest(this.fd, text, fds, REQUEST_TIMEOUT_MS);
    } catch (err) {
      throw FdHolderClient.fail(`${text.split(' ')[0]} failed`, this.socket, err);
    }
  }

  private expectOk(text: string, fds: number[] = []): void {
    const r = this.request(text, fds);
    for (const fd of r.fds) this.addon.closeFd(fd);
    if (r.text !== 'OK') throw FdHolderClient.fail(`${text.split(' ')[0]} answered ${JSON.stringify(r.text)}`, this.socket);
  }

  /** Every view the holder keeps, by key (mountpoint); the caller owns the returned fds. */
  takeAll(): Map<string, HeldView> {
    const out = new Map<string, HeldView>();
    for (let i = 0; ; i++) {
      const r = this.request(`GET ${i}`);
      if (r.text === 'END') {
        for (const fd of r.fds) this.addon.closeFd(fd);
        return out;
      }
      if (!r.text.startsWith('ENT ') || r.fds.length !== 2) {
        for (const fd of r.fds) this.addon.closeFd(fd);
        throw FdHolderClient.fail(`unexpected reply ${JSON.stringify(r.text)}`, this.socket);
      }
      out.set(r.text.slice(4), { devFd: r.fds[0], stateFd: r.fds[1] });
    }
  }

  /** Holds `fds` (duplicated into the holder; the caller keeps its own) under `key`, replacing any. */
  put(key: string, fds: readonly [number, number]): void {
    this.expectOk(`PUT ${key}`, [...fds]);
  }

  /** Closes and forgets what the holder keeps under `key` (no-op if nothing). */
  del(key: string): void {
    this.expectOk(`DEL ${key}`);
  }

  /** Ends the holder (every held connection it alone kept ends too). */
  quit(): void {
    this.expectOk('QUIT');
    this.close();
  }

  /** Detaches (closes our connection); the holder keeps what it holds. Idempotent. */
  close(): void {
    if (this.fd < 0) return;
    this.addon.closeFd(this.fd);
    this.fd = -1;
  }

  /** Closes fds received from takeAll() that will not be adopted. */
  closeFds(v: HeldView): void {
    this.addon.closeFd(v.devFd);
    this.addon.closeFd(v.stateFd);
  }
}
