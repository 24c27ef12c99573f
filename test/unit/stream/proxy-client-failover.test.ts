/** ProxyClient with several replicas (--proxy A,B): failover on unreachable and 502/503, not on other errors. */
import test, { type ExecutionContext } from 'ava';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { hasCode } from '../../../src/errors.js';
import { ProxyClient, parseProxyUrls } from '../../../src/worker/stream/proxy-client.js';

async function server(t: ExecutionContext, status: number, body: unknown): Promise<{ url: string; hits: () => number }> {
  let hits = 0;
  const s: Server = createServer((_req, res) => {
    hits++;
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => s.close(() => r())));
  return { url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`, hits: () => hits };
}

/** A loopback port nothing listens on (a server bound and closed again). */
async function deadUrl(): Promise<string> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return `http://127.0.0.1:${port}`;
}

const dbDown = { errors: [{ code: 'SL_ERR_PROXY_DB_UNAVAILABLE', message: 'proxy database postgres://x/db is unavailable' }] };
const bad = { errors: [{ code: 'SL_ERR_INVALID_ARGUMENT', message: 'bad' }] };

test('parseProxyUrls: comma-separated, scheme defaults to http; nonsense is SL_ERR_CONFIG', (t) => {
  t.deepEqual(parseProxyUrls('a:1, https://b:2 ,').map((u) => u.href), ['http://a:1/', 'https://b:2/']);
  t.true(hasCode(t.throws(() => parseProxyUrls(' , ')), 'SL_ERR_CONFIG'));
  t.true(hasCode(t.throws(() => parseProxyUrls('http://[bad')), 'SL_ERR_CONFIG'));
});

test('an unreachable replica and a 503 one are skipped; the next becomes current', async (t) => {
  const dead = await deadUrl();
  const down = await server(t, 503, dbDown);
  const ok = await server(t, 200, { fine: true });
  const c = new ProxyClient({ url: `${dead},${down.url},${ok.url}` });
  t.teardown(() => c.close());
  t.deepEqual(await c.requestJson('GET', '/v1/traces'), { fine: true });
  t.is(down.hits(), 1);
  t.is(c.base.href, new URL(ok.url).href, 'the working replica is current');
  await c.requestJson('GET', '/v1/traces');
  t.is(down.hits(), 1, 'later requests go straight to it');
});

test('a 400 is the answer, not a reason to fail over; all replicas failing gives the last error', async (t) => {
  const b400 = await server(t, 400, bad);
  const ok = await server(t, 200, {});
  const c = new ProxyClient({ url: `${b400.url},${ok.url}` });
  t.teardown(() => c.close());
  t.true(hasCode(await t.throwsAsync(c.requestJson('GET', '/x')), 'SL_ERR_INVALID_ARGUMENT'));
  const down = await server(t, 503, dbDown);
  const c2 = new ProxyClient({ url: `${await deadUrl()},${down.url}` });
  t.teardown(() => c2.close());
  t.true(hasCode(await t.throwsAsync(c2.requestJson('GET', '/x')), 'SL_ERR_PROXY_DB_UNAVAILABLE'));
});
