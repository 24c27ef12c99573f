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
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { type IncomingMessage, type ServerResponse, createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { freePort, startBenchRegistry } from '../../bench/drivers/registry.js';
import { tempDir } from './tmp.js';

/**
 * How long a test registry may take to answer GET /v2/, ms. Generous: a test file may start several
 * at once on a machine that is busy with other test files, and a registry exec'd while the page cache
 * is being refilled from a saturated disk was seen to stay silent for over 15 s (proxy-first-contact,
 * two of its registries at once). This is a guard against a registry that never comes up, not a limit
 * on how fast it must be.
 */
const REGISTRY_START_TIMEOUT_MS = 90_000;

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

export { freePort };

function htpasswdLine(user: string, pass: string): string {
  const script = 'import crypt,sys; print(sys.argv[1] + ":" + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=int(sys.argv[3]))))';
  return execFileSync('python3', ['-W', 'ignore', '-c', script, user, pass, String(BCRYPT_ROUNDS)], { encoding: 'utf8' }).trim();
}

/** Starts docker-registry (bench/drivers/registry.ts) in a per-test temp dir; stopped in t.teardown. */
export async function startRegistry(t: ExecutionContext, opts: { htpasswd?: { user: string; pass: string } } = {}): Promise<TestRegistry> {
  const dir = tempDir(t, 'starlight-registry-');
  let htpasswdFile: string | undefined;
  if (opts.htpasswd) {
    htpasswdFile = join(dir, 'htpasswd');
    writeFileSync(htpasswdFile, htpasswdLine(opts.htpasswd.user, opts.htpasswd.pass) + '\n');
  }
  const reg = await startBenchRegistry(dir, { htpasswdFile, startTimeoutMs: REGISTRY_START_TIMEOUT_MS });
  t.teardown(() => reg.stop());
  return { ...reg, url: `http://${reg.host}` };
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
  stats: { proxied: number; failed: number; tokenRequests: number; challenged: number; blobGets: number };
  /** 'METHOD url' of every proxied request, in order. */
  requests: string[];
}

/** Keep-alive timeout of a front's server, ms: longer than any test, so idle sockets are never closed under a client. */
const FRONT_KEEP_ALIVE_MS = 10 * 60_000;

const API_PATH = /^\/v2\/(.+?)\/(manifests|blobs|tags)\//;

/** A node:http reverse proxy on 127.0.0.1:0 in front of `upstream` ('127.0.0.1:PORT'). */
export async function startFront(t: ExecutionContext, upstream: string, opts: FrontOptions = {}): Promise<Front> {
  const stats = { proxied: 0, failed: 0, tokenRequests: 0, challenged: 0, blobGets: 0 };
  const requests: string[] = [];
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
    if (req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '')) stats.blobGets++;
    requests.push(`${req.method ?? '?'} ${req.url ?? ''}`);
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
  // The front shares its event loop with the test's client: under load a stall longer than Node's
  // default 5 s keep-alive timeout let the server close an idle socket just as the client reused it,
  // so a try died with ECONNRESET before reaching this handler (a retry-count test saw 3 of 4 tries).
  server.keepAliveTimeout = FRONT_KEEP_ALIVE_MS;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { host, stats, requests };
}
