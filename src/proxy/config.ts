/**
 * Resolution of the proxy's options in ONE function: command-line flags > environment
 * (STARLIGHT_PROXY_*) > config file (KEY=VALUE lines, as the original's config.env) > defaults, with
 * validation errors (SL_ERR_CONFIG) naming the option and where its value came from.
 *
 * Not here: reading token/TLS files or starting the server (src/cli/proxy.ts, server.ts).
 */
import { StarlightError } from '../errors.js';
import { DEFAULT_INDEX_CONCURRENCY } from './indexer-service.js';

/** Default listen address (loopback: exposing the proxy is an explicit choice). */
export const DEFAULT_LISTEN = '127.0.0.1:8090';
/** Default data dir. */
export const DEFAULT_DATA_DIR = '/var/lib/starlight/proxy';
/** Default content cache bound: 10 GiB of encoded bytes. */
export const DEFAULT_CACHE_SIZE = '10GiB';
/** Default bound on raw contents staged on disk until encoded (first pulls): 4 GiB. */
export const DEFAULT_STAGING_SIZE = '4GiB';
/** Prefix of environment variables, e.g. STARLIGHT_PROXY_LISTEN. */
export const ENV_PREFIX = 'STARLIGHT_PROXY_';

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
  /** --db postgres://…: store shared by proxy replicas; absent: the SQLite store in --data. */
  db?: string;
  /** --advertise URL: where other replicas reach this one (default: the listen URL). */
  advertise?: string;
}

/** Option names (flag without '--'; env/file key = upper-case with '_'). */
const OPTIONS = ['registry', 'listen', 'data', 'cache-size', 'token-file', 'tls-cert', 'tls-key', 'platform', 'config', 'staging-size', 'index-concurrency', 'db', 'advertise'] as const;
type Option = (typeof OPTIONS)[number];

function cfgError(message: string, details: Record<string, unknown>): StarlightError {
  return new StarlightError('SL_ERR_CONFIG', message, { details });
}

const keyOf = (o: Option): string => o.toUpperCase().replace(/-/g, '_');

/** Parses `--opt value` / `--opt=value` flags. `registry` may repeat. Positional args are refused. */
export function parseFlags(argv: string[]): Map<Option, string[]> {
  const out = new Map<Option, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) throw cfgError(`unexpected argument ${a}`, { argument: a });
    const eq = a.indexOf('=');
    const name = (eq >= 0 ? a.slice(2, eq) : a.slice(2)) as Option;
    if (!OPTIONS.includes(name)) throw cfgError(`unknown option --${name}`, { option: name });
    const value = eq >= 0 ? a.slice(eq + 1) : argv[++i];
    if (value === undefined) throw cfgError(`option --${name} needs a value`, { option: name });
    out.set(name, [...(out.get(name) ?? []), value]);
  }
  return out;
}

/** Parses KEY=VALUE lines ('#' comments, blank lines, optional quotes, optional STARLIGHT_PROXY_ prefix). */
export function parseConfigFile(text: string, file: string): Map<string, string> {
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

export function parseListen(s: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):([0-9]{1,5})$/.exec(s);
  if (m === null) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: m[1] ?? (m[2] === '' ? '0.0.0.0' : m[2]!), port };
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
  const platform = get('platform')?.v ?? 'linux/amd64';
  if (!/^[a-z0-9_.-]+\/[a-z0-9_.-]+(\/[a-z0-9_.-]+)?$/i.test(platform)) {
    throw cfgError(`platform ${platform} is not os/arch[/variant]`, { option: 'platform', value: platform });
  }
  const cert = get('tls-cert')?.v;
  const key = get('tls-key')?.v;
  if ((cert === undefined) !== (key === undefined)) throw cfgError('--tls-cert and --tls-key go together', { option: cert ? 'tls-key' : 'tls-cert' });
  const out: ProxyConfig = {
    registries: regRaw,
    host: hp.host,
    port: hp.port,
    dataDir: get('data')?.v ?? DEFAULT_DATA_DIR,
    cacheBytes,
    platform,
    stagingBytes,
    indexConcurrency,
  };
  const tokenFile = get('token-file')?.v;
  if (tokenFile !== undefined) out.tokenFile = tokenFile;
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

/** Tokens of a token file: one per line; blank lines and '#' comments ignored. */
export function parseTokenFile(text: string, file: string): string[] {
  const tokens = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  if (tokens.length === 0) throw cfgError(`token file ${file} holds no token`, { file });
  return tokens;
}
