/**
 * Serves a Snapshotter as containerd's Snapshots service on a unix socket (containerd's
 * `[proxy_plugins.<name>] type = "snapshot"` dials it). Removes a stale socket file first, makes the
 * socket 0660, and closes gracefully (in-flight calls finish, bounded by a timeout, then forced).
 *
 * Not here: the snapshotter's own lifecycle (the caller closes it after the server), signals (CLI).
 */
import * as grpc from '@grpc/grpc-js';
import { lstat, mkdir, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { StarlightError } from '../../errors.js';
import { bindSocketPrivately } from '../safe-socket.js';
import { snapshotsHandlers } from './grpc-service.js';
import { snapshotsService } from './grpc-proto.js';
import type { Snapshotter } from './types.js';

/** Socket file mode: containerd runs as root; group access lets an admin group use `ctr`-like tools. */
const SOCKET_MODE = 0o660;
/** How long close() waits for in-flight calls before forcing, ms. */
const DEFAULT_GRACE_MS = 5_000;

export interface SnapshotServer {
  readonly socket: string;
  /** Stops accepting calls, waits up to graceMs for in-flight ones, removes the socket. Idempotent. */
  close(graceMs?: number): Promise<void>;
}

async function removeStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return;
  if (!st.isSocket()) {
    throw new StarlightError('SL_ERR_CONFIG', `${path} exists and is not a socket; refusing to replace it (choose another --socket)`, { details: { path } });
  }
  await rm(path, { force: true });
}

export async function serveSnapshotter(sn: Snapshotter, socket: string): Promise<SnapshotServer> {
  await mkdir(dirname(socket), { recursive: true, mode: 0o711 });
  await removeStaleSocket(socket);
  const server = new grpc.Server();
  server.addService(snapshotsService(), snapshotsHandlers(sn));
  await bindSocketPrivately(socket, SOCKET_MODE, (tmp) =>
    new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix://${tmp}`, grpc.ServerCredentials.createInsecure(), (err) => {
        if (err) reject(new StarlightError('SL_ERR_CONFIG', `cannot listen on ${socket}: ${err.message}`, { cause: err, details: { socket } }));
        else resolve();
      });
    }),
  );
  let closing: Promise<void> | undefined;
  return {
    socket,
    close(graceMs = DEFAULT_GRACE_MS) {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, graceMs);
          server.tryShutdown(() => {
            clearTimeout(timer);
            resolve();
          });
        });
        await rm(socket, { force: true });
      })();
      return closing;
    },
  };
}
