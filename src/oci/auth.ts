/**
 * Registry authentication: credentials (explicit or ~/.docker/config.json), `WWW-Authenticate`
 * challenges, and the Bearer token exchange of the distribution token spec, with a per-client token
 * cache keyed by registry and scope.
 *
 * Flow (as docker): a request goes out with whatever this registry needed last time (a cached token
 * for the scope, or Basic); on 401 the client calls `onChallenge()` and retries once.
 *
 * Not here: credential helpers (`credsStore`/`credHelpers` in docker's config are ignored: TODO(oci):
 * run `docker-credential-<name> get`), OAuth2 POST token flow, refresh tokens.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { StarlightError } from '../errors.js';
import { DOCKER_HUB, DOCKER_HUB_API } from './reference.js';

export interface Credential {
  username: string;
  password: string;
}

/** Returns the credential for a registry host (as in references, e.g. 'docker.io', '127.0.0.1:5000'). */
export type CredentialProvider = (registry: string) => Credential | undefined;

export interface Challenge {
  /** Lower-case scheme: 'bearer' or 'basic' (others are kept but not answered). */
  scheme: string;
  /** Auth-params, keys lower-cased: realm, service, scope, error… */
  params: Record<string, string>;
}

/** Token lifetime when the token server omits expires_in (token spec: 60 s). */
const DEFAULT_TOKEN_TTL_S = 60;
/** Tokens are dropped this long before they expire, so a request never carries a dying token. */
const TOKEN_EXPIRY_MARGIN_MS = 10_000;
/** docker's config keys for Docker Hub (legacy v1 URL first, as docker writes it). */
const DOCKER_HUB_KEYS = ['https://index.docker.io/v1/', 'index.docker.io', DOCKER_HUB, DOCKER_HUB_API];

/**
 * Parses a `WWW-Authenticate` header (RFC 7235): one or more challenges, each `scheme k=v, k="v"…`.
 * Quoted values may contain commas and escaped quotes.
 */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  const token = /[A-Za-z0-9!#$%&'*+.^_`|~\/-]+/y;
  let current: Challenge | undefined;
  let i = 0;
  const skip = (chars: RegExp): void => {
    while (i < header.length && chars.test(header[i])) i++;
  };
  while (i < header.length) {
    skip(/[\s,]/);
    token.lastIndex = i;
    const m = token.exec(header);
    if (!m) {
      i++;
      continue;
    }
    i = token.lastIndex;
    skip(/\s/);
    if (header[i] !== '=') {
      current = { scheme: m[0].toLowerCase(), params: {} };
      out.push(current);
      continue;
    }
    i++;
    skip(/\s/);
    let value = '';
    if (header[i] === '"') {
      for (i++; i < header.length && header[i] !== '"'; i++) value += header[i] === '\\' ? header[++i] ?? '' : header[i];
      i++;
    } else {
      while (i < header.length && header[i] !== ',' && !/\s/.test(header[i])) value += header[i++];
    }
    if (current) current.params[m[0].toLowerCase()] = value;
  }
  return out;
}

function strip(key: string): string {
  return key.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '').toLowerCase();
}

/**
 * Parses docker's config.json text into a provider: `auths[host].auth` (base64 'user:pass') or
 * `auths[host].username`/`password`. Keys may carry a scheme or path (`https://host/v1/`).
 */
export function parseDockerConfig(text: string, source = 'docker config'): CredentialProvider {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new StarlightError('SL_ERR_CONFIG', `${source} is not valid JSON: ${(err as Error).message}`, {
      cause: err,
      details: { path: source },
    });
  }
  const auths = (doc as { auths?: Record<string, { auth?: string; username?: string; password?: string }> })?.auths ?? {};
  const table = new Map<string, Credential>();
  for (const [key, entry] of Object.entries(auths)) {
    if (!entry || typeof entry !== 'object') continue;
    let cred: Credential | undefined;
    if (typeof entry.auth === 'string' && entry.auth !== '') {
      const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) {
        throw new StarlightError('SL_ERR_CONFIG', `${source}: auths["${key}"].auth is not base64 of user:password`, {
          details: { path: source, registry: key },
        });
      }
      cred = { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    } else if (typeof entry.username === 'string' && typeof entry.password === 'string') {
      cred = { username: entry.username, password: entry.password };
    }
    if (cred) table.set(strip(key), cred);
  }
  return (registry) => {
    const keys = registry === DOCKER_HUB || registry === DOCKER_HUB_API ? DOCKER_HUB_KEYS : [registry];
    for (const k of keys) {
      const c = table.get(strip(k));
      if (c) return c;
    }
    return undefined;
  };
}

/** Reads `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`; a missing file means no credentials. */
export function loadDockerConfig(path?: string): CredentialProvider {
  const file = path ?? join(process.env.DOCKER_CONFIG ?? join(homedir(), '.docker'), 'config.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return () => undefined;
    throw new StarlightError('SL_ERR_CONFIG', `cannot read docker config ${file}: ${(err as Error).message}`, {
      cause: err,
      details: { path: file },
    });
  }
  return parseDockerConfig(text, file);
}

/** Credentials given as a map host → credential (e.g. from CLI flags). */
export function staticCredentials(map: Record<string, Credential>): CredentialProvider {
  return (registry) => map[registry];
}

export function basicHeader(c: Credential): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
}

/** `repository:<repo>:pull` or `…:pull,push` (distribution token scope grammar). */
export function repositoryScope(repository: string, push: boolean): string {
  return `repository:${repository}:${push ? 'pull,push' : 'pull'}`;
}

/** Fetches a token; injected so the Authenticator stays free of HTTP details (client.ts supplies it). */
export type TokenFetcher = (url: string, headers: Record<string, string>) => Promise<{ status: number; body: Buffer }>;

interface CachedToken {
  token: string;
  expiresAt: number;
}

/**
 * Per-client auth state: what each registry challenged with last, and tokens by (registry, scope).
 * One instance per RegistryClient, never shared between clients.
 */
export class Authenticator {
  private readonly challenges = new Map<string, Challenge>();
  private readonly tokens = new Map<string, CachedToken>();
  private readonly inflight = new Map<string, Promise<string>>();

  constructor(
    private readonly credentials: CredentialProvider,
    private readonly fetchToken: TokenFetcher,
    private readonly now: () => number = Date.now,
  ) {}

  /** The Authorization header for a request to `registry` needing `scope`, or undefined (anonymous). */
  async authorize(registry: string, scope: string): Promise<string | undefined> {
    const ch = this.challenges.get(registry);
    if (!ch) return undefined;
    if (ch.scheme === 'basic') {
      const cred = this.credentials(registry);
      return cred ? basicHeader(cred) : undefined;
    }
    return `Bearer ${await this.token(registry, ch, scope)}`;
  }

  /**
   * Records a 401's challenge. Returns false if retrying cannot help (unknown scheme, Basic without
   * credentials, or the same answer already failed), so the caller reports SL_ERR_OCI_UNAUTHORIZED.
   */
  onChallenge(registry: string, header: string | null, scope: string, sent: string | undefined): boolean {
    const chs = header ? parseChallenges(header) : [];
    const ch = chs.find((c) => c.scheme === 'bearer') ?? chs.find((c) => c.scheme === 'basic');
    if (!ch) return false;
    this.challenges.set(registry, ch);
    if (ch.scheme === 'basic') return sent === undefined && this.credentials(registry) !== undefined;
    if (sent?.startsWith('Bearer ')) {
      // The token we sent was refused: drop it; retry only if the server wants a different scope.
      this.tokens.delete(`${registry} ${scope}`);
      return ch.params.scope !== undefined && ch.params.scope !== scope;
    }
    return true;
  }

  private token(registry: string, ch: Challenge, scope: string): Promise<string> {
    const key = `${registry} ${scope}`;
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > this.now()) return Promise.resolve(cached.token);
    let p = this.inflight.get(key);
    if (!p) {
      p = this.requestToken(registry, ch, scope).finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }

  private async requestToken(registry: string, ch: Challenge, scope: string): Promise<string> {
    const realm = ch.params.realm;
    if (!realm) {
      throw new StarlightError('SL_ERR_OCI_REGISTRY', `registry ${registry} sent a Bearer challenge without a realm`, {
        details: { registry },
      });
    }
    const url = new URL(realm);
    if (ch.params.service) url.searchParams.set('service', ch.params.service);
    url.searchParams.append('scope', scope);
    const headers: Record<string, string> = {};
    const cred = this.credentials(registry);
    if (cred) headers.authorization = basicHeader(cred);
    const started = this.now();
    const res = await this.fetchToken(url.toString(), headers);
    if (res.status === 401 || res.status === 403) {
      throw new StarlightError(
        res.status === 401 ? 'SL_ERR_OCI_UNAUTHORIZED' : 'SL_ERR_OCI_DENIED',
        `registry ${registry}: token server ${url.origin}${url.pathname} refused ${cred ? `user ${cred.username}` : 'anonymous access'} for ${scope} (HTTP ${res.status})`,
        { details: { registry, scope, status: res.status } },
      );
    }
    let body: { token?: string; access_token?: string; expires_in?: number } | undefined;
    try {
      body = JSON.parse(res.body.toString('utf8')) as typeof body;
    } catch {
      body = undefined;
    }
    const token = body?.token ?? body?.access_token;
    if (res.status !== 200 || typeof token !== 'string' || token === '') {
      throw new StarlightError('SL_ERR_OCI_REGISTRY', `registry ${registry}: token server ${url.origin}${url.pathname} answered HTTP ${res.status} without a token`, {
        details: { registry, scope, status: res.status },
      });
    }
    const ttl = typeof body?.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_TTL_S;
    this.tokens.set(`${registry} ${scope}`, { token, expiresAt: started + ttl * 1000 - TOKEN_EXPIRY_MARGIN_MS });
    return token;
  }
}
