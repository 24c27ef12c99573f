/**
 * Kernel socket options Node does not expose, through the small native addon
 * build/Release/starlight_net.node (native/net.cc; no libfuse). The proxy keeps at most
 * `TCP_NOTSENT_LOWAT` unsent bytes in the kernel in front of the frames its sender may still reorder
 * (issue 11: a blocked read's file jumps the queue), and the bench's WAN emulator bounds the socket
 * buffers of its loopback hop, which a real link does not have.
 *
 * Best effort by contract: when the addon is missing or the socket has no file descriptor (a test
 * double, a closed socket), setSocketOption returns false and changes nothing; callers log that once.
 *
 * Not here: where to find build/ (build-artifact.ts).
 */
import type { Socket } from 'node:net';
import { loadOptionalAddon } from './build-artifact.js';

export type SocketOption = 'SO_SNDBUF' | 'SO_RCVBUF' | 'TCP_NOTSENT_LOWAT';

interface NetAddon {
  setSocketOption(fd: number, option: number, value: number): void;
  getSocketOption(fd: number, option: number): number;
  SO_SNDBUF: number;
  SO_RCVBUF: number;
  TCP_NOTSENT_LOWAT: number;
}

let addon: NetAddon | null | undefined;

function load(): NetAddon | null {
  if (addon === undefined) addon = loadOptionalAddon<NetAddon>('starlight_net.node');
  return addon;
}

/** The socket's file descriptor (a TLS socket's is its transport's), or undefined. */
function fdOf(socket: Socket): number | undefined {
  type WithHandle = { _handle?: { fd?: unknown } | null; _parent?: WithHandle | null };
  const s = socket as unknown as WithHandle;
  for (const candidate of [s._handle?.fd, s._parent?._handle?.fd]) {
    if (typeof candidate === 'number' && candidate >= 0) return candidate;
  }
  return undefined;
}

/** Sets one int option on `socket`; true when the kernel took it, false when it cannot be set here. */
export function setSocketOption(socket: Socket, option: SocketOption, value: number): boolean {
  const a = load();
  const fd = fdOf(socket);
  if (a === null || fd === undefined) return false;
  try {
    a.setSocketOption(fd, a[option], value);
    return true;
  } catch {
    return false;
  }
}

/** The option's current value (the kernel doubles SO_*BUF values it is given), or undefined. */
export function getSocketOption(socket: Socket, option: SocketOption): number | undefined {
  const a = load();
  const fd = fdOf(socket);
  if (a === null || fd === undefined) return undefined;
  try {
    return a.getSocketOption(fd, a[option]);
  } catch {
    return undefined;
  }
}
