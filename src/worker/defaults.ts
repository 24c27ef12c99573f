/**
 * Where the worker daemon lives by default. A module of its own so that small clients (`starlight
 * pull`, `status`, `trace`) need not load the daemon (measured: importing daemon.ts costs ~0.3 s of a
 * pull's start-up vs ~0.1 s for the API client; bench/README.md "Where the time goes").
 */
import { join } from 'node:path';

/** Default socket; containerd's config points `[proxy_plugins.starlight] address` here. */
export const DEFAULT_SOCKET = '/run/starlight/starlight-snapshotter.sock';
/** Default state directory. */
export const DEFAULT_ROOT = '/var/lib/starlight';
/** File name of the daemon's API socket under the root (`starlight pull/status --daemon`). */
export const API_SOCKET_NAME = 'daemon.sock';
/** The daemon's API socket under the default root. */
export const DEFAULT_API_SOCKET = join(DEFAULT_ROOT, API_SOCKET_NAME);
