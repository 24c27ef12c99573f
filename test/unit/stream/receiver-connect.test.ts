/**
 * Before the first header: a fresh pull fails at once when the proxy is down; a resume (after a
 * daemon restart) keeps reconnecting until it is closed.
 */
import test, { type ExecutionContext } from 'ava';
import { createServer } from 'node:net';
import { hasCode } from '../../../src/errors.js';
import { createLogger } from '../../../src/log.js';
import { LocalContentStore } from '../../../src/worker/cas/store.js';
import { ContentTracker } from '../../../src/worker/stream/content-tracker.js';
import { ProxyClient } from '../../../src/worker/stream/proxy-client.js';
import { DeltaReceiver } from '../../../src/worker/stream/receiver.js';
import { tempDir } from '../../helpers/tmp.js';
import { pollUntil } from '../../helpers/poll.js';

async function closedPortUrl(): Promise<string> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as { port: number };
  await new Promise<void>((r) => srv.close(() => r()));
  return `http://127.0.0.1:${port}`;
}

async function setup(t: ExecutionContext, retryBeforeHeader: boolean) {
  const client = new ProxyClient({ url: await closedPortUrl() });
  t.teardown(() => client.close());
  const tracker = new ContentTracker(await new LocalContentStore(tempDir(t)).open());
  const msgs: string[] = [];
  const log = createLogger({ level: 'warn', sink: (l) => msgs.push((JSON.parse(l) as { msg: string }).msg) });
  const rx = new DeltaReceiver({ client, tracker, request: { ref: 'x/y:1', have: [] }, log, retryBeforeHeader, retryMinMs: 20, retryMaxMs: 50 });
  t.teardown(() => rx.close());
  return { rx, msgs };
}

test('a fresh pull fails at once when the proxy cannot be reached', async (t) => {
  const { rx, msgs } = await setup(t, false);
  const err = await t.throwsAsync(rx.header);
  t.true(hasCode(err, 'SL_ERR_PROXY_UNREACHABLE'));
  t.false(msgs.includes('delta-reconnect'));
});

test('a resume keeps reconnecting before the header until closed', async (t) => {
  const { rx, msgs } = await setup(t, true);
  let settled = false;
  rx.header.then(
    () => (settled = true),
    () => (settled = true),
  );
  await pollUntil('two reconnects', () => msgs.filter((m) => m === 'delta-reconnect').length >= 2);
  t.false(settled, 'still waiting for the proxy');
  rx.close();
  t.true(hasCode(await t.throwsAsync(rx.header), 'SL_ERR_CANCELED'));
});
