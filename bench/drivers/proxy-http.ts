/**
 * The bench's HTTP calls to a proxy: whole-body GETs, POSTs (notify, capability probes) and the
 * untimed warm-up that indexes an image and fills the proxy's content cache.
 */
import { request, type IncomingMessage } from 'node:http';
import { HarnessError } from '../../fixtures/harness-error.js';
import type { BenchImage, ImageVersion } from './types.js';

/** GETs `url` through http (no keep-alive), consuming the body; resolves with the body size. */
export function getAll(host: string, path: string, signal: AbortSignal): Promise<number> {
  const [h, p] = [host.slice(0, host.lastIndexOf(':')), Number(host.slice(host.lastIndexOf(':') + 1))];
  return new Promise((resolve, reject) => {
    const req = request({ host: h, port: p, path, method: 'GET', signal, agent: false }, (res: IncomingMessage) => {
      let n = 0;
      res.on('data', (b: Buffer) => (n += b.length));
      res.on('end', () => {
        if ((res.statusCode ?? 0) >= 300) reject(new HarnessError('SL_ERR_BENCH_STEP', `GET http://${host}${path} answered ${res.statusCode}`, { details: { path } }));
        else resolve(n);
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** The image reference the worker pulls: the registry as the proxy reaches it (cloud side). */
export function imageRef(shared: { registry: string }, img: BenchImage, version: ImageVersion): string {
  return `${shared.registry}/${img.repository}:${img.versions[version].tag}`;
}

/** POSTs to the proxy; resolves with the HTTP status and body (capability probes, notify). */
export function post(host: string, path: string, body: string, signal?: AbortSignal): Promise<{ status: number; body: string }> {
  const i = host.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = request({ host: host.slice(0, i), port: Number(host.slice(i + 1)), path, method: 'POST', agent: false, signal, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (b: Buffer) => (text += b.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Indexes `version` on the proxy and fills its content cache, directly (untimed, not over the link). */
export async function warm(proxy: string, shared: { registry: string }, img: BenchImage, version: ImageVersion, signal: AbortSignal): Promise<void> {
  const ref = imageRef(shared, img, version);
  const { status: st } = await post(proxy, `/v1/notify?ref=${encodeURIComponent(ref)}`, '', signal);
  if (st !== 200) throw new HarnessError('SL_ERR_BENCH_STEP', `proxy ${proxy}: notify ${ref} answered ${st}`, { details: { ref } });
  await getAll(proxy, `/v1/delta?${new URLSearchParams({ to: ref }).toString()}`, signal);
}
