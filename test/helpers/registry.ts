/**
 * Real registries for e2e tests: Debian's docker-registry (distribution 2.8) on 127.0.0.1 with
 * filesystem storage in a per-test temp dir, optionally behind htpasswd Basic auth; and a small
 * node:http front that can fail the first N requests or demand Bearer tokens (with its own token
 * endpoint) before proxying to the real registry. Everything is torn down in t.teardown.
 *
 * htpasswd files are bcrypt, made with python3's crypt module (libxcrypt supports $2b$ here), so no
 * extra apt package is needed.
 */
import type { ExecutionContext } from 'ava';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { type IncomingMessage, type ServerResponse, createServer, request as httpRequest } from 'node:http';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { tempDir } from './tmp.js';

const REGISTRY_BIN = '/usr/bin/docker-registry';
/** How long a fresh registry may take to answer GET /v2/, ms. */
const START_TIMEOUT_MS = 15_000;
/** Grace period between SIGTERM and SIGKILL at teardown, ms. */
const STOP_GRACE_MS = 3_000;
/** bcrypt cost for test htpasswd files (minimum accepted by Go's bcrypt, keeps auth fast). */
const BCRYPT_ROUNDS = 16;

export interface TestRegistry {
  /** '127.0.0.1:PORT' — use as the registry part of references. */
  host: string;
  url: string;
  /** Root of the filesystem driver: blobs live under docker/registry/v2/blobs/sha256/xx/<hex>/data. */
  storageDir: string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  const srv = createNetServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

function htpasswdLine(user: string, pass: string): string {
  const script = 'import crypt,sys; print(sys.argv[1] + ":" + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=int(sys.argv[3]))))';
  return execFileSync('python3', ['-W', 'ignore', '-c', script, user, pass, String(BCRYPT_ROUNDS)], { encoding: 'utf8' }).trim();
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
  await exited;
  clearTimeout(timer);
}

/** Starts docker-registry; resolves once GET /v2/ answers (200, or 401 with htpasswd). */
export async function startRegistry(t: ExecutionContext, opts: { htpasswd?: { user: string; pass: string } } = {}): Promise<TestRegistry> {
  const dir = tempDir(t, 'starlight-registry-');
  const storageDir = join(dir, 'storage');
  const port = await freePort();
  const config: Record<string, unknown> = {
    version: '0.1',
    log: { level: 'error', accesslog: { disabled: true } },
    storage: { filesystem: { rootdirectory: storageDir }, delete: { enabled: true } },
    http: { addr: `127.0.0.1:${port}`, secret: randomBytes(16).toString('hex') },
  };
  if (opts.htpasswd) {
    const file = join(dir, 'htpasswd');
    writeFileSync(file, htpasswdLine(opts.htpasswd.user, opts.htpasswd.pass) + '\n');
    config.auth = { htpasswd: { realm: 'starlight-test', path: file } };
  }
  const configPath = join(dir, 'config.yml');
  writeFileSync(configPath, JSON.stringify(config)); // YAML is a superset of JSON
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REGISTRY_')));
  const child = spawn(REGISTRY_BIN, ['serve', configPath], { stdio: ['ignore', 'ignore', 'pipe'], env });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    if (stderr.length < 8192) stderr += d.toString();
  });
  const stop = (): Promise<void> => stopChild(child);
  t.teardown(stop);

  const host = `127.0.0.1:${port}`;
  const url = `http://${host}`;
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited with ${child.exitCode}: ${stderr}`);
    try {
      const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1000) });
      await res.body?.cancel();
      if (res.status === 200 || res.status === 401) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`docker-registry did not answer within ${START_TIMEOUT_MS} ms: ${stderr}`);
    await sleep(50);
  }
  return { host, url, storageDir, stop };
}

/** Path of a blob's data file inside a test registry's storage. */
export function blobDataPath(reg: TestRegistry, digest: string): string {
  const hex = digest.replace(/^sha256:/, '');
  return join(reg.storageDir, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
}

export interface FrontOptions {
  /** Answer the first N proxied requests with `failStatus` instead of proxying. Default 0. */
  failFirst?: number;
  /** Default 503. */
  failStatus?: number;
  /** Demand Bearer tokens issued by this front's /token endpoint to these Basic credentials. */
  token?: { user: string; pass: string };
  /** Drop Range headers, so the registry answers 200 with the whole blob. Default false. */
  ignoreRange?: boolean;
}

export interface Front {
  host: string;
  /** Counters the tests assert on. */
  stats: { proxied: number; failed: number; tokenRequests: number; challenged: number };
}

const API_PATH = /^\/v2\/(.+?)\/(manifests|blobs|tags)\//;

/** A node:http reverse proxy on 127.0.0.1:0 in front of `upstream` ('127.0.0.1:PORT'). */
export async function startFront(t: ExecutionContext, upstream: string, opts: FrontOptions = {}): Promise<Front> {
  const stats = { proxied: 0, failed: 0, tokenRequests: 0, challenged: 0 };
  /** token → granted 'repo:action' entries */
  const tokens = new Map<string, Set<string>>();
  let host = '';
  const [upHost, upPort] = upstream.split(':');

  const issueToken = (req: IncomingMessage, res: ServerResponse): void => {
    stats.tokenRequests++;
    const want = `Basic ${Buffer.from(`${opts.token?.user}:${opts.token?.pass}`).toString('base64')}`;
    if (req.headers.authorization !== want) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
      return;
    }
    const u = new URL(req.url ?? '/', `http://${host}`);
    const granted = new Set<string>();
    for (const scope of u.searchParams.getAll('scope')) {
      const [, name, actions] = /^repository:(.+):([a-z,]+)$/.exec(scope) ?? [];
      if (name) for (const a of actions.split(',')) granted.add(`${name}:${a}`);
    }
    const token = randomBytes(12).toString('hex');
    tokens.set(token, granted);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, expires_in: 300 }));
  };

  const authorized = (req: IncomingMessage, res: ServerResponse): boolean => {
    const m = API_PATH.exec(req.url ?? '');
    if (!m) return true;
    const action = req.method === 'GET' || req.method === 'HEAD' ? 'pull' : 'push';
    const auth = req.headers.authorization ?? '';
    const granted = auth.startsWith('Bearer ') ? tokens.get(auth.slice(7)) : undefined;
    if (granted?.has(`${m[1]}:${action}`)) return true;
    stats.challenged++;
    const scope = `repository:${m[1]}:${action === 'pull' ? 'pull' : 'pull,push'}`;
    res
      .writeHead(401, {
        'content-type': 'application/json',
        'www-authenticate': `Bearer realm="http://${host}/token",service="starlight-front",scope="${scope}"`,
      })
      .end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
    return false;
  };

  const server = createServer((req, res) => {
    if (opts.token && req.url?.startsWith('/token')) return issueToken(req, res);
    if (opts.token && !authorized(req, res)) return;
    if (stats.failed < (opts.failFirst ?? 0)) {
      stats.failed++;
      req.resume();
      res.writeHead(opts.failStatus ?? 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: 'injected failure' }] }));
      return;
    }
    stats.proxied++;
    const headers = { ...req.headers };
    if (opts.token) delete headers.authorization;
    if (opts.ignoreRange) delete headers.range;
    const up = httpRequest({ host: upHost, port: Number(upPort), method: req.method, path: req.url, headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { host, stats };
}
