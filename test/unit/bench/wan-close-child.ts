/**
 * Child process for wan.test.ts ("the process exits after connections die mid-transfer"): runs the
 * WAN emulator in front of a server that streams without pause to clients that do not read, so the
 * emulator has a write to each client in flight; then each client half-closes (FIN) and at once
 * vanishes with a reset (close with unread bytes) — a process killed mid-download, as in
 * test/e2e/pull-resume. Then it closes everything and returns from main; the parent asserts that
 * this process EXITS. Before the fix in emulator.ts's drop(), such a connection left a TCP handle
 * that Node could never close, and the process spun forever in its exit path
 * (node::Environment::CleanupHandles → uv_run). Prints "closed" when its JS is done.
 *
 * Usage: node wan-close-child.js <connections>
 */
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { WanEmulator } from '../../../bench/wan/emulator.js';

const CHUNK = Buffer.alloc(16 * 1024, 0x5a);
/** Per-direction window of the emulator, bytes: small, so clients' pipes fill fast. */
const WINDOW = 64 * 1024;
/** Generous: on a loaded 2-core machine 50 clients take long to fill their pipes. */
const FILL_DEADLINE_MS = 90_000;

async function main(connections: number): Promise<void> {
  const serverSockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    serverSockets.add(s);
    s.on('error', () => {});
    s.on('close', () => serverSockets.delete(s));
    // Streams until the connection dies: the emulator always has bytes owed to the client.
    const pump = (): void => {
      while (!s.destroyed && s.write(CHUNK));
      if (!s.destroyed) s.once('drain', pump);
    };
    pump();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  // rtt 0: the emulator forwards a FIN in the same event-loop turn it reads it.
  const emu = await WanEmulator.start({ target: `127.0.0.1:${port}`, rttMs: 0, windowBytes: WINDOW });

  const clients: Socket[] = [];
  for (let i = 0; i < connections; i++) {
    const c = connect({ host: '127.0.0.1', port: emu.port, allowHalfOpen: true });
    c.on('error', () => {});
    c.pause(); // never reads: the kernel buffers fill and the emulator's writes to it stall
    clients.push(c);
  }
  // Poll (deadline) until every connection's downstream pipe holds a full window.
  const deadline = Date.now() + FILL_DEADLINE_MS;
  while (emu.stats().activeConnections < connections || emu.stats().bufferedBytes < connections * WINDOW) {
    if (Date.now() > deadline) throw new Error(`pipes not full after ${FILL_DEADLINE_MS} ms: ${JSON.stringify(emu.stats())}`);
    await sleep(20);
  }
  // FIN, then a reset as soon as the FIN is out: the emulator reads the EOF and meets the reset in one turn.
  await Promise.all(clients.map((c) => new Promise<void>((resolve) => {
    c.on('close', () => resolve());
    c.end(() => c.destroy());
  })));

  await emu.close();
  for (const s of serverSockets) s.destroy();
  server.close();
  process.stdout.write('closed\n');
}

main(Number(process.argv[2] ?? '50')).catch((err: unknown) => {
  process.stderr.write(`wan-close-child: ${String(err)}\n`);
  process.exit(2);
});
