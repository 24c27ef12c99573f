import test from 'ava';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hasCode } from '../../../src/errors.js';
import { Authenticator, basicHeader, loadDockerConfig, parseChallenges, parseDockerConfig } from '../../../src/oci/auth.js';
import { tempDir } from '../../helpers/tmp.js';

test('parses docker hub style Bearer challenge', (t) => {
  const chs = parseChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull"');
  t.deepEqual(chs, [
    {
      scheme: 'bearer',
      params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/ubuntu:pull' },
    },
  ]);
});

test('parses several challenges, quoted commas, escapes and tokens', (t) => {
  const chs = parseChallenges('Basic realm="a, b", Bearer realm=https://x/t, scope="repository:a:pull,push", error=insufficient_scope, Foo k="q\\"x"');
  t.is(chs.length, 3);
  t.deepEqual(chs[0], { scheme: 'basic', params: { realm: 'a, b' } });
  t.deepEqual(chs[1], { scheme: 'bearer', params: { realm: 'https://x/t', scope: 'repository:a:pull,push', error: 'insufficient_scope' } });
  t.deepEqual(chs[2], { scheme: 'foo', params: { k: 'q"x' } });
  t.deepEqual(parseChallenges(''), []);
});

test('docker config: auth and username/password entries, keys with scheme/path, docker hub aliases', (t) => {
  const auth = Buffer.from('alice:s3:cret').toString('base64');
  const p = parseDockerConfig(
    JSON.stringify({
      auths: {
        'https://index.docker.io/v1/': { auth },
        '127.0.0.1:5000': { username: 'bob', password: 'pw' },
        'http://Reg.Example.com/v2/': { auth: Buffer.from('c:d').toString('base64') },
        'empty.example.com': {},
      },
    }),
  );
  t.deepEqual(p('docker.io'), { username: 'alice', password: 's3:cret' });
  t.deepEqual(p('127.0.0.1:5000'), { username: 'bob', password: 'pw' });
  t.deepEqual(p('reg.example.com'), { username: 'c', password: 'd' });
  t.is(p('empty.example.com'), undefined);
  t.is(p('other.io'), undefined);
});

test('docker config: malformed input is SL_ERR_CONFIG; a missing file means no credentials', (t) => {
  t.true(hasCode(t.throws(() => parseDockerConfig('{nope')), 'SL_ERR_CONFIG'));
  const bad = JSON.stringify({ auths: { h: { auth: Buffer.from('nocolon').toString('base64') } } });
  t.true(hasCode(t.throws(() => parseDockerConfig(bad)), 'SL_ERR_CONFIG'));
  const dir = tempDir(t);
  t.is(loadDockerConfig(join(dir, 'absent.json'))('x'), undefined);
  const file = join(dir, 'config.json');
  writeFileSync(file, JSON.stringify({ auths: { h: { username: 'u', password: 'p' } } }));
  t.deepEqual(loadDockerConfig(file)('h'), { username: 'u', password: 'p' });
});

test('Authenticator: bearer tokens cached per scope until expiry, refetched after', async (t) => {
  let now = 1_000_000;
  const calls: { url: string; headers: Record<string, string> }[] = [];
  const auth = new Authenticator(
    (r) => (r === 'reg' ? { username: 'u', password: 'p' } : undefined),
    async (url, headers) => {
      calls.push({ url, headers });
      return { status: 200, body: Buffer.from(JSON.stringify({ token: `t${calls.length}`, expires_in: 60 })) };
    },
    () => now,
  );
  t.is(await auth.authorize('reg', 'repository:a:pull'), undefined, 'anonymous until challenged');
  t.true(auth.onChallenge('reg', 'Bearer realm="http://tok/token",service="svc"', 'repository:a:pull', undefined));
  t.is(await auth.authorize('reg', 'repository:a:pull'), 'Bearer t1');
  t.is(await auth.authorize('reg', 'repository:a:pull'), 'Bearer t1');
  t.is(await auth.authorize('reg', 'repository:b:pull'), 'Bearer t2');
  t.is(calls.length, 2);
  const u = new URL(calls[0].url);
  t.is(u.searchParams.get('service'), 'svc');
  t.is(u.searchParams.get('scope'), 'repository:a:pull');
  t.is(calls[0].headers.authorization, basicHeader({ username: 'u', password: 'p' }));
  now += 55_000; // within the expiry margin
  t.is(await auth.authorize('reg', 'repository:a:pull'), 'Bearer t3');
  t.false(auth.onChallenge('reg', 'Bearer realm="http://tok/token"', 'repository:a:pull', 'Bearer t3'), 'a refused token is not retried');
});

test('Authenticator: basic needs credentials; token server refusal is SL_ERR_OCI_UNAUTHORIZED', async (t) => {
  const anon = new Authenticator(() => undefined, async () => ({ status: 401, body: Buffer.alloc(0) }));
  t.false(anon.onChallenge('r', 'Basic realm="x"', 's', undefined), 'no creds: retry cannot help');
  t.false(anon.onChallenge('r', 'Negotiate', 's', undefined));
  t.false(anon.onChallenge('r', null, 's', undefined));
  t.true(anon.onChallenge('r', 'Bearer realm="http://tok/t"', 's', undefined));
  const err = await t.throwsAsync(anon.authorize('r', 's'));
  t.true(hasCode(err, 'SL_ERR_OCI_UNAUTHORIZED'));
  const withCreds = new Authenticator(() => ({ username: 'a', password: 'b' }), async () => ({ status: 500, body: Buffer.alloc(0) }));
  t.true(withCreds.onChallenge('r', 'Basic realm="x"', 's', undefined));
  t.is(await withCreds.authorize('r', 's'), basicHeader({ username: 'a', password: 'b' }));
});
