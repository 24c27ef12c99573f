/**
 * Issue 14: a delta stream whose connection goes silent without a FIN or RST (half-open peer, frozen
 * link) is dropped after the body idle timeout, so the receiver reconnects instead of waiting forever.
 */
import test from 'ava';
import { createServer } from 'node:http';
import { ProxyClient } from '../../../src/worker/stream/proxy-client.js';

test('a delta body that stops delivering bytes fails with SL_ERR_PROXY_UNREACHABLE after the idle timeout', async (t) => {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.write(Buffer.alloc(1000)); // then silence: the socket stays open
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const { port } = server.address() as { port: number };
  const client = new ProxyClient({ url: `http://127.0.0.1:${port}`, bodyIdleTimeoutMs: 300 });
  t.teardown(() => client.close());
  const { body } = await client.delta({ ref: 'r/x:1', have: [] });
  let got = 0;
  const err = await t.throwsAsync(
    (async () => {
      for await (const c of body) got += (c as Buffer).length;
    })(),
  );
  t.is((err as { code?: string }).code, 'SL_ERR_PROXY_UNREACHABLE');
  t.is(got, 1000, 'the bytes before the stall were delivered');
});
