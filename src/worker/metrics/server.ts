/**
 * The daemon's Prometheus endpoint (`--metrics-address 127.0.0.1:PORT`): plain node:http, GET /metrics
 * only, no auth (it reveals image refs and counters, no content: bind it to loopback or a node-local
 * address). The text is collected at scrape time.
 *
 * Not here: what is measured (daemon.ts), the text format (exposition.ts).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { StarlightError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { parseListen } from '../../oci/reference.js';

export interface MetricsServer {
  /** http://host:port (the port actually bound, also for port 0). */
  url: string;
  close(): Promise<void>;
}

export async function serveMetrics(address: string, collect: () => Promise<string>, log: Logger): Promise<MetricsServer> {
  const hp = parseListen(address);
  if (hp === undefined) throw new StarlightError('SL_ERR_CONFIG', `--metrics-address ${address} is not host:port (e.g. 127.0.0.1:9108)`, { details: { address } });
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '/').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics\n');
      return;
    }
    collect().then(
      (text) => res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(text),
      (err: unknown) => {
        log.warn('metrics-collect-failed', { err });
        res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics collection failed\n');
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new StarlightError('SL_ERR_CONFIG', `cannot listen on --metrics-address ${address}: ${err.message}`, { cause: err, details: { address } })));
    server.listen(hp.port, hp.host, resolve);
  });
  const a = server.address() as AddressInfo;
  const url = `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  log.info('metrics-listening', { url: `${url}/metrics` });
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
