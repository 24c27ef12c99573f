/**
 * Issue 19: the daemon's proxy client keeps one connection open ahead of the next delta stream
 * (src/worker/stream/warm-connection.ts), so a pull's request leaves without a TCP handshake. The
 * request goes out on the connection opened before it, the next pull finds a new one, and a spare
 * the proxy closed (before or just as the request left) costs a retry on a new connection, never a
 * failed pull.
 */
import test from 'ava';
import { ProxyClient } from '../../../src/worker/stream/proxy-client.js';
import { WarmConnection } from '../../../src/worker/stream/warm-connection.js';
import { pollUntil } from '../../helpers/poll.js';
import { rawHttpServer } from '../../helpers/raw-http-server.js';

const BODY = Buffer.from('delta-bytes-0123456789');

/**
 * A TCP server counting connections; each one gets `policy(n)` for its n-th connection (1-based):
 * 'answer' answers a request with BODY, 'drop' closes the connection when the request arrives.
 */
async function server(policy: (n: number) => 'answer' | 'drop'): Promise<{ url: string; conns: () => number; requestsOn: number[]; close: () => void }> {
  const requestsOn: number[] = [];
  const srv = await rawHttpServer((s, conn) => {
    requestsOn.push(conn);
    if (policy(conn) === 'drop') return void s.destroy();
    s.end(`HTTP/1.1 200 OK\r\ncontent-length: ${BODY.length}\r\nconnection: close\r\n\r\n${BODY.toString('latin1')}`);
  });
  return { url: srv.base, conns: srv.connections, requestsOn, close: srv.close };
}

/** Polls `cond` until true (test/helpers/poll.ts). */
function until(cond: () => boolean): Promise<boolean> {
  return pollUntil('the expected connections', () => cond(), { intervalMs: 5 });
}

async function readAll(body: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of body) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

test('a delta request goes out on the connection opened ahead, and the next one finds a new spare', async (t) => {
  const srv = await server(() => 'answer');
  t.teardown(srv.close);
  const client = new ProxyClient({ url: srv.url, warm: true });
  t.teardown(() => client.close());
  // The spare is connected before any request.
  await until(() => srv.conns() === 1);
  const first = await client.delta({ ref: 'r/x:1', have: [] });
  t.deepEqual(await readAll(first.body), BODY);
  t.deepEqual(srv.requestsOn, [1], 'the request used the connection opened ahead');
  await until(() => srv.conns() === 2);
  const second = await client.delta({ ref: 'r/x:2', have: [] });
  t.deepEqual(await readAll(second.body), BODY);
  t.deepEqual(srv.requestsOn, [1, 2], 'the next request used the spare dialled after the first');
});

test('a spare the proxy closes as the request leaves costs a retry on a new connection, not the pull', async (t) => {
  const srv = await server((n) => (n === 1 ? 'drop' : 'answer'));
  t.teardown(srv.close);
  const client = new ProxyClient({ url: srv.url, warm: true });
  t.teardown(() => client.close());
  await until(() => srv.conns() === 1);
  const res = await client.delta({ ref: 'r/x:1', have: [] });
  t.deepEqual(await readAll(res.body), BODY);
  t.is(srv.requestsOn[0], 1, 'sent on the spare first');
  t.true(srv.requestsOn.length === 2 && srv.requestsOn[1] !== 1, 'then once more on another connection');
});

test('a proxy gone after the spare was opened fails the pull as unreachable, without a hang', async (t) => {
  const srv = await server(() => 'answer');
  const client = new ProxyClient({ url: srv.url, warm: true });
  t.teardown(() => client.close());
  await until(() => srv.conns() === 1);
  srv.close(); // the spare's peer is gone, and nothing listens any more
  const err = await t.throwsAsync(client.delta({ ref: 'r/x:1', have: [] }));
  t.is((err as { code?: string }).code, 'SL_ERR_PROXY_UNREACHABLE');
});

test('a spare older than its idle limit is replaced, not handed out', async (t) => {
  const srv = await server(() => 'answer');
  t.teardown(srv.close);
  const warm = new WarmConnection(200);
  t.teardown(() => warm.close());
  const url = new URL(srv.url);
  warm.warm(url);
  await until(() => srv.conns() === 1);
  // Past its limit the timer replaces it with a fresh connection.
  await until(() => srv.conns() === 2);
  await until(() => {
    const s = warm.take(url);
    s?.destroy();
    return s !== undefined;
  });
  t.pass();
});
