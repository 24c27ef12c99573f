/**
 * Issue 14, HTTP: slow or idle clients cannot pin the proxy. A connection past --max-connections is
 * refused at accept while the others stay served, and a slot comes back when one closes; a socket on
 * which no byte moves for the idle timeout is closed by the proxy (a client that stops reading a
 * stream, or a half-open peer, frees its buffers).
 */
import test from 'ava';
import { connect, type Socket } from 'node:net';
import { startProxy } from '../../../src/proxy/server.js';
import { pollUntil } from '../../helpers/poll.js';
import { tempDir } from '../../helpers/tmp.js';

/** Opens a raw TCP connection to `url`'s port; `closed()` tells whether the peer has closed it. */
async function rawSocket(url: string): Promise<{ s: Socket; closed: () => boolean }> {
  const s = connect({ host: '127.0.0.1', port: Number(new URL(url).port) });
  let closed = false;
  s.on('error', () => undefined);
  s.on('close', () => (closed = true));
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  return { s, closed: () => closed };
}

test('a connection past --max-connections is refused; the others are served; a freed slot is reused', async (t) => {
  const proxy = await startProxy({ registries: ['127.0.0.1:1'], host: '127.0.0.1', port: 0, dataDir: tempDir(t), cacheBytes: 1 << 20, maxConnections: 3 });
  t.teardown(() => proxy.close());
  const held: Awaited<ReturnType<typeof rawSocket>>[] = [];
  for (let i = 0; i < 3; i++) held.push(await rawSocket(proxy.url));
  t.teardown(() => held.forEach((h) => h.s.destroy()));
  const extra = await rawSocket(proxy.url);
  t.teardown(() => extra.s.destroy());
  await pollUntil('the connection over the cap to be closed by the proxy', async () => extra.closed(), { timeoutMs: 30_000 });
  t.false(held.some((h) => h.closed()), 'the connections within the cap stay open');

  // A held connection still gets answers.
  const answer = new Promise<string>((resolve) => {
    let got = '';
    held[0]!.s.on('data', (b: Buffer) => {
      got += b.toString();
      if (got.includes('\r\n\r\n')) resolve(got);
    });
  });
  held[0]!.s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  t.regex(await answer, /^HTTP\/1\.1 200/);

  // One goes away: a new client is served.
  held[2]!.s.destroy();
  await pollUntil('a new client to be served once a slot is free', async () => {
    const r = await fetch(`${proxy.url}/healthz`, { signal: AbortSignal.timeout(5_000) }).catch(() => undefined);
    return r?.status === 200;
  }, { timeoutMs: 30_000 });
  t.pass();
});

test('a socket on which nothing moves is closed after the idle timeout; new clients are still served', async (t) => {
  const proxy = await startProxy({ registries: ['127.0.0.1:1'], host: '127.0.0.1', port: 0, dataDir: tempDir(t), cacheBytes: 1 << 20, socketIdleMs: 1_000 });
  t.teardown(() => proxy.close());
  // Silent after half a request line: neither a complete request nor any further byte.
  const silent = await rawSocket(proxy.url);
  t.teardown(() => silent.s.destroy());
  silent.s.write('GET /heal');
  await pollUntil('the silent socket to be closed by the proxy', async () => silent.closed(), { timeoutMs: 30_000 });
  t.true(silent.closed());
  // The proxy still serves new clients.
  const r = await fetch(`${proxy.url}/healthz`, { signal: AbortSignal.timeout(10_000) });
  t.is(r.status, 200);
});
