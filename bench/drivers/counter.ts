/**
 * A request-counting HTTP reverse proxy on 127.0.0.1:0, placed on the cloud side of a WAN link
 * (worker → emulator → counter → registry/proxy), so a trial can report how many HTTP requests its
 * mode made. It forwards bytes untouched (status, headers, body) with keep-alive to the target.
 *
 * Not here: latency/bandwidth (bench/wan/emulator.ts), byte counts (the emulator has them).
 */
import { Agent, createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RequestCounter {
  /** '127.0.0.1:PORT' to point the WAN emulator at. */
  address: string;
  requests(): number;
  reset(): void;
  close(): Promise<void>;
}

export async function startRequestCounter(target: string): Promise<RequestCounter> {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  const agent = new Agent({ keepAlive: true });
  let count = 0;
  const server: Server = createServer((req, res) => {
    count++;
    const up = httpRequest({ host, port, method: req.method, path: req.url, headers: req.headers, agent }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, upRes.rawHeaders);
      upRes.pipe(res);
    });
    up.on('error', () => res.destroy());
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    address,
    requests: () => count,
    reset: () => {
      count = 0;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        agent.destroy();
        server.close(() => resolve());
      }),
  };
}
