/**
 * `starlight proxy`: resolve options (src/proxy/config.ts), read token/TLS files, run the proxy until
 * SIGINT/SIGTERM, then close gracefully. Prints one line `listening on <url>` to stdout when ready.
 */
import { readFileSync } from 'node:fs';
import { StarlightError } from '../errors.js';
import { createLogger } from '../log.js';
import { parseDockerConfig } from '../oci/auth.js';
import { parseTokenScopes, resolveProxyConfig } from '../proxy/config.js';
import { startProxy } from '../proxy/server.js';
import { untilSignal } from './signals.js';

const USAGE = `usage: starlight proxy --registry URL [--registry URL…] [--listen 127.0.0.1:8090] [--data DIR]
       [--cache-size 10GiB] [--staging-size 4GiB] [--index-concurrency 4] [--token-file F] [--tls-cert F --tls-key F]
       [--platform linux/amd64] [--registry-auth DOCKER_CONFIG_JSON] [--db postgres://user@host/db] [--advertise http://this-replica:8090]
       [--config FILE] [--insecure] [--max-connections 1024] [--gc-interval 3600]
       [--max-layer-size 64GiB] [--max-layer-entries 1000000] [--max-layer-metadata 256MiB]
       [--max-compression-ratio 2000] [--max-zstd-window 128MiB]
--gc-interval SECONDS: metadata GC (images no ref points at, their layers and contents) runs at
start and then this often; 0 = at start only.
A --listen address other than loopback needs --tls-cert/--tls-key and --token-file, or --insecure.
Every option can also be set as STARLIGHT_PROXY_<OPTION> (e.g. STARLIGHT_PROXY_CACHE_SIZE) or as
<OPTION>=value in the --config file; precedence: flag > environment > file > default.
Upstream registry credentials: --registry-auth FILE (docker config.json "auths"), else
$DOCKER_CONFIG/config.json or ~/.docker/config.json if present.`;

function readConfigFile(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new StarlightError('SL_ERR_CONFIG', `cannot read ${what} ${path}`, { cause: err, details: { file: path } });
  }
}

export async function runProxyCommand(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const cfg = resolveProxyConfig({ argv, env: process.env, readFile: (p) => readFileSync(p, 'utf8') });
  const scoped = cfg.tokenFile !== undefined ? parseTokenScopes(readConfigFile(cfg.tokenFile, 'token file').toString('utf8'), cfg.tokenFile) : undefined;
  const tokens = scoped?.pull;
  const tls =
    cfg.tlsCert !== undefined && cfg.tlsKey !== undefined
      ? { cert: readConfigFile(cfg.tlsCert, 'TLS certificate'), key: readConfigFile(cfg.tlsKey, 'TLS key') }
      : undefined;
  const logger = createLogger({ fields: { component: 'proxy' } });
  // An explicit --registry-auth must exist; the docker default may be absent (RegistryClient's default).
  const credentials =
    cfg.registryAuth !== undefined ? parseDockerConfig(readConfigFile(cfg.registryAuth, 'registry auth file').toString('utf8'), cfg.registryAuth) : undefined;
  if (cfg.registryAuth !== undefined) logger.info('registry-auth-loaded', { file: cfg.registryAuth });
  if (cfg.insecure && (tls === undefined || tokens === undefined)) {
    logger.warn('proxy-insecure', { listen: `${cfg.host}:${cfg.port}`, tls: tls !== undefined, token: tokens !== undefined, note: '--insecure: anyone who reaches this address can read every image the proxy serves and upload traces' });
  }
  const proxy = await startProxy({
    registries: cfg.registries,
    host: cfg.host,
    port: cfg.port,
    dataDir: cfg.dataDir,
    cacheBytes: cfg.cacheBytes,
    stagingBytes: cfg.stagingBytes,
    indexConcurrency: cfg.indexConcurrency,
    layerLimits: cfg.layerLimits,
    maxConnections: cfg.maxConnections,
    gcIntervalMs: cfg.gcIntervalSec * 1000,
    tokens,
    traceTokens: scoped?.trace,
    tls,
    defaultPlatform: cfg.platform,
    logger,
    ...(credentials ? { credentials } : {}),
    ...(cfg.db !== undefined ? { db: cfg.db } : {}),
    ...(cfg.advertise !== undefined ? { advertiseUrl: cfg.advertise } : {}),
  });
  process.stdout.write(`listening on ${proxy.url}\n`);
  await untilSignal();
  await proxy.close();
  return 0;
}
