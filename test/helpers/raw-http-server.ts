/**
 * A plain TCP server that reads HTTP/1.1 request heads and lets the test write the answer bytes
 * itself (malformed framing, dropped connections): `answer(socket, conn)` runs once per request head,
 * `conn` being the 1-based index of the connection it came on. Counts connections; close() destroys
 * every socket still open and stops listening.
 */
import { createServer, type Server, type Socket } from 'node:net';

export interface RawHttpServer {
  server: Server;
  /** http://127.0.0.1:<port> */
  base: string;
  sockets: Set<Socket>;
  /** Connections accepted so far. */
  connections(): number;
  close(): void;
}

export async function rawHttpServer(answer: (s: Socket, conn: number) => void): Promise<RawHttpServer> {
  const sockets = new Set<Socket>();
  let n = 0;
  const server = createServer((s) => {
    const conn = ++n;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let got = '';
    s.on('data', (d) => {
      got += d.toString('latin1');
      if (got.includes('\r\n\r\n')) {
        got = '';
        answer(s, conn);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return {
    server,
    base: `http://127.0.0.1:${port}`,
    sockets,
    connections: () => n,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}
