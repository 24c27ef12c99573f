/**
 * Resolution of the proxy's options in ONE function: command-line flags > environment
 * (STARLIGHT_PROXY_*) > config file (KEY=VALUE lines, as the original's config.env) > defaults, with
 * validation errors (SL_ERR_CONFIG) naming the option and where its value came from.
 *
 * Not here: reading token/TLS files or starting the server (src/cli/proxy.ts, server.ts).
 */
import { StarlightError } from '../errors.js';
import { DEFAULT_LAYER_LIMITS, type LayerLimits } from '../layers/limits.js';
import { isLoopback, parseListen } from '../oci/reference.js';
import { DEFAULT_GC_INTERVAL_S } from './gc.js';
import { DEFAULT_INDEX_CONCURRENCY } from './indexer-service.js';
import { DEFAULT_MAX_CONNECTIONS } from './server.js';

/** Default listen address (loopback: exposing the proxy is an explicit choice). */
const DEFAULT_LISTEN = '127.0.0.1:8090';
/** Default data dir. */
export const DEFAULT_DATA_DIR = '/var/lib/starlight/proxy';
/** Default content cache bound: 10 GiB of encoded bytes. */
const DEFAULT_CACHE_SIZE = '10GiB';
/** Default bound on raw contents staged on disk until encoded (first pulls): 4 GiB. */
const DEFAULT_STAGING_SIZE = '4GiB';
/** Prefix of environment variables, e.g. STARLIGHT_PROXY_LISTEN. */
const ENV_PREFIX = 'STARLIGHT_PROXY_';

export interface ProxyConfig {
  /** --registry (repeatable; env/file: comma-separated). First = default for refs without a host. */
  registries: string[];
  /** --listen host:port. */
  host: string;
  port: number;
  /** --data dir. */
  dataDir: string;
  /** --cache-size, bytes. */
  cacheBytes: number;
  /** --token-file: bearer tokens, one per line. */
  tokenFile?: string;
  /** --tls-cert / --tls-key: PEM files; both or neither. */
  tlsCert?: string;
  tlsKey?: string;
  /** --platform: default platform of requests that name none. */
  platform: string;
  /** --staging-size, bytes: raw contents of freshly indexed layers kept on disk until encoded. */
  stagingBytes: number;
  /** --index-concurrency: layer passes (fetch + TOC) at once. */
  indexConcurrency: number;
  /**
   * --registry-auth: docker config.json with the upstream registries' credentials (issue 16).
   * Unset: $DOCKER_CONFIG/config.json or ~/.docker/config.json if present (RegistryClient's default).
   */
  registryAuth?: string;
  /** --max-layer-size, --max-layer-entries, --max-layer-metadata, --max-compression-ratio, --max-zstd-window. */
  layerLimits: Partial<LayerLimits>;
  /** --max-connections: client connections at once. */
  maxConnections: number;
  /** --gc-interval: seconds between metadata GC runs (gc.ts; also one at start); 0 = at start only. */
  gcIntervalSec: number;
  /** --insecure: allows a non-loopback listen address without TLS and a token (logged as a warning). */
  insecure: boolean;
  /** --db postgres://…: store shared by proxy replicas; absent: the SQLite store in --data. */
  db?: string;
  /** --advertise URL: where other replicas reach this one (default: the listen URL). */
  advertise?: string;
}

/** Option names (flag without '--'; env/file key = upper-case with '_'). */
const OPTIONS = [
  'registry', 'listen', 'data', 'cache-size', 'token-file', 'tls-cert', 'tls-key', 'platform', 'config', 'staging-size', 'index-concurrency', 'registry-auth',
  'max-layer-size', 'max-layer-entries', 'max-layer-metadata', 'max-compression-ratio', 'max-zstd-window', 'max-connections', 'insecure', 'db', 'advertise',
  'gc-interval',
] as const;
type Option = (typeof OPTIONS)[number];
/** Options that take no value on the command line (`--insecure`; env/file: true/false/1/0). */
const BOOLEAN_OPTIONS: ReadonlySet<Option> = new Set(['insecure']);

function cfgError(message: string, details: Record<string, unknown>): StarlightError {
  return new StarlightError('SL_ERR_CONFIG', message, { details });
}

const keyOf = (o: Option): string => o.toUpperCase().replace(/-/g, '_');

/** Parses `--opt value` / `--opt=value` flags. `registry` may repeat. Positional args are refused. */
function parseFlags(argv: string[]): Map<Option, string[]> {
  const out = new Map<Option, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) throw cfgError(`unexpected argument ${a}`, { argument: a });
    const eq = a.indexOf('=');
    const name = (eq >= 0 ? a.slice(2, eq) : a.slice(2)) as Option;
    if (!OPTIONS.includes(name)) throw cfgError(`unknown option --${name}`, { option: name });
    const value = eq >= 0 ? a.slice(eq + 1) : BOOLEAN_OPTIONS.has(name) ? 'true' : argv[++i];
    if (value === undefined) throw cfgError(`option --${name} needs a value`, { option: name });
    out.set(name, [...(out.get(name) ?? []), value]);
  }
  return out;
}

/** Parses KEY=VALUE lines ('#' comments, blank lines, optional quotes, optional STARLIGHT_PROXY_ prefix). */
function parseConfigFile(text: string, file: string): Map<string, string> {
  const out = new Map<string, string>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (m === null) throw cfgError(`${file}:${i + 1}: expected KEY=VALUE`, { file, line: i + 1 });
    let key = m[1]!.toUpperCase();
    if (key.startsWith(ENV_PREFIX)) key = key.slice(ENV_PREFIX.length);
    if (!OPTIONS.some((o) => keyOf(o) === key)) throw cfgError(`${file}:${i + 1}: unknown key ${m[1]}`, { file, line: i + 1, key: m[1] });
    let v = m[2]!;
    if ((v.startsWith('"') && v.endsWith('"')) || (v.startsWith("'") && v.endsWith("'"))) v = v.slice(1, -1);
    out.set(key, v);
  });
  return out;
}

const UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1024, kib: 1024, kb: 1000,
  m: 1024 ** 2, mib: 1024 ** 2, mb: 1000 ** 2,
  g: 1024 ** 3, gib: 1024 ** 3, gb: 1000 ** 3,
  t: 1024 ** 4, tib: 1024 ** 4, tb: 1000 ** 4,
};

/** '10GiB', '500MB', '1.5G' (K/M/G/T alone = binary), '1048576' → bytes. */
export function parseSize(s: string): number | undefined {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$/.exec(s);
  if (m === null) return undefined;
  const unit = UNITS[m[2]!.toLowerCase()];
  if (unit === undefined) return undefined;
  return Math.floor(Number(m[1]) * unit);
}


export interface ConfigSources {
  argv: string[];
  env: NodeJS.ProcessEnv;
  /** Reads the config file named by --config / STARLIGHT_PROXY_CONFIG. */
  readFile: (path: string) => string;
}

/** Resolves every option: flag > env > file > default; throws SL_ERR_CONFIG. */
export function resolveProxyConfig(src: ConfigSources): ProxyConfig {
  const flags = parseFlags(src.argv);
  const envGet = (o: Option): string | undefined => src.env[ENV_PREFIX + keyOf(o)];
  const configPath = flags.get('config')?.at(-1) ?? envGet('config');
  let file = new Map<string, string>();
  if (configPath !== undefined) {
    let text: string;
    try {
      text = src.readFile(configPath);
    } catch (err) {
      throw new StarlightError('SL_ERR_CONFIG', `cannot read config file ${configPath}`, { cause: err, details: { file: configPath } });
    }
    file = parseConfigFile(text, configPath);
  }
  /** Value and where it came from. */
  const get = (o: Option): { v: string; from: string } | undefined => {
    const f = flags.get(o);
    if (f !== undefined) return { v: f.at(-1)!, from: `--${o}` };
    const e = envGet(o);
    if (e !== undefined && e !== '') return { v: e, from: ENV_PREFIX + keyOf(o) };
    const c = file.get(keyOf(o));
    if (c !== undefined && c !== '') return { v: c, from: `${configPath}:${keyOf(o)}` };
    return undefined;
  };

  const regFlags = flags.get('registry');
  const regRaw = regFlags ?? get('registry')?.v.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (regRaw === undefined || regRaw.length === 0) {
    throw cfgError('no upstream registry: pass --registry URL (or STARLIGHT_PROXY_REGISTRY / REGISTRY= in --config)', { option: 'registry' });
  }
  for (const r of regRaw) checkRegistry(r);
  const listen = get('listen') ?? { v: DEFAULT_LISTEN, from: 'default' };
  const hp = parseListen(listen.v);
  if (hp === undefined) throw cfgError(`${listen.from}=${listen.v} is not host:port`, { option: 'listen', value: listen.v });
  const size = get('cache-size') ?? { v: DEFAULT_CACHE_SIZE, from: 'default' };
  const cacheBytes = parseSize(size.v);
  if (cacheBytes === undefined || cacheBytes <= 0) {
    throw cfgError(`${size.from}=${size.v} is not a size (e.g. 10GiB, 500MB)`, { option: 'cache-size', value: size.v });
  }
  const staging = get('staging-size') ?? { v: DEFAULT_STAGING_SIZE, from: 'default' };
  const stagingBytes = parseSize(staging.v);
  if (stagingBytes === undefined) throw cfgError(`${staging.from}=${staging.v} is not a size (e.g. 4GiB; 0 turns staging off)`, { option: 'staging-size', value: staging.v });
  const conc = get('index-concurrency') ?? { v: String(DEFAULT_INDEX_CONCURRENCY), from: 'default' };
  const indexConcurrency = Number(conc.v);
  if (!Number.isInteger(indexConcurrency) || indexConcurrency < 1 || indexConcurrency > 64) {
    throw cfgError(`${conc.from}=${conc.v} is not an integer in 1..64`, { option: 'index-concurrency', value: conc.v });
  }
  const sizeOpt = (o: Option, dflt: number): number => {
    const g = get(o);
    if (g === undefined) return dflt;
    const n = parseSize(g.v);
    if (n === undefined || n <= 0) throw cfgError(`${g.from}=${g.v} is not a positive size (e.g. 64GiB, 512MiB)`, { option: o, value: g.v });
    return n;
  };
  const intOpt = (o: Option, dflt: number, min: number, max: number): number => {
    const g = get(o);
    if (g === undefined) return dflt;
    const n = Number(g.v);
    if (!/^[0-9]+$/.test(g.v.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw cfgError(`${g.from}=${g.v} is not an integer in ${min}..${max}`, { option: o, value: g.v });
    }
    return n;
  };
  const layerLimits: Partial<LayerLimits> = {
    maxUncompressedBytes: sizeOpt('max-layer-size', DEFAULT_LAYER_LIMITS.maxUncompressedBytes),
    maxEntries: intOpt('max-layer-entries', DEFAULT_LAYER_LIMITS.maxEntries, 1, 100_000_000),
    maxMetadataBytes: sizeOpt('max-layer-metadata', DEFAULT_LAYER_LIMITS.maxMetadataBytes),
    maxRatio: intOpt('max-compression-ratio', DEFAULT_LAYER_LIMITS.maxRatio, 0, 1_000_000_000),
    maxZstdWindowBytes: sizeOpt('max-zstd-window', DEFAULT_LAYER_LIMITS.maxZstdWindowBytes),
  };
  const maxConnections = intOpt('max-connections', DEFAULT_MAX_CONNECTIONS, 1, 1_000_000);
  const gcIntervalSec = intOpt('gc-interval', DEFAULT_GC_INTERVAL_S, 0, 30 * 24 * 3600);
  const insecureOpt = get('insecure');
  if (insecureOpt !== undefined && !/^(true|false|1|0|yes|no)$/i.test(insecureOpt.v)) {
    throw cfgError(`${insecureOpt.from}=${insecureOpt.v} is not true or false`, { option: 'insecure', value: insecureOpt.v });
  }
  const insecure = insecureOpt !== undefined && /^(true|1|yes)$/i.test(insecureOpt.v);
  const dataDir = get('data')?.v ?? DEFAULT_DATA_DIR;
  if (dataDir.trim() === '' || dataDir.includes('\0')) throw cfgError(`--data ${JSON.stringify(dataDir)} is not a directory path`, { option: 'data', value: dataDir });
  const platform = get('platform')?.v ?? 'linux/amd64';
  if (!/^[a-z0-9_.-]+\/[a-z0-9_.-]+(\/[a-z0-9_.-]+)?$/i.test(platform)) {
    throw cfgError(`platform ${platform} is not os/arch[/variant]`, { option: 'platform', value: platform });
  }
  const cert = get('tls-cert')?.v;
  const key = get('tls-key')?.v;
  if ((cert === undefined) !== (key === undefined)) throw cfgError('--tls-cert and --tls-key go together', { option: cert ? 'tls-key' : 'tls-cert' });
  const tokenFile = get('token-file')?.v;
  const exposed = !isLoopback(hp.host.includes(':') ? `[${hp.host}]` : hp.host);
  if (exposed && !(cert !== undefined && tokenFile !== undefined) && !insecure) {
    throw cfgError(
      `${listen.from}=${listen.v} is not a loopback address: serving it needs --tls-cert/--tls-key and --token-file (or --insecure to accept an open, unencrypted proxy)`,
      { option: 'listen', value: listen.v },
    );
  }
  const out: ProxyConfig = {
    registries: regRaw,
    host: hp.host,
    port: hp.port,
    dataDir,
    cacheBytes,
    platform,
    stagingBytes,
    indexConcurrency,
    layerLimits,
    maxConnections,
    gcIntervalSec,
    insecure,
  };
  if (tokenFile !== undefined) out.tokenFile = tokenFile;
  const registryAuth = get('registry-auth')?.v;
  if (registryAuth !== undefined) out.registryAuth = registryAuth;
  const db = get('db');
  if (db !== undefined) {
    if (!/^postgres(ql)?:\/\/./i.test(db.v)) throw cfgError(`${db.from} is not a postgres://… URL (omit it for the SQLite store in --data)`, { option: 'db' });
    out.db = db.v;
  }
  const adv = get('advertise');
  if (adv !== undefined) {
    if (!/^https?:\/\/./i.test(adv.v)) throw cfgError(`${adv.from}=${adv.v} is not an http(s):// URL`, { option: 'advertise', value: adv.v });
    out.advertise = adv.v;
  }
  if (cert !== undefined && key !== undefined) {
    out.tlsCert = cert;
    out.tlsKey = key;
  }
  return out;
}

/**
 * A --registry value: host[:port] or an http(s) URL of a registry root (no path, query, user info).
 * Anything else (ftp://x, a path, an empty host) is SL_ERR_CONFIG naming the flag.
 */
function checkRegistry(v: string): void {
  const bad = (why: string): StarlightError => cfgError(`--registry ${v} ${why} (expected host[:port] or http(s)://host[:port])`, { option: 'registry', value: v });
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(v)?.[1]?.toLowerCase();
  if (scheme !== undefined && scheme !== 'http' && scheme !== 'https') throw bad(`has scheme ${scheme}://, not http or https`);
  let u: URL;
  try {
    u = new URL(scheme === undefined ? `https://${v}` : v);
  } catch {
    throw bad('is not a URL');
  }
  if (u.hostname === '') throw bad('has no host');
  if (u.username !== '' || u.password !== '') throw bad('carries credentials (use ~/.docker/config.json)');
  if ((u.pathname !== '/' && u.pathname !== '') || u.search !== '' || u.hash !== '') throw bad('has a path or query');
}

/** Tokens of a token file: one per line; blank lines and '#' comments ignored; scopes (see parseTokenScopes) dropped. */
export function parseTokenFile(text: string, file: string): string[] {
  const s = parseTokenScopes(text, file);
  return [...new Set([...s.pull, ...s.trace])];
}

/** Scopes a token line may name: 'pull' (deltas, contents, notify, sessions, reading traces), 'trace' (uploading traces). */
const TOKEN_SCOPES = ['pull', 'trace'] as const;

/**
 * A token file by scope: lines `TOKEN` (both scopes, as before scopes existed) or `TOKEN SCOPE[,SCOPE]`
 * (e.g. `s3cret pull`, `tr4ce trace`); blank lines and '#' comments ignored.
 */
export function parseTokenScopes(text: string, file: string): { pull: string[]; trace: string[] } {
  const out = { pull: [] as string[], trace: [] as string[] };
  text.split('\n').forEach((raw, i) => {
    const l = raw.trim();
    if (l === '' || l.startsWith('#')) return;
    const [token, scopeList, ...rest] = l.split(/\s+/);
    const scopes = scopeList === undefined ? [...TOKEN_SCOPES] : scopeList.split(',');
    if (rest.length > 0 || scopes.some((s) => !(TOKEN_SCOPES as readonly string[]).includes(s))) {
      throw cfgError(`${file}:${i + 1}: expected TOKEN [pull|trace|pull,trace]`, { file, line: i + 1, option: 'token-file' });
    }
    for (const s of scopes) out[s as 'pull' | 'trace'].push(token!);
  });
  if (out.pull.length + out.trace.length === 0) throw cfgError(`token file ${file} holds no token`, { file });
  return out;
}
