/**
 * Mode "estargz": lazy pulling with the stargz snapshotter. Images are converted once per bench
 * registry (`ctr-remote image optimize --oci`, which also records the startup files as prefetch
 * landmarks) and pushed as "<tag>-esgz"; a persistent bench registry keeps them for later runs.
 * Per trial: containerd-stargz-grpc with its own root and socket, a containerd with it as proxy
 * snapshotter "stargz", `ctr-remote images rpull` over the WAN link, `ctr run --snapshotter stargz`.
 *
 * Tools: ctr-remote (apt stargz-snapshotter) and containerd-stargz-grpc on PATH; both come from
 * scripts/build-estargz.sh. Missing tools skip the mode with that hint.
 *
 * Not here: the containerd instance (containerd.ts), ready detection (container.ts).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { runToExit, runUntilReady, type ReadyContainer } from './container.js';
import { startContainerd, type BenchContainerd } from './containerd.js';
import { linkedRef } from './overlayfs.js';
import { startDaemon, type RunOutput } from './proc.js';
import { which } from './tools.js';
import type { BenchImage, ImageVersion, ModeDefinition, ModeDriver, SharedEnv, TrialEnv } from './types.js';

/** Snapshotter name of the stargz proxy plugin in the trial's containerd config. */
const SNAPSHOTTER = 'stargz';
/** Suffix of converted tags: "v1" → "v1-esgz". */
const TAG_SUFFIX = '-esgz';
/** gzip level of converted layers: 6 = the level the plain images use (ctr-remote defaults to 9), so sizes compare. */
const COMPRESSION_LEVEL = 6;
/** Seconds `optimize` watches the sample container for file accesses (ctr-remote default 10; our images are ready in < 2 s). */
const OPTIMIZE_PERIOD_S = 5;
/** Longest one image conversion may take, ms (~60 s per image version on 2 cores at level 9). */
const CONVERT_TIMEOUT_MS = 10 * 60_000;
/** How long containerd-stargz-grpc may take to create its socket, ms. */
const START_TIMEOUT_MS = 20_000;

async function tagExists(registry: string, repository: string, tag: string): Promise<boolean> {
  const res = await fetch(`http://${registry}/v2/${repository}/manifests/${tag}`, {
    method: 'HEAD',
    headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json' },
  });
  return res.status === 200;
}

/** Converts every image version that has no "-esgz" tag yet, in a scratch containerd; sets image.estargzTags. */
async function prepare(shared: SharedEnv, images: BenchImage[], signal: AbortSignal): Promise<void> {
  let cd: BenchContainerd | undefined;
  try {
    for (const img of images) {
      const tags = { v1: `v1${TAG_SUFFIX}`, v2: `v2${TAG_SUFFIX}` };
      for (const v of ['v1', 'v2'] as const) {
        const src = `${shared.registry}/${img.repository}:${img.versions[v].tag}`;
        const dst = `${shared.registry}/${img.repository}:${tags[v]}`;
        if (await tagExists(shared.registry, img.repository, tags[v])) continue;
        const t0 = Date.now();
        shared.log.info('bench-estargz-converting', { image: src });
        cd ??= await startContainerd({ dir: join(shared.workDir, 'esgz-prep') });
        await cd.ctr(['images', 'pull', '--plain-http', src], { timeoutMs: CONVERT_TIMEOUT_MS, signal });
        await cd.ctr(['images', 'optimize', '--oci', '--estargz-compression-level', String(COMPRESSION_LEVEL), '--period', String(OPTIMIZE_PERIOD_S), src, dst], {
          bin: 'ctr-remote',
          timeoutMs: CONVERT_TIMEOUT_MS,
          signal,
        });
        await cd.ctr(['images', 'push', '--plain-http', dst], { bin: 'ctr-remote', timeoutMs: CONVERT_TIMEOUT_MS, signal });
        shared.log.info('bench-estargz-converted', { image: dst, ms: Date.now() - t0 });
      }
      img.estargzTags = tags;
    }
  } finally {
    await cd?.stop();
  }
}

class EstargzDriver implements ModeDriver {
  readonly name = 'estargz';
  private cd?: BenchContainerd;
  private seq = 0;

  async setup(env: TrialEnv): Promise<void> {
    const root = join(env.dir, 'sg');
    mkdirSync(root, { recursive: true });
    const socket = join(env.dir, 'sg.sock');
    const daemon = await startDaemon('containerd-stargz-grpc', 'containerd-stargz-grpc', ['-address', socket, '-root', root, '-log-level', 'warn'], async () => existsSync(socket), {
      timeoutMs: START_TIMEOUT_MS,
    });
    env.cleanups.add('stop containerd-stargz-grpc', () => daemon.stop());
    this.cd = await startContainerd({ dir: join(env.dir, 'cd'), proxySnapshotters: { [SNAPSHOTTER]: socket } });
    const cd = this.cd;
    env.cleanups.add('stop containerd', () => cd.stop());
  }

  private tag(version: ImageVersion, env: TrialEnv): string {
    const t = env.image.estargzTags?.[version];
    if (!t) throw new Error(`image ${env.image.name} ${version} was not converted to eStargz (prepare did not run)`);
    return t;
  }

  async pull(version: ImageVersion, env: TrialEnv): Promise<void> {
    const ref = await linkedRef(env, this.tag(version, env));
    await this.cd!.ctr(['images', 'rpull', '--plain-http', ref], { bin: 'ctr-remote', timeoutMs: env.spec.timeoutMs, signal: env.signal });
  }

  async run(version: ImageVersion, env: TrialEnv): Promise<ReadyContainer> {
    const ref = await linkedRef(env, this.tag(version, env));
    return runUntilReady(this.cd!, { ref, id: `esgz-${version}-${++this.seq}`, snapshotter: SNAPSHOTTER }, env.image.versions[version].ready, {
      timeoutMs: env.spec.timeoutMs,
      signal: env.signal,
    });
  }

  async exec(version: ImageVersion, command: string[], env: TrialEnv): Promise<RunOutput> {
    const ref = await linkedRef(env, this.tag(version, env));
    return runToExit(this.cd!, { ref, id: `esgz-x-${++this.seq}`, snapshotter: SNAPSHOTTER, command }, { timeoutMs: env.spec.timeoutMs, signal: env.signal });
  }
}

export const estargzMode: ModeDefinition = {
  name: 'estargz',
  unavailable: async () => {
    const missing = ['ctr-remote', 'containerd-stargz-grpc'].filter((t) => which(t) === undefined);
    return missing.length > 0 ? `${missing.join(' and ')} not on PATH; run scripts/build-estargz.sh` : undefined;
  },
  prepare,
  create: () => new EstargzDriver(),
};
