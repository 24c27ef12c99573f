/**
 * Support for the proxy e2e tests: layer tarballs made with GNU tar from files the test describes,
 * images pushed to a real registry, the proxy run as a real child process (`node bin/starlight.js
 * proxy`), and a delta fetched, decoded and verified (every item's bytes hash to its digest).
 */
import type { ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { brotliDecompressSync, gunzipSync, gzipSync, inflateRawSync } from 'node:zlib';
import { RegistryClient } from '../../src/oci/client.js';
import { pushImage } from '../../fixtures/push-image.js';
import { MEDIA_TYPES } from '../../src/oci/types.js';
import { parseMetrics } from '../../src/prometheus.js';
import { decodeDelta, type DeltaEnd, type DeltaHeader, type DeltaImage, type ContentItem } from '../../src/protocol/index.js';
import { tempDir } from '../helpers/tmp.js';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export const sha256 = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** path → content, or null for a whiteout of that path. */
export type LayerSpec = Record<string, string | Buffer | null>;

export interface BuiltLayer {
  gz: Buffer;
  diffID: string;
}

export function makeLayer(t: ExecutionContext, spec: LayerSpec): BuiltLayer {
  const dir = tempDir(t, 'starlight-layer-');
  const root = join(dir, 'root');
  mkdirSync(root);
  for (const [path, content] of Object.entries(spec)) {
    const p = content === null ? join(root, dirname(path), `.wh.${path.split('/').pop()}`) : join(root, path);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, content ?? '');
  }
  const tarPath = join(dir, 'layer.tar');
  execFileSync('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-C', root, '-cf', tarPath, '.']);
  const tar = readFileSync(tarPath);
  // Level 1: a test's 48 MiB layer took ~10 s of this process's one thread at level 6 under load, a
  // stall for every other test of the file (their deadlines run meanwhile).
  return { gz: gzipSync(tar, { level: 1 }), diffID: sha256(tar) };
}

export async function pushLayers(registryHost: string, name: string, layers: BuiltLayer[], cmd: string[] = ['/bin/app'], client = new RegistryClient()): Promise<string> {
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/usr/bin:/bin'], Cmd: cmd },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffID) },
    }),
  );
  const pushed = await pushImage(client, `${registryHost}/${name}`, {
    config,
    layers: layers.map((l) => ({ data: l.gz, mediaType: MEDIA_TYPES.ociLayerGzip })),
  });
  return pushed.digest;
}

/** The proxy as a child process (`starlight proxy …`), started and torn down by test/helpers/cli.ts. */
export { startProxyCli as startProxyProcess } from '../helpers/cli.js';

export function decodeItem(item: ContentItem, data: Buffer): Buffer {
  switch (item.encoding) {
    case 'identity':
      return data;
    case 'br':
      return brotliDecompressSync(data);
    case 'gzip':
      return gunzipSync(data);
    case 'deflate-raw':
      return inflateRawSync(data);
    default:
      throw new Error(`encoding ${item.encoding} not handled in tests`);
  }
}

export interface FetchedDelta {
  header: DeltaHeader;
  end: DeltaEnd;
  /** index → raw (decoded, verified) content */
  contents: Map<number, Buffer>;
  /** The IMAGE frame's image (`image=1`), if one came. */
  image?: DeltaImage;
  wireBytes: number;
  chunkFrames: number;
}

/** GET /v1/delta, decode, verify every item's digest and size. Throws on HTTP errors (with status). */
export async function fetchDelta(proxyUrl: string, query: Record<string, string>, headers: Record<string, string> = {}): Promise<FetchedDelta> {
  const u = new URL('/v1/delta', proxyUrl);
  for (const [k, v] of Object.entries(query)) u.searchParams.set(k, v);
  const res = await fetch(u, { headers, signal: AbortSignal.timeout(120_000) });
  if (res.status !== 200) {
    const body = await res.text();
    throw Object.assign(new Error(`HTTP ${res.status}: ${body}`), { status: res.status, body });
  }
  return readDelta(res.body as unknown as AsyncIterable<Uint8Array>);
}

/** Decodes a whole delta stream (e.g. a file a `curl` child wrote), verifying every item's digest and size. */
export async function readDelta(source: AsyncIterable<Uint8Array>): Promise<FetchedDelta> {
  let wireBytes = 0;
  let chunkFrames = 0;
  let header: DeltaHeader | undefined;
  let image: DeltaImage | undefined;
  let end: DeltaEnd | undefined;
  const parts = new Map<number, Buffer[]>();
  const contents = new Map<number, Buffer>();
  const body = (async function* () {
    for await (const b of source) {
      wireBytes += b.length;
      yield b;
    }
  })();
  for await (const ev of decodeDelta(body)) {
    if (ev.type === 'header') header = ev.header;
    else if (ev.type === 'end') end = ev.end;
    else if (ev.type === 'image') image = ev.image;
    else {
      chunkFrames++;
      const list = parts.get(ev.index) ?? [];
      list.push(Buffer.from(ev.data));
      parts.set(ev.index, list);
      if (ev.last) {
        const item = header!.items[ev.index]!;
        const raw = decodeItem(item, Buffer.concat(list));
        if (raw.length !== item.size || sha256(raw) !== item.digest) throw new Error(`item ${ev.index} does not match ${item.digest}`);
        contents.set(ev.index, raw);
        parts.delete(ev.index);
      }
    }
  }
  return { header: header!, end: end!, contents, ...(image !== undefined ? { image } : {}), wireBytes, chunkFrames };
}

export async function metrics(proxyUrl: string): Promise<Map<string, number>> {
  // The deadline is this process's wall time: it also runs while a concurrent test's synchronous work (a
  // layer's gzipSync, ~10 s of one thread under load) holds the event loop, and when that ends the expired
  // timer fires before the answer that arrived meanwhile is read (DOMException TimeoutError). Loopback
  // answers come in milliseconds; the bound is only against a proxy that stopped answering.
  const text = await (await fetch(new URL('/metrics', proxyUrl), { signal: AbortSignal.timeout(60_000) })).text();
  return parseMetrics(text);
}

/** Peak resident set of a process, kB (/proc/<pid>/status VmHWM). */
export function peakRssKb(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : -1;
}
