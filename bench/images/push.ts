/**
 * Pushes bench images: layer tars → gzip blobs (layers.ts) + an OCI config (rootfs.diff_ids,
 * Entrypoint/Cmd, Env PATH) → the project's pushImage() to a registry.
 *
 * The config is deterministic (fixed `created`, no host data), so pushing the same tars twice gives
 * the same manifest digest, and the registry skips blobs it already has.
 *
 * CLI: node dist/bench/images/push.js --registry 127.0.0.1:5000 --name python-web --tag v1 LAYER.tar...
 *        [--entrypoint '["/app/start.sh"]'] [--cmd '[]'] [--ready 'READY']
 *      node dist/bench/images/push.js --registry 127.0.0.1:5000 --image-json IMAGE.json [--name N] [--tag T]
 *        (IMAGE.json as written by build-rootfs.sh: name, version, layers, entrypoint, env, ready, port)
 * Prints "<ref>@<manifest digest>".
 *
 * Not here: building the tars (build-rootfs.sh), caching builds (ensure.ts).
 */
import { readFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { RegistryClient } from '../../src/oci/client.js';
import { pushImage, type PushedImage } from '../../fixtures/push-image.js';
import { MEDIA_TYPES, type ImageConfig } from '../../src/oci/types.js';
import { StarlightError } from '../../src/errors.js';
import { compressLayer, type CompressedLayer } from './layers.js';

/** Image config label carrying the line the container prints once it serves (read by bench drivers). */
export const READY_LABEL = 'org.starlight.bench.ready';
/** Image config label carrying the app's TCP port. */
export const PORT_LABEL = 'org.starlight.bench.port';
/** `created` of every bench image config: fixed so digests do not change between pushes. */
const FIXED_CREATED = '2024-01-01T00:00:00Z';
/** Default Env of bench images (Debian's PATH; what Docker's debian images set). */
export const DEFAULT_ENV = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'];

export interface BenchImageSpec {
  /** Repository path inside the registry, e.g. "bench/python-web". */
  repository: string;
  tag: string;
  /** Uncompressed layer tars, bottom first. */
  layers: string[];
  entrypoint?: string[];
  cmd?: string[];
  /** Default DEFAULT_ENV. */
  env?: string[];
  /** Stored as the READY_LABEL label. */
  ready?: string;
  /** Stored as the PORT_LABEL label. */
  port?: number;
}

export interface PushedBenchImage extends PushedImage {
  /** "registry/repository:tag". */
  reference: string;
  config: ImageConfig;
  layers: CompressedLayer[];
}

/** The JSON file build-rootfs.sh writes per image version. */
export interface BuiltImageJson {
  name: string;
  version: string;
  layers: string[];
  entrypoint: string[];
  env: string[];
  ready: string;
  port: number;
}

function goArch(): string {
  const map: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x' };
  return map[process.arch] ?? process.arch;
}

/** The OCI image config for `spec` over layers with these diff_ids. */
export function benchConfig(spec: BenchImageSpec, diffIds: string[]): ImageConfig & { created: string } {
  const labels: Record<string, string> = {};
  if (spec.ready !== undefined) labels[READY_LABEL] = spec.ready;
  if (spec.port !== undefined) labels[PORT_LABEL] = String(spec.port);
  return {
    created: FIXED_CREATED,
    architecture: goArch(),
    os: 'linux',
    config: {
      Env: spec.env ?? DEFAULT_ENV,
      Entrypoint: spec.entrypoint ?? null,
      Cmd: spec.cmd ?? null,
      WorkingDir: '/',
      Labels: labels,
    },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: spec.layers.map((p) => ({ created: FIXED_CREATED, created_by: `starlight bench layer ${p.split('/').pop() ?? p}` })),
  };
}

/** "127.0.0.1:5000" from "http://127.0.0.1:5000/", "127.0.0.1:5000" or "127.0.0.1:5000/". */
export function registryHost(registryUrl: string): string {
  const host = registryUrl.replace(/^[a-z]+:\/\//i, '').replace(/\/+$/, '');
  if (host === '' || host.includes('/')) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `registry ${JSON.stringify(registryUrl)} is not host[:port] or http://host[:port]`, {
      details: { registry: registryUrl },
    });
  }
  return host;
}

/** Compresses (cached) and pushes one bench image; returns its reference and manifest digest. */
export async function pushBenchImage(registryUrl: string, spec: BenchImageSpec, client = new RegistryClient(), signal?: AbortSignal): Promise<PushedBenchImage> {
  if (spec.layers.length === 0) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `image ${spec.repository}:${spec.tag} has no layers`, { details: { image: spec.repository } });
  }
  const reference = `${registryHost(registryUrl)}/${spec.repository}:${spec.tag}`;
  const layers: CompressedLayer[] = [];
  for (const tar of spec.layers) layers.push(await compressLayer(tar));
  const config = benchConfig(spec, layers.map((l) => l.diffId));
  const pushed = await pushImage(
    client,
    reference,
    { config: Buffer.from(JSON.stringify(config)), layers: layers.map((l) => ({ data: l.gzPath, mediaType: MEDIA_TYPES.ociLayerGzip })) },
    signal,
  );
  return { ...pushed, reference, config, layers };
}

/** Reads an image JSON written by build-rootfs.sh. */
export async function readBuiltImage(path: string): Promise<BuiltImageJson> {
  const v = JSON.parse(await readFile(path, 'utf8')) as Partial<BuiltImageJson>;
  if (typeof v.name !== 'string' || typeof v.version !== 'string' || !Array.isArray(v.layers) || !Array.isArray(v.entrypoint)) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `${path} is not an image JSON of build-rootfs.sh (name, version, layers, entrypoint)`, { details: { path } });
  }
  return v as BuiltImageJson;
}

/** The spec that pushes a build-rootfs.sh image as "bench/<name>:<version>" unless overridden. */
export function specFromBuilt(img: BuiltImageJson, repository = `bench/${img.name}`, tag = img.version): BenchImageSpec {
  return { repository, tag, layers: img.layers, entrypoint: img.entrypoint, env: img.env, ready: img.ready, port: img.port };
}

function parseJsonList(flag: string, text: string): string[] {
  const v: unknown = JSON.parse(text);
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `${flag} wants a JSON list of strings, e.g. '["/app/start.sh"]'`);
  }
  return v as string[];
}

async function main(argv: string[]): Promise<void> {
  const flags = new Map<string, string>();
  const tars: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith('--')) {
      const v = argv[++i];
      if (v === undefined) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `${a} needs a value`);
      flags.set(a, v);
    } else tars.push(a);
  }
  const registry = flags.get('--registry');
  if (!registry) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', '--registry host:port is required');
  let spec: BenchImageSpec;
  const json = flags.get('--image-json');
  if (json) {
    spec = specFromBuilt(await readBuiltImage(json));
    if (flags.has('--name')) spec.repository = flags.get('--name')!;
    if (flags.has('--tag')) spec.tag = flags.get('--tag')!;
  } else {
    const name = flags.get('--name');
    if (!name || tars.length === 0) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', 'give --name NAME [--tag T] LAYER.tar... or --image-json FILE');
    spec = { repository: name, tag: flags.get('--tag') ?? 'latest', layers: tars };
    if (flags.has('--entrypoint')) spec.entrypoint = parseJsonList('--entrypoint', flags.get('--entrypoint')!);
    if (flags.has('--cmd')) spec.cmd = parseJsonList('--cmd', flags.get('--cmd')!);
    if (flags.has('--ready')) spec.ready = flags.get('--ready')!;
  }
  const pushed = await pushBenchImage(registry, spec);
  process.stdout.write(`${pushed.reference}@${pushed.digest}\n`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    const e = err as { code?: string; message?: string };
    process.stderr.write(`push: ${e.code ?? 'error'}: ${e.message ?? String(err)}\n`);
    process.exit(2);
  });
}
