/**
 * Mode "overlayfs": containerd's default path. `ctr images pull` fetches and unpacks every layer
 * over the emulated link, then `ctr run --snapshotter overlayfs` starts the container. The baseline
 * of every comparison (and of the overhead ratios).
 *
 * Not here: the containerd instance (containerd.ts), ready detection (container.ts).
 */
import { join } from 'node:path';
import { runToExit, runUntilReady, type ReadyContainer } from './container.js';
import { startContainerd, type BenchContainerd } from './containerd.js';
import { duBytes, type RunOutput } from './proc.js';
import type { ImageVersion, ModeDefinition, ModeDriver, TrialEnv } from './types.js';

/** Image reference of `version` as the worker sees it: through the trial's WAN link to the registry. */
export async function linkedRef(env: TrialEnv, tag: string): Promise<string> {
  return `${await env.link(env.spec.shared.registry)}/${env.image.repository}:${tag}`;
}

class OverlayfsDriver implements ModeDriver {
  readonly name = 'overlayfs';
  private cd?: BenchContainerd;
  private seq = 0;

  async setup(env: TrialEnv): Promise<void> {
    this.cd = await startContainerd({ dir: join(env.dir, 'cd') });
    const cd = this.cd;
    env.cleanups.add('stop containerd', () => cd.stop());
  }

  async pull(version: ImageVersion, env: TrialEnv): Promise<void> {
    const ref = await linkedRef(env, env.image.versions[version].tag);
    await this.cd!.ctr(['images', 'pull', '--plain-http', ref], { timeoutMs: env.spec.timeoutMs, signal: env.signal });
  }

  async run(version: ImageVersion, env: TrialEnv): Promise<ReadyContainer> {
    const ref = await linkedRef(env, env.image.versions[version].tag);
    return runUntilReady(this.cd!, { ref, id: `ovl-${version}-${++this.seq}`, snapshotter: 'overlayfs' }, env.image.versions[version].ready, {
      timeoutMs: env.spec.timeoutMs,
      signal: env.signal,
    });
  }

  async exec(version: ImageVersion, command: string[], env: TrialEnv): Promise<RunOutput> {
    const ref = await linkedRef(env, env.image.versions[version].tag);
    return runToExit(this.cd!, { ref, id: `ovl-x-${++this.seq}`, snapshotter: 'overlayfs', command }, { timeoutMs: env.spec.timeoutMs, signal: env.signal });
  }

  /** containerd's unpacked layers + its content store (the compressed layer blobs). */
  diskBytes(): Promise<number> {
    const root = join(this.cd!.dir, 'root');
    return duBytes([join(root, 'io.containerd.snapshotter.v1.overlayfs'), join(root, 'io.containerd.content.v1.content')]);
  }
}

export const overlayfsMode: ModeDefinition = {
  name: 'overlayfs',
  unavailable: async () => undefined,
  create: () => new OverlayfsDriver(),
};
