/**
 * A Snapshotter over gRPC: the mirror of grpc-service.ts (like containerd's snapshots/proxy), for
 * tests, the CLI and the conformance suite. Errors come back as StarlightErrors via grpc-errors.ts.
 *
 * Not here: connection policy beyond grpc-js defaults; a deadline is applied per call.
 */
import * as grpc from '@grpc/grpc-js';
import { fromGrpcError } from './grpc-errors.js';
import {
  infoFromWire,
  mountFromWire,
  snapshotsClientConstructor,
  type WireInfoResponse,
  type WireListResponse,
  type WireMountsResponse,
  type WireUsageResponse,
} from './grpc-proto.js';
import type { Info, Mount, SnapshotOpts, Snapshotter, Usage, WalkFn, Cleaner } from './types.js';

/** Deadline of one unary call, ms; usage of a large active snapshot is the slowest. Default 60 s. */
const DEFAULT_CALL_TIMEOUT_MS = 60_000;

export interface SnapshotsClientOptions {
  /** Unix socket path of the service. */
  socket: string;
  /** The `snapshotter` field sent with requests (containerd sends its proxy plugin name). Default 'starlight'. */
  name?: string;
  /** Per-call deadline, ms. Default 60 000. */
  callTimeoutMs?: number;
}

type UnaryMethod = (req: unknown, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;

export class SnapshotsClient implements Snapshotter, Cleaner {
  private readonly client: grpc.Client;
  private readonly name: string;
  private readonly timeoutMs: number;
  private closed = false;

  constructor(opts: SnapshotsClientOptions) {
    const Ctor = snapshotsClientConstructor();
    this.client = new Ctor(`unix://${opts.socket}`, grpc.credentials.createInsecure());
    this.name = opts.name ?? 'starlight';
    this.timeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  }

  private call<Res>(method: string, req: Record<string, unknown>, context: string): Promise<Res> {
    const fn = (this.client as unknown as Record<string, UnaryMethod>)[method]!.bind(this.client);
    return new Promise<Res>((resolve, reject) => {
      fn({ snapshotter: this.name, ...req }, { deadline: Date.now() + this.timeoutMs }, (err, res) => {
        if (err) reject(fromGrpcError(err, context));
        else resolve(res as Res);
      });
    });
  }

  async stat(key: string): Promise<Info> {
    const r = await this.call<WireInfoResponse>('Stat', { key }, `stat ${key}`);
    return infoFromWire(r.info!);
  }

  async update(info: Pick<Info, 'name' | 'labels'>, fieldpaths: string[] = []): Promise<Info> {
    const r = await this.call<WireInfoResponse>(
      'Update',
      { info: { name: info.name, labels: info.labels }, update_mask: fieldpaths.length > 0 ? { paths: fieldpaths } : null },
      `update ${info.name}`,
    );
    return infoFromWire(r.info!);
  }

  async usage(key: string): Promise<Usage> {
    const r = await this.call<WireUsageResponse>('Usage', { key }, `usage ${key}`);
    return { size: Number(r.size), inodes: Number(r.inodes) };
  }

  async mounts(key: string): Promise<Mount[]> {
    const r = await this.call<WireMountsResponse>('Mounts', { key }, `mounts ${key}`);
    return r.mounts.map(mountFromWire);
  }

  async prepare(key: string, parent: string, opts: SnapshotOpts = {}): Promise<Mount[]> {
    const r = await this.call<WireMountsResponse>('Prepare', { key, parent, labels: opts.labels ?? {} }, `prepare ${key}`);
    return r.mounts.map(mountFromWire);
  }

  async view(key: string, parent: string, opts: SnapshotOpts = {}): Promise<Mount[]> {
    const r = await this.call<WireMountsResponse>('View', { key, parent, labels: opts.labels ?? {} }, `view ${key}`);
    return r.mounts.map(mountFromWire);
  }

  async commit(name: string, key: string, opts: SnapshotOpts = {}): Promise<void> {
    await this.call('Commit', { name, key, labels: opts.labels ?? {} }, `commit ${key} as ${name}`);
  }

  async remove(key: string): Promise<void> {
    await this.call('Remove', { key }, `remove ${key}`);
  }

  async cleanup(): Promise<void> {
    await this.call('Cleanup', {}, 'cleanup');
  }

  async walk(fn: WalkFn, filters: string[] = []): Promise<void> {
    const list = (this.client as unknown as Record<string, (req: unknown, opts: grpc.CallOptions) => grpc.ClientReadableStream<WireListResponse>>)['List']!;
    const stream = list.call(this.client, { snapshotter: this.name, filters }, { deadline: Date.now() + this.timeoutMs });
    try {
      for await (const msg of stream as AsyncIterable<WireListResponse>) {
        for (const w of msg.info) await fn(infoFromWire(w));
      }
    } catch (err) {
      stream.cancel();
      if (err instanceof Error && typeof (err as Partial<grpc.ServiceError>).code === 'number') throw fromGrpcError(err, 'walk');
      throw err;
    }
  }

  /** Closes the channel only (the server keeps running). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.client.close();
  }
}
