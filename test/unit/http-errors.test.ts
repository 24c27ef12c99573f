import test from 'ava';
import { CODES, StarlightError, isCode, type Code } from '../../src/errors.js';
import { decodeErrorBody, errorBody, statusOf } from '../../src/http-errors.js';
import { createLogger } from '../../src/log.js';

test('every code survives the HTTP codec: errorBody → decodeErrorBody gives the same code, message and details', (t) => {
  for (const code of Object.keys(CODES) as Code[]) {
    const sent = new StarlightError(code, `failed: ${code}`, { details: { image: 'x:1' } });
    const got = decodeErrorBody(JSON.stringify(errorBody(sent)));
    t.deepEqual([got.code, got.message, got.detail], [code, `failed: ${code}`, { image: 'x:1' }], code);
    const status = statusOf(sent);
    t.true(status >= 400 && status < 600, `${code} → ${status}`);
  }
});

test('inherited property names and foreign codes are not codes; garbage bodies decode to nothing', (t) => {
  t.false(isCode('toString'));
  t.false(isCode('__proto__'));
  t.false(isCode(42));
  t.true(isCode('SL_ERR_INTERNAL'));
  const foreign = decodeErrorBody(JSON.stringify({ errors: [{ code: 'toString', message: 'm', detail: [1] }] }));
  t.deepEqual(foreign, { code: undefined, remoteCode: 'toString', message: 'm', detail: {} });
  t.deepEqual(decodeErrorBody('<html>502</html>'), { code: undefined, remoteCode: undefined, message: undefined, detail: {} });
  t.deepEqual(decodeErrorBody('null').code, undefined);
});

test('statuses: upstream registry failures are 502, disk full 507, unknown errors 500, aborts 499', (t) => {
  t.is(statusOf(new StarlightError('SL_ERR_OCI_UNREACHABLE', 'x')), 502);
  t.is(statusOf(new StarlightError('SL_ERR_DISK_FULL', 'x')), 507);
  t.is(statusOf(new StarlightError('SL_ERR_PROXY_UNAUTHORIZED', 'x')), 401);
  t.is(statusOf(new Error('x')), 500);
  const abort = new Error('aborted');
  abort.name = 'AbortError';
  t.is(statusOf(abort), 499);
  t.is(errorBody(abort).errors[0]!.code, 'SL_ERR_CANCELED');
});

test('logged errors keep code, kind, details and their cause', (t) => {
  const lines: string[] = [];
  const log = createLogger({ level: 'warn', sink: (l) => lines.push(l) });
  const cause = Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
  log.warn('write-failed', { err: new StarlightError('SL_ERR_DISK_FULL', 'cannot write blob', { cause, details: { path: '/x' } }) });
  const rec = JSON.parse(lines[0]!) as { err: Record<string, unknown> };
  t.like(rec.err, { code: 'SL_ERR_DISK_FULL', kind: 'resource-exhausted', details: { path: '/x' }, cause: { code: 'ENOSPC', message: 'no space left on device' } });
});
