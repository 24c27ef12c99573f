/**
 * `starlight proxy`: resolve options (src/proxy/config.ts), read token/TLS files, run the proxy until
 * SIGINT/SIGTERM, then close gracefully. Prints one line `listening on <url>` to stdout when ready.
 */
import { readFileSync } from 'node:fs';
import { StarlightError } from '../errors.js';
import { createLogger } from '../log.js';
import { parseTokenFile, resolveProxyConfig } from '../proxy/config.js';
import { startProxy } from '../proxy/server.js';

const USAGE = `usage: starlight proxy --registry URL [--registry URL…] [--listen 127.0.0.1:8090] [--data DIR]
       [--cache-size 10GiB] [--staging-size 4GiB] [--index-concurrency 4] [--token-file F] [--tls-cert F --tls-key F]
       [--platform linux/amd64] [--db postgres://user@host/db] [--advertise http://this-replica:8090] [--config FILE]
Every option can also be set as STARLIGHT_PROXY_<OPTION> (e.g. STARLIGHT_PROXY_CACHE_SIZE) or as
<OPTION>=value in the --config file; precedence: flag > environment > file > default.`;

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
  const tokens = cfg.tokenFile !== undefined ? parseTokenFile(readConfigFile(cfg.tokenFile, 'token file').toString('utf8'), cfg.tokenFile) : undefined;
  const tls =
    cfg.tlsCert !== undefined && cfg.tlsKey !== undefined
      ? { cert: readConfigFile(cfg.tlsCert, 'TLS certificate'), key: readConfigFile(cfg.tlsKey, 'TLS key') }
      : undefined;
  const logger = createLogger({ fields: { component: 'proxy' } });
  const proxy = await startProxy({
    registries: cfg.registries,
    host: cfg.host,
    port: cfg.port,
    dataDir: cfg.dataDir,
    cacheBytes: cfg.cacheBytes,
    stagingBytes: cfg.stagingBytes,
    indexConcurrency: cfg.indexConcurrency,
    tokens,
    tls,
    defaultPlatform: cfg.platform,
    logger,
    ...(cfg.db !== undefined ? { db: cfg.db } : {}),
    ...(cfg.advertise !== undefined ? { advertiseUrl: cfg.advertise } : {}),
  });
  process.stdout.write(`listening on ${proxy.url}\n`);
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await proxy.close();
  return 0;
}
