import test from 'ava';
import { hasCode } from '../../../src/errors.js';
import { apiHost, formatReference, isLoopback, parseReference } from '../../../src/oci/reference.js';

const D = `sha256:${'a'.repeat(64)}`;

const good: [string, string, { registry: string; repository: string; tag?: string; digest?: string }][] = [
  ['ubuntu', 'docker.io/library/ubuntu:latest', { registry: 'docker.io', repository: 'library/ubuntu', tag: 'latest' }],
  ['ubuntu:22.04', 'docker.io/library/ubuntu:22.04', { registry: 'docker.io', repository: 'library/ubuntu', tag: '22.04' }],
  ['foo/bar', 'docker.io/foo/bar:latest', { registry: 'docker.io', repository: 'foo/bar', tag: 'latest' }],
  ['index.docker.io/foo/bar:1', 'docker.io/foo/bar:1', { registry: 'docker.io', repository: 'foo/bar', tag: '1' }],
  ['docker.io/redis', 'docker.io/library/redis:latest', { registry: 'docker.io', repository: 'library/redis', tag: 'latest' }],
  ['127.0.0.1:5000/x/y:tag', '127.0.0.1:5000/x/y:tag', { registry: '127.0.0.1:5000', repository: 'x/y', tag: 'tag' }],
  ['127.0.0.1:5000/x', '127.0.0.1:5000/x:latest', { registry: '127.0.0.1:5000', repository: 'x', tag: 'latest' }],
  ['localhost/x', 'localhost/x:latest', { registry: 'localhost', repository: 'x', tag: 'latest' }],
  ['localhost:5000/a/b/c', 'localhost:5000/a/b/c:latest', { registry: 'localhost:5000', repository: 'a/b/c', tag: 'latest' }],
  ['ghcr.io/o/img@' + D, 'ghcr.io/o/img@' + D, { registry: 'ghcr.io', repository: 'o/img', digest: D }],
  ['ghcr.io/o/img:v1@' + D, 'ghcr.io/o/img:v1@' + D, { registry: 'ghcr.io', repository: 'o/img', tag: 'v1', digest: D }],
  ['Example.com/x', 'Example.com/x:latest', { registry: 'Example.com', repository: 'x', tag: 'latest' }],
  ['[::1]:5000/x:t', '[::1]:5000/x:t', { registry: '[::1]:5000', repository: 'x', tag: 't' }],
  ['a/b__c-d.e_f--g', 'docker.io/a/b__c-d.e_f--g:latest', { registry: 'docker.io', repository: 'a/b__c-d.e_f--g', tag: 'latest' }],
  // a bare 'localhost:5000' is docker's image "localhost" with tag "5000"
  ['localhost:5000', 'docker.io/library/localhost:5000', { registry: 'docker.io', repository: 'library/localhost', tag: '5000' }],
];

for (const [input, formatted, want] of good) {
  test(`parses ${input}`, (t) => {
    const ref = parseReference(input);
    t.deepEqual(ref, want);
    t.is(formatReference(ref), formatted);
    t.deepEqual(parseReference(formatReference(ref)), ref, 'format is parse-stable');
  });
}

const bad = [
  '',
  'UPPER',
  'x/Upper',
  'x:',
  'x:-tag',
  'x:' + 't'.repeat(129),
  'x@sha256:abc',
  'x@md5:' + 'a'.repeat(32),
  'x@sha256:' + 'A'.repeat(64),
  '/x',
  'x/',
  'x//y',
  'a/-b',
  'a/b-',
  'host:port:5000/x',
  '-bad.com/x',
  'a'.repeat(64),
  'x/' + 'y'.repeat(260),
  'x y',
];

for (const input of bad) {
  test(`refuses ${JSON.stringify(input.length > 40 ? input.slice(0, 40) + '…' : input)}`, (t) => {
    const err = t.throws(() => parseReference(input));
    t.true(hasCode(err, 'SL_ERR_OCI_REFERENCE'), String(err));
  });
}

test('an upper-case first component is a registry (docker rule)', (t) => {
  t.is(parseReference('Foo/bar').registry, 'Foo');
});

test('api host and loopback detection', (t) => {
  t.is(apiHost('docker.io'), 'registry-1.docker.io');
  t.is(apiHost('127.0.0.1:5000'), '127.0.0.1:5000');
  for (const h of ['127.0.0.1:5000', '127.1.2.3', 'localhost', 'localhost:80', '[::1]:5000']) t.true(isLoopback(h), h);
  for (const h of ['docker.io', '10.0.0.1:5000', 'localhost.example.com', '128.0.0.1']) t.false(isLoopback(h), h);
});
