import test from 'ava';
import { StarlightError } from '../../../src/errors.js';
import { comparePaths, normalizeTarPath } from '../../../src/layers/paths.js';

test('normalizeTarPath strips ./, //, trailing / and a leading / (as containerd joins onto the root)', (t) => {
  const cases: [string, string][] = [
    ['./a//b/', 'a/b'],
    ['/abs/x', 'abs/x'],
    ['a/./b/../c', 'a/c'],
    ['./', ''],
    ['/', ''],
    ['.', ''],
    ['plain', 'plain'],
    ['a/b/..', 'a'],
    ['..a/b..', '..a/b..'],
  ];
  for (const [raw, want] of cases) t.is(normalizeTarPath(raw), want, raw);
});

test('normalizeTarPath refuses .. escaping the root, naming entry and layer', (t) => {
  for (const raw of ['../x', 'a/../../x', '/..', '..', './../etc/passwd']) {
    const err = t.throws(() => normalizeTarPath(raw, { layer: 'sha256:abc' }), { instanceOf: StarlightError });
    t.is(err?.code, 'SL_ERR_IMAGE_PATH_ESCAPE');
    t.is(err?.details.path, raw);
    t.is(err?.details.layer, 'sha256:abc');
  }
});

test('comparePaths is UTF-8 byte order', (t) => {
  const paths = ['a0', 'a/b', '', 'a', 'a-b', '\u{1F600}', '\uFFFD', 'b', 'a/b/c'];
  const sorted = [...paths].sort(comparePaths);
  const byBytes = [...paths].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
  t.deepEqual(sorted, byBytes);
  t.deepEqual(sorted.slice(0, 6), ['', 'a', 'a-b', 'a/b', 'a/b/c', 'a0']);
});
