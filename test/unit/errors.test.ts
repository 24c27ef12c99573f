import test from 'ava';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CODES, StarlightError, hasCode, kindOf, withContext } from '../../src/errors.js';
import { HARNESS_CODES, HarnessError, harnessOrCanceled } from '../../fixtures/harness-error.js';
import { exitCodeFor, formatError } from '../../src/cli/exit-codes.js';

const docsPath = fileURLToPath(new URL('../../../docs/errors.md', import.meta.url));

test('docs/errors.md lists every code and no stale one', (t) => {
  const doc = readFileSync(docsPath, 'utf8');
  const documented = new Set([...doc.matchAll(/`(SL_ERR_[A-Z0-9_]+)`/g)].map((m) => m[1]));
  const codes = new Set([...Object.keys(CODES), ...Object.keys(HARNESS_CODES)]);
  const missing = [...codes].filter((c) => !documented.has(c));
  const stale = [...documented].filter((c) => !codes.has(c));
  t.deepEqual(missing, [], 'codes missing from docs/errors.md');
  t.deepEqual(stale, [], 'codes in docs/errors.md that no longer exist');
});

test('the harness codes are their own table, printed and mapped like product codes', (t) => {
  for (const c of Object.keys(HARNESS_CODES)) t.false(c in CODES, `${c} is not a product code`);
  const e = new HarnessError('SL_ERR_BENCH_STEP', 'ctr run failed', { details: { cmd: 'ctr' } });
  t.is(kindOf(e), 'failed-precondition');
  t.is(exitCodeFor(e), 65);
  t.true(formatError(e).includes('[SL_ERR_BENCH_STEP]') && formatError(e).includes('hint: '));
  t.is((harnessOrCanceled(true, 'SL_ERR_BENCH_STEP', 'x') as StarlightError).code, 'SL_ERR_CANCELED');
  t.is(harnessOrCanceled(false, 'SL_ERR_DEMO_STEP', 'x').code, 'SL_ERR_DEMO_STEP');
});

test('withContext keeps code and kind, adds context and details', (t) => {
  const inner = new StarlightError('SL_ERR_OCI_NOT_FOUND', 'image x not found', { details: { image: 'x' } });
  const outer = withContext(inner, 'pull x', { platform: 'linux/amd64' });
  t.is(outer.code, 'SL_ERR_OCI_NOT_FOUND');
  t.is(outer.kind, 'not-found');
  t.true(outer.message.startsWith('pull x: '));
  t.deepEqual(outer.details, { image: 'x', platform: 'linux/amd64' });
  t.true(hasCode(outer, 'SL_ERR_OCI_NOT_FOUND'));
  t.false(hasCode(new Error('x'), 'SL_ERR_OCI_NOT_FOUND'));
});

test('foreign errors become internal, aborts become canceled', (t) => {
  t.is(withContext(new TypeError('boom'), 'x').code, 'SL_ERR_INTERNAL');
  const abort = new Error('stop');
  abort.name = 'AbortError';
  t.is(withContext(abort, 'x').code, 'SL_ERR_CANCELED');
  t.is(kindOf(abort), 'canceled');
  t.is(kindOf('str'), 'internal');
});
