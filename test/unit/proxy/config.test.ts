import test from 'ava';
import { parseListen, parseSize, resolveProxyConfig, parseTokenFile, DEFAULT_DATA_DIR } from '../../../src/proxy/config.js';

const files: Record<string, string> = {
  '/etc/sl.env': '# proxy\nREGISTRY=file.example:5000\nLISTEN=0.0.0.0:9000\nCACHE_SIZE="2GiB"\nSTARLIGHT_PROXY_DATA=/srv/file\n',
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
