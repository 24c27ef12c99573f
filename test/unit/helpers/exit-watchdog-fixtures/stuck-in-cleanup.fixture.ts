/**
 * Fixture for exit-watchdog.test.ts (run by a nested ava only): the failure of issue 17 in a few
 * lines. A TCP socket is reset while its FIN (shutdown) is in flight: libuv refuses the reset
 * (EINVAL), Node marks the handle closing without closing it, and after its last JS ('exit') the
 * process spins forever in node::Environment::CleanupHandles. JS timers cannot catch this; only
 * something outside the process can.
 */
import test from 'ava';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';

test('passes, then the process spins in its native exit path', async (t) => {
  const peers = new Set<Socket>();
  const server = createServer((s) => {
    peers.add(s);
    s.on('error', () => undefined);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const c = connect({ host: '127.0.0.1', port: (server.address() as { port: number }).port, allowHalfOpen: true });
  await once(c, 'connect');
  const refused = new Promise<NodeJS.ErrnoException>((resolve) => c.once('error', resolve));
  c.end(); // shutdown requested; libuv performs it on the next loop turn
  await new Promise<void>((resolve) => process.nextTick(resolve));
  c.resetAndDestroy(); // in that window: refused
  const err = await refused;
  t.is(err.code, 'EINVAL');
  for (const s of peers) s.destroy();
  server.close();
});
