/**
 * The bench's registry: Debian's docker-registry (distribution 2.8) on 127.0.0.1 with filesystem
 * storage in a directory the caller chooses (a persistent one lets later bench runs reuse pushed and
 * converted images). test/helpers/registry.ts wraps it for ava tests.
 *
 * Not here: pushing images (bench/images), the WAN link in front of it (bench/wan).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { startDaemon } from './proc.js';

const REGISTRY_BIN = '/usr/bin/docker-registry';
/** How long docker-registry may take to answer GET /v2/, ms (default of RegistryOptions.startTimeoutMs). */
const START_TIMEOUT_MS = 15_000;

export interface BenchRegistry {
  /** '127.0.0.1:PORT'. */
  host: string;
  storageDir: string;
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (racy by nature; the caller binds it right away). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const addr = srv.address();
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return typeof addr === 'object' && addr !== null ? addr.port : 0;
}

export interface RegistryOptions {
  /** An htpasswd file (bcrypt) enabling Basic auth; GET /v2/ then answers 401 when ready. */
  htpasswdFile?: string;
  /** How long it may take to answer GET /v2/, ms; default 15000. */
  startTimeoutMs?: number;
}

/** Starts docker-registry with storage under `dir`/storage; resolves once GET /v2/ answers. */
export async function startBenchRegistry(dir: string, opts: RegistryOptions = {}): Promise<BenchRegistry> {
  const storageDir = join(dir, 'storage');
  mkdirSync(storageDir, { recursive: true });
  const port = await freePort();
  const config: Record<string, unknown> = {
    version: '0.1',
    log: { level: 'error', accesslog: { disabled: true } },
    storage: { filesystem: { rootdirectory: storageDir }, delete: { enabled: true } },
    http: { addr: `127.0.0.1:${port}`, secret: randomBytes(16).toString('hex') },
  };
  if (opts.htpasswdFile) config.auth = { htpasswd: { realm: 'starlight', path: opts.htpasswdFile } };
  const configPath = join(dir, `config-${port}.yml`);
  writeFileSync(configPath, JSON.stringify(config)); // YAML is a superset of JSON
  // REGISTRY_* variables would override the config file (distribution's env convention).
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REGISTRY_')));
  const host = `127.0.0.1:${port}`;
  const daemon = await startDaemon(
    'docker-registry',
    REGISTRY_BIN,
    ['serve', configPath],
    async () => {
      const res = await fetch(`http://${host}/v2/`, { signal: AbortSignal.timeout(1000) });
      await res.body?.cancel();
      return res.status === 200 || (opts.htpasswdFile !== undefined && res.status === 401);
    },
    { timeoutMs: opts.startTimeoutMs ?? START_TIMEOUT_MS, env },
  ).catch((err: unknown) => {
    rmSync(configPath, { force: true });
    throw err;
  });
  // The config is per run (its port): removed with the registry, the storage stays (a cache dir).
  return { host, storageDir, stop: () => daemon.stop().finally(() => rmSync(configPath, { force: true })) };
}
