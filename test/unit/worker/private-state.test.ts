/**
 * Issue 14: worker state is not readable by other local users, and its sockets are never
 * connectable with a wider mode than they end up with.
 */
import test from 'ava';
import { chmodSync, mkdirSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { dirname, join } from 'node:path';
import { nullLogger } from '../../../src/log.js';
import { serveApi, type ApiHandlers } from '../../../src/worker/api/server.js';
import { privateDir } from '../../../src/worker/private-dir.js';
import { bindSocketPrivately } from '../../../src/worker/safe-socket.js';
import { tempDir } from '../../helpers/tmp.js';

const modeOf = (p: string): number => statSync(p).mode & 0o777;

test('privateDir creates 0700 directories and tightens an existing 0755 one', async (t) => {
  const root = tempDir(t);
  await privateDir(join(root, 'a/content'));
  t.is(modeOf(join(root, 'a/content')), 0o700);
  mkdirSync(join(root, 'old'), { mode: 0o755 });
  chmodSync(join(root, 'old'), 0o755);
  await privateDir(join(root, 'old'));
  t.is(modeOf(join(root, 'old')), 0o700);
});

test('a socket is bound in a private directory, gets its mode there, then appears at its path', async (t) => {
  const dir = tempDir(t);
  const socket = join(dir, 'api.sock');
  let seen: { dirMode: number; final: boolean } | undefined;
  const net = await import('node:net');
  const server = net.createServer();
  t.teardown(() => server.close());
  await bindSocketPrivately(socket, 0o660, async (tmp) => {
    await new Promise<void>((resolve) => server.listen(tmp, resolve));
    seen = { dirMode: modeOf(dirname(tmp)), final: (() => { try { statSync(socket); return true; } catch { return false; } })() };
  });
  t.deepEqual(seen, { dirMode: 0o700, final: false }, 'bound where no other user can reach it, nothing at the final path yet');
  t.true(statSync(socket).isSocket());
  t.is(modeOf(socket), 0o660);
  await new Promise<void>((resolve, reject) => net.connect(socket).once('connect', function (this: import('node:net').Socket) { this.destroy(); resolve(); }).once('error', reject));
});

test('the API server socket is 0660 and answers', async (t) => {
  const socket = join(tempDir(t), 'run/api.sock');
  const h = { status: async () => ({ ok: true }) } as unknown as ApiHandlers;
  const api = await serveApi(h, socket, nullLogger);
  t.teardown(() => api.close());
  t.is(modeOf(socket), 0o660);
  const status = await new Promise<number>((resolve, reject) => {
    request({ socketPath: socket, path: '/v1/status' }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).once('error', reject).end();
  });
  t.is(status, 200);
});

test('the trace spool keeps at most its bound, dropping the oldest traces', async (t) => {
  const { TraceSpool } = await import('../../../src/worker/trace/spool.js');
  const { readdirSync } = await import('node:fs');
  const spool = await new TraceSpool(join(tempDir(t), 'traces')).open();
  const body = (startedAt: number) =>
    ({ version: 1, ref: 'r/x:1', manifestDigest: 'sha256:' + 'a'.repeat(64), platform: 'linux/amd64', traces: [{ startedAt, windowMs: 0, entries: [{ path: 'a', ms: 0 }] }] }) as never;
  for (let i = 0; i < 12; i++) await spool.save(body(1_000_000 + i));
  t.is(await spool.prune(5), 7);
  const left = readdirSync(spool.dir).sort();
  t.is(left.length, 5);
  t.true(left[0]!.startsWith('1000007-'), 'the newest are kept');
  t.is(modeOf(spool.dir), 0o700);
});
