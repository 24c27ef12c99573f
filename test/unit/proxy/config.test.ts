import test from 'ava';
import { parseSize, resolveProxyConfig, parseTokenFile, DEFAULT_DATA_DIR } from '../../../src/proxy/config.js';
import { parseListen } from '../../../src/oci/reference.js';

const files: Record<string, string> = {
  '/etc/sl.env': '# proxy\nREGISTRY=file.example:5000\nLISTEN=0.0.0.0:9000\nINSECURE=true\nCACHE_SIZE="2GiB"\nSTARLIGHT_PROXY_DATA=/srv/file\n',
  '/etc/bad.env': 'NOT A LINE\n',
  '/etc/unknown.env': 'COLOR=blue\n',
};
const readFile = (p: string): string => {
  const v = files[p];
  if (v === undefined) throw new Error('ENOENT');
  return v;
};
const resolve = (argv: string[], env: Record<string, string> = {}) => resolveProxyConfig({ argv, env, readFile });
const codeOf = (f: () => unknown): string | undefined => {
  try {
    f();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
};

test('precedence: flag > env > file > default', (t) => {
  const fileOnly = resolve(['--config', '/etc/sl.env']);
  t.deepEqual(fileOnly.registries, ['file.example:5000']);
  t.is(fileOnly.port, 9000);
  t.is(fileOnly.cacheBytes, 2 * 1024 ** 3);
  t.is(fileOnly.dataDir, '/srv/file');
  const env = { STARLIGHT_PROXY_CONFIG: '/etc/sl.env', STARLIGHT_PROXY_LISTEN: '127.0.0.1:7000', STARLIGHT_PROXY_REGISTRY: 'a:1, b:2' };
  const withEnv = resolve([], env);
  t.is(withEnv.port, 7000);
  t.deepEqual(withEnv.registries, ['a:1', 'b:2']);
  t.is(withEnv.dataDir, '/srv/file');
  const withFlags = resolve(['--listen=127.0.0.1:0', '--registry', 'x:1', '--registry', 'y:2', '--data', '/d'], env);
  t.is(withFlags.port, 0);
  t.deepEqual(withFlags.registries, ['x:1', 'y:2']);
  t.is(withFlags.dataDir, '/d');
  const defaults = resolve(['--registry', 'r:1']);
  t.is(defaults.host, '127.0.0.1');
  t.is(defaults.port, 8090);
  t.is(defaults.dataDir, DEFAULT_DATA_DIR);
  t.is(defaults.cacheBytes, 10 * 1024 ** 3);
  t.is(defaults.platform, 'linux/amd64');
});

test('validation errors are SL_ERR_CONFIG', (t) => {
  t.is(codeOf(() => resolve([])), 'SL_ERR_CONFIG');
  t.is(codeOf(() => resolve(['--registry', 'r', '--listen', 'nope'])), 'SL_ERR_CONFIG');
  t.is(codeOf(() => resolve(['--registry', 'r', '--cache-size', '10 bananas'])), 'SL_ERR_CONFIG');
  t.is(codeOf(() => resolve(['--registry', 'r', '--tls-cert', '/c'])), 'SL_ERR_CONFIG');
  t.is(codeOf(() => resolve(['--registry', 'r', '--bogus', '1'])), 'SL_ERR_CONFIG');
  t.is(codeOf(() => resolve(['--registry'])), 'SL_ERR_CONFIG');
  t.is(codeOf(() => resolve(['positional'])), 'SL_ERR_CONFIG');
  t.is(codeOf(() => resolve(['--config', '/missing'])), 'SL_ERR_CONFIG');
  t.is(codeOf(() => resolve(['--config', '/etc/bad.env'])), 'SL_ERR_CONFIG');
  t.is(codeOf(() => resolve(['--config', '/etc/unknown.env'])), 'SL_ERR_CONFIG');
  t.is(codeOf(() => parseTokenFile('# none\n\n', 'f')), 'SL_ERR_CONFIG');
});

test('sizes, listen addresses and token files', (t) => {
  t.is(parseSize('1024'), 1024);
  t.is(parseSize('1KiB'), 1024);
  t.is(parseSize('1kb'), 1000);
  t.is(parseSize('1.5G'), 1.5 * 1024 ** 3);
  t.is(parseSize('x'), undefined);
  t.deepEqual(parseListen('[::1]:80'), { host: '::1', port: 80 });
  t.deepEqual(parseListen(':80'), { host: '0.0.0.0', port: 80 });
  t.is(parseListen('h:99999'), undefined);
  t.deepEqual(parseTokenFile('a\n # c\n\n b \n', 'f'), ['a', 'b']);
});

test('--registry-auth: flag or STARLIGHT_PROXY_REGISTRY_AUTH; unset means the docker config default', (t) => {
  t.is(resolve(['--registry', 'r:1']).registryAuth, undefined);
  t.is(resolve(['--registry', 'r:1', '--registry-auth', '/etc/starlight/auth.json']).registryAuth, '/etc/starlight/auth.json');
  t.is(resolve(['--registry', 'r:1'], { STARLIGHT_PROXY_REGISTRY_AUTH: '/e.json' }).registryAuth, '/e.json');
});

test('issue 14: --registry must be host[:port] or an http(s) registry root', (t) => {
  for (const bad of ['ftp://x', 'file:///etc', 'http://', 'https://user:pw@r:5000', 'http://r:5000/v2/', 'r:5000/path', 'http://r?x=1', 'http://r:99999']) {
    const err = (() => {
      try {
        resolve(['--registry', bad]);
      } catch (e) {
        return e as { code?: string; details?: Record<string, unknown>; message?: string };
      }
      return undefined;
    })();
    t.is(err?.code, 'SL_ERR_CONFIG', bad);
    t.is(err?.details?.option, 'registry', bad);
    t.regex(err?.message ?? '', /--registry/, bad);
  }
  for (const good of ['r', 'r:5000', 'http://127.0.0.1:5000', 'https://registry.example/', '[::1]:5000']) t.notThrows(() => resolve(['--registry', good]), good);
});

test('issue 14: a non-loopback listen needs TLS and a token, or --insecure', (t) => {
  const optionOf = (argv: string[], env: Record<string, string> = {}): unknown => {
    try {
      resolve(argv, env);
    } catch (e) {
      return (e as { details?: Record<string, unknown> }).details?.option;
    }
    return undefined;
  };
  t.is(optionOf(['--registry', 'r', '--listen', '0.0.0.0:8090']), 'listen');
  t.is(optionOf(['--registry', 'r', '--listen', '10.0.0.1:8090', '--token-file', '/t']), 'listen');
  t.is(optionOf(['--registry', 'r', '--listen', '10.0.0.1:8090', '--tls-cert', '/c', '--tls-key', '/k']), 'listen');
  t.is(optionOf(['--registry', 'r', '--listen', '10.0.0.1:8090', '--tls-cert', '/c', '--tls-key', '/k', '--token-file', '/t']), undefined);
  t.true(resolve(['--registry', 'r', '--listen', '0.0.0.0:8090', '--insecure']).insecure);
  t.true(resolve(['--registry', 'r', '--listen', '0.0.0.0:8090'], { STARLIGHT_PROXY_INSECURE: '1' }).insecure);
  t.is(optionOf(['--registry', 'r', '--insecure=maybe']), 'insecure');
  t.false(resolve(['--registry', 'r', '--listen', '127.0.0.1:0']).insecure);
  t.false(resolve(['--registry', 'r', '--listen', '[::1]:0']).insecure);
});

test('issue 14: layer limits and connection cap are flags, validated', (t) => {
  const c = resolve(['--registry', 'r', '--max-layer-size', '1GiB', '--max-layer-entries', '5000', '--max-compression-ratio', '0', '--max-zstd-window', '8MiB', '--max-layer-metadata', '64MiB', '--max-connections', '10']);
  t.deepEqual(c.layerLimits, { maxUncompressedBytes: 1024 ** 3, maxEntries: 5000, maxRatio: 0, maxZstdWindowBytes: 8 * 1024 ** 2, maxMetadataBytes: 64 * 1024 ** 2 });
  t.is(c.maxConnections, 10);
  t.is(c.gcIntervalSec, 3600, 'metadata GC hourly by default');
  t.is(resolve(['--registry', 'r', '--gc-interval', '0']).gcIntervalSec, 0);
  for (const [flag, v] of [['max-layer-size', '0'], ['max-layer-size', 'big'], ['max-layer-entries', '-1'], ['max-layer-entries', '1.5'], ['max-connections', '0'], ['max-zstd-window', 'x'], ['cache-size', '0'], ['gc-interval', '-5'], ['gc-interval', '1h']]) {
    try {
      resolve(['--registry', 'r', `--${flag!}`, v!]);
      t.fail(`${flag!}=${v!} accepted`);
    } catch (e) {
      t.is((e as { details?: Record<string, unknown> }).details?.option, flag, `${flag!}=${v!}`);
    }
  }
});

test('replicas: DB and ADVERTISE from the config file, flags override; only postgres:// and http(s):// URLs', (t) => {
  files['/etc/replica.env'] = 'REGISTRY=r.example\nDB=postgres://starlight@db.example/starlight\nADVERTISE=http://10.0.0.5:8090\n';
  const c = resolve(['--config', '/etc/replica.env']);
  t.is(c.db, 'postgres://starlight@db.example/starlight');
  t.is(c.advertise, 'http://10.0.0.5:8090');
  t.is(resolve(['--config', '/etc/replica.env', '--db', 'postgresql://other/db']).db, 'postgresql://other/db');
  t.is(resolve(['--registry', 'r.example']).db, undefined, 'no --db: the SQLite store');
  t.is(codeOf(() => resolve(['--registry', 'r.example', '--db', 'mysql://x/y'])), 'SL_ERR_CONFIG');
  t.is(codeOf(() => resolve(['--registry', 'r.example', '--advertise', '10.0.0.5:8090'])), 'SL_ERR_CONFIG');
});
