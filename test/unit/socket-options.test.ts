import test from 'ava';
import { connect, createServer, Socket, type AddressInfo } from 'node:net';
import { getSocketOption, setSocketOption } from '../../src/socket-options.js';

/** A connected pair of loopback sockets, closed after the test. */
async function pair(t: import('ava').ExecutionContext): Promise<[Socket, Socket]> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const client = connect((server.address() as AddressInfo).port, '127.0.0.1');
  await new Promise<void>((r) => client.once('connect', r));
  const other = await accepted;
  t.teardown(() => {
    client.destroy();
    other.destroy();
    server.close();
  });
  return [client, other];
}

test('sets and reads back TCP_NOTSENT_LOWAT and SO_RCVBUF on a real TCP socket', async (t) => {
  const [client, accepted] = await pair(t);
  t.true(setSocketOption(accepted, 'TCP_NOTSENT_LOWAT', 131072));
  t.is(getSocketOption(accepted, 'TCP_NOTSENT_LOWAT'), 131072);
  t.true(setSocketOption(client, 'SO_RCVBUF', 65536));
  t.is(getSocketOption(client, 'SO_RCVBUF'), 131072, 'the kernel doubles a buffer size it is given');
});

test('a socket without a file descriptor is refused without throwing', (t) => {
  const unconnected = new Socket();
  t.false(setSocketOption(unconnected, 'SO_SNDBUF', 65536));
  t.is(getSocketOption(unconnected, 'SO_SNDBUF'), undefined);
});

test('an out-of-range value comes back false, not an exception', async (t) => {
  const [client] = await pair(t);
  t.false(setSocketOption(client, 'TCP_NOTSENT_LOWAT', -1));
});
