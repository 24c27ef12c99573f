/**
 * ensureDebianImage(): a real Debian bookworm image in a registry, for e2e tests and bench drivers.
 * Builds the layers with build-rootfs.sh (cached under /var/cache/starlight/bench-images: the first
 * call on a machine takes a minute or two, later ones about a second), then pushes them (gzip cached
 * next to the tars; the registry skips blobs it has).
 *
 * Needs root, debootstrap and the Debian mirror the machine's apt uses. The build script serialises
 * concurrent builds with a lock, so parallel tests may call this at once.
 *
 * Not here: the build recipe (build-rootfs.sh), config/manifest (push.ts).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StarlightError } from '../../src/errors.js';
import { HarnessError, harnessOrCanceled } from '../../fixtures/harness-error.js';
import { nullLogger, type Logger } from '../../src/log.js';
import { RegistryClient } from '../../src/oci/client.js';
import { pushBenchImage, readBuiltImage, specFromBuilt, type BuiltImageJson, type PushedBenchImage } from './push.js';

/** Images build-rootfs.sh knows. */
export const DEBIAN_IMAGES = ['python-web', 'redis', 'nginx', 'node-app', 'postgres'] as const;
export type DebianImageName = (typeof DEBIAN_IMAGES)[number];

/** Longest a build may take, ms: a cold debootstrap + postgres here takes ~2 min; 15 min covers a slow mirror. */
const DEFAULT_BUILD_TIMEOUT_MS = 15 * 60_000;
/** Build log lines kept for the error message on failure. */
const LOG_TAIL_LINES = 20;

export interface EnsureOptions {
  /** "v1" (default) or "v2" (rebuilt package layer + changed app layer: the update case). */
  version?: 'v1' | 'v2';
  /** Repository in the registry. Default "bench/<name>"; tag = version. */
  repository?: string;
  /** Cache dir of build-rootfs.sh. Default its own (/var/cache/starlight/bench-images or $STARLIGHT_IMAGE_CACHE). */
  cacheDir?: string;
  /** Default 15 min. */
  timeoutMs?: number;
  signal?: AbortSignal;
  client?: RegistryClient;
  log?: Logger;
}

export interface EnsuredImage extends PushedBenchImage {
  built: BuiltImageJson;
}

/** The repo's bench/images/build-rootfs.sh, found from this file in src (bench/images) or dist (dist/bench/images). */
export function buildScriptPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const p = join(dir, 'bench', 'images', 'build-rootfs.sh');
    if (existsSync(p)) return p;
    dir = dirname(dir);
  }
  throw new HarnessError('SL_ERR_BENCH_IMAGE_BUILD', 'bench/images/build-rootfs.sh not found above ' + fileURLToPath(import.meta.url));
}

/** Runs build-rootfs.sh for one image version; resolves with the image JSON path it printed. */
export function buildDebianImage(name: DebianImageName, version: 'v1' | 'v2', opts: Pick<EnsureOptions, 'cacheDir' | 'timeoutMs' | 'signal' | 'log'> = {}): Promise<string> {
  const args = [buildScriptPath(), '--versions', version];
  if (opts.cacheDir) args.push('--cache', opts.cacheDir);
  args.push(name);
  const log = opts.log ?? nullLogger;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_BUILD_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    // Own process group, so a timeout or abort ends apt/debootstrap too; their mounts live in a
    // private mount namespace and vanish with them.
    const child = spawn('bash', args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let why: string | undefined;
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err = (err + b.toString()).slice(-16_384)));
    const kill = (reason: string): void => {
      why ??= reason;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGTERM');
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => kill(`timed out after ${timeoutMs} ms`), timeoutMs);
    const onAbort = (): void => kill('aborted');
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (e) => kill(e.message));
    child.on('close', (code) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      const tail = err.trim().split('\n').slice(-LOG_TAIL_LINES).join('\n');
      const jsonPath = out.trim().split('\n').pop() ?? '';
      if (code === 0 && why === undefined && jsonPath.endsWith('.json')) {
        log.info('bench-image-built', { image: name, version, ms: Date.now() - t0 });
        resolve(jsonPath);
        return;
      }
      reject(
        harnessOrCanceled(
          why === 'aborted',
          'SL_ERR_BENCH_IMAGE_BUILD',
          `building Debian image ${name} ${version} failed (${why ?? `exit ${String(code)}`}); build-rootfs.sh said:\n${tail}`,
          { details: { image: name, version, exitCode: code } },
        ),
      );
    });
  });
}

/**
 * Builds (or reuses) Debian image `name` and pushes it to `registryUrl` ("127.0.0.1:5000" or
 * "http://127.0.0.1:5000") as <repository>:<version>. Idempotent: same tars → same manifest digest.
 */
export async function ensureDebianImage(registryUrl: string, name: DebianImageName, opts: EnsureOptions = {}): Promise<EnsuredImage> {
  if (!(DEBIAN_IMAGES as readonly string[]).includes(name)) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `unknown bench image ${JSON.stringify(name)}; choose one of ${DEBIAN_IMAGES.join(', ')}`, {
      details: { image: name },
    });
  }
  const version = opts.version ?? 'v1';
  const jsonPath = await buildDebianImage(name, version, opts);
  const built = await readBuiltImage(jsonPath);
  const pushed = await pushBenchImage(registryUrl, specFromBuilt(built, opts.repository), opts.client, opts.signal);
  (opts.log ?? nullLogger).info('bench-image-pushed', { image: pushed.reference, digest: pushed.digest });
  return { ...pushed, built };
}
