/**
 * Mode "download-only": the floor of any pull — the time to fetch, with ONE HTTP GET over the same
 * emulated link, the bytes Starlight sends. With a proxy running, the GET is Starlight's own delta
 * URL (`/v1/delta?to=…[&have=<v1 digest>]&tocs=br`), warmed up directly (notify, then one GET) so the proxy's indexing is not
 * timed (note "delta"). Without one it GETs a synthetic blob the size of what a layer pull fetches
 * (all layers fresh, new layers for an update; note "layers"). No container runs: ready = end of GET.
 *
 * Not here: the proxy process (proxy.ts).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { ReadyContainer } from './container.js';
import { getAll, warm } from './proxy-http.js';
import type { ImageVersion, ModeDefinition, ModeDriver, TrialEnv } from './types.js';

/** Chunk the synthetic blob server repeats, bytes. */
const CHUNK_BYTES = 1 << 20;

class DownloadDriver implements ModeDriver {
  readonly name = 'download-only';
  private source: 'delta' | 'layers' = 'layers';
  private blobHost?: string;

  private deltaPath(version: ImageVersion, env: TrialEnv): string {
    const img = env.image;
    const q = new URLSearchParams({ to: `${img.repository}:${img.versions[version].tag}` });
    // The update case: the worker holds v1 (trials.ts pulls v1 first for every mode).
    if (version === 'v2' && env.spec.scenario === 'update') q.set('have', img.versions.v1.digest);
    // The header's TOCs as a worker asks for them (src/worker/stream/proxy-client.ts): the same bytes.
    q.set('tocs', 'br');
    return `/v1/delta?${q.toString()}`;
  }

  private blobSize(version: ImageVersion, env: TrialEnv): number {
    const have = new Set(env.spec.scenario === 'update' && version === 'v2' ? env.image.versions.v1.layers.map((l) => l.digest) : []);
    return env.image.versions[version].layers.filter((l) => !have.has(l.digest)).reduce((s, l) => s + l.size, 0);
  }

  async setup(env: TrialEnv): Promise<void> {
    const proxy = env.spec.shared.proxy;
    if (proxy) {
      this.source = 'delta';
      // Index both versions on the proxy and fill its content cache before timing (cloud-side work
      // the paper does ahead of time). A delta GET alone is not enough: on a proxy that had not seen
      // the image it would leave contents not encoded yet, sent as identity (2.5x the bytes) to the
      // timed GET that comes next.
      for (const v of ['v1', 'v2'] as const) {
        await warm(proxy, env.spec.shared, env.image, v, env.signal);
        await getAll(proxy, this.deltaPath(v, env), env.signal);
      }
      return;
    }
    const chunk = Buffer.alloc(CHUNK_BYTES, 0x5a);
    const server = createServer((req, res) => {
      const size = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('size') ?? 0);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) });
      let left = size;
      const pump = (): void => {
        while (left > 0) {
          const n = Math.min(left, chunk.length);
          left -= n;
          if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    this.blobHost = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    env.cleanups.add('stop blob server', () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }));
  }

  async pull(version: ImageVersion, env: TrialEnv): Promise<void> {
    // The update scenario's warm-up (v1) is not needed: the delta/blob already excludes v1's content.
    if (env.spec.scenario === 'update' && version === 'v1') return;
    if (this.source === 'delta') {
      await getAll(await env.link(env.spec.shared.proxy!), this.deltaPath(version, env), env.signal);
    } else {
      await getAll(await env.link(this.blobHost!), `/blob?size=${this.blobSize(version, env)}`, env.signal);
    }
  }

  async run(): Promise<ReadyContainer> {
    const now = performance.now();
    return { startedAt: now, readyAt: now, stop: async () => undefined };
  }

  note(): string {
    return this.source;
  }
}

export const downloadMode: ModeDefinition = {
  name: 'download-only',
  unavailable: async () => undefined,
  create: () => new DownloadDriver(),
};
