/**
 * A small client of containerd's own gRPC API (content, images, leases, snapshots) on containerd's
 * socket, as the worker daemon needs it for a lazy pull: write small blobs with gc labels, create or
 * update an image record, hold a lease, and Prepare/Stat/Remove snapshots through containerd's
 * metadata layer (so containerd records the remote snapshots our backend provides).
 *
 * Every call carries the namespace (`containerd-namespace` metadata) and, inside withLease(), the
 * lease (`containerd-lease`), exactly as containerd's Go client does (namespaces/grpc.go,
 * leases/grpc.go).
 *
 * Not here: what to write (service.ts), the snapshotter backend (snapshotter/).
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { randomBytes } from 'node:crypto';
import { StarlightError, hasCode, type Code } from '../../errors.js';
import { PROTO_DIR } from '../snapshotter/grpc-proto.js';

/** containerd's default socket. */
export const DEFAULT_CONTAINERD_ADDRESS = '/run/containerd/containerd.sock';
/** gRPC metadata key of the namespace (containerd namespaces/grpc.go). */
const NAMESPACE_HEADER = 'containerd-namespace';
/** gRPC metadata key of the lease (containerd leases/grpc.go). */
const LEASE_HEADER = 'containerd-lease';
/** Label that makes containerd's gc drop a lease after this RFC 3339 time (leases.WithExpiration). */
const LABEL_LEASE_EXPIRE = 'containerd.io/gc.expire';
/** Lifetime of a pull lease if the daemon dies before deleting it, ms. */
const LEASE_TTL_MS = 60 * 60_000;
/** Deadline of one unary containerd call, ms. */
const CALL_TIMEOUT_MS = 30_000;

const PROTOS = [
  'containerd/services/content/v1/content.proto',
  'containerd/services/images/v1/images.proto',
  'containerd/services/leases/v1/leases.proto',
  'containerd/services/snapshots/v1/snapshots.proto',
];

/** The protos' definitions, parsed once per process (parsing takes tens of ms; issue 19). */
let definitions: protoLoader.PackageDefinition | undefined;
function loadDefinitions(): protoLoader.PackageDefinition {
  return (definitions ??= protoLoader.loadSync(PROTOS, { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_DIR] }));
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

type Unary = (req: object, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;
type GenericClient = grpc.Client & Record<string, Unary>;

/** The code of containerd's answer, so callers test kinds (hasCode) instead of re-reading gRPC details. */
const CODE_BY_STATUS: Partial<Record<grpc.status, Code>> = {
  [grpc.status.NOT_FOUND]: 'SL_ERR_CONTAINERD_NOT_FOUND',
  [grpc.status.ALREADY_EXISTS]: 'SL_ERR_CONTAINERD_EXISTS',
  [grpc.status.INVALID_ARGUMENT]: 'SL_ERR_CONTAINERD_REJECTED',
  [grpc.status.FAILED_PRECONDITION]: 'SL_ERR_CONTAINERD_REJECTED',
  [grpc.status.CANCELLED]: 'SL_ERR_CANCELED',
};

export class ContainerdClient {
  private readonly content: GenericClient;
  private readonly images: GenericClient;
  private readonly leases: GenericClient;
  private readonly snapshots: GenericClient;

  constructor(
    readonly address: string,
    readonly namespace: string,
    private readonly lease?: string,
    clients?: [GenericClient, GenericClient, GenericClient, GenericClient],
  ) {
    if (clients) {
      [this.content, this.images, this.leases, this.snapshots] = clients;
      return;
    }
    const def = loadDefinitions();
    const make = (name: string) => {
      const Ctor = grpc.makeGenericClientConstructor(def[name] as grpc.ServiceDefinition, name);
      return new Ctor(`unix://${address}`, grpc.credentials.createInsecure()) as unknown as GenericClient;
    };
    this.content = make('containerd.services.content.v1.Content');
    this.images = make('containerd.services.images.v1.Images');
    this.leases = make('containerd.services.leases.v1.Leases');
    this.snapshots = make('containerd.services.snapshots.v1.Snapshots');
  }

  /** A client of namespace `namespace` on this client's connections (close() the original only). */
  inNamespace(namespace: string): ContainerdClient {
    return new ContainerdClient(this.address, namespace, undefined, [this.content, this.images, this.leases, this.snapshots]);
  }

  private metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set(NAMESPACE_HEADER, this.namespace);
    if (this.lease) md.set(LEASE_HEADER, this.lease);
    return md;
  }

  private call<T>(client: GenericClient, method: string, req: object): Promise<T> {
    return new Promise((resolve, reject) => {
      client[method]!.call(client, req, this.metadata(), { deadline: Date.now() + CALL_TIMEOUT_MS }, (err, res) => {
        if (err) reject(this.wrap(err, method));
        else resolve(res as T);
      });
    });
  }

  private wrap(err: grpc.ServiceError, what: string): StarlightError {
    return new StarlightError(CODE_BY_STATUS[err.code] ?? 'SL_ERR_CONTAINERD', `containerd ${what} failed (namespace ${this.namespace}, ${this.address}): ${err.details || err.message}`, {
      cause: err,
      details: { grpcStatus: err.code, call: what, namespace: this.namespace },
    });
  }

  /**
   * Creates a fresh lease now, so that its round trip can overlap other work (issue 19: it is asked
   * while the proxy's header is on its way); hand it to withLease, or to dropLease if unused.
   */
  async createLease(): Promise<string> {
    const id = `starlight-pull-${Date.now()}-${randomBytes(4).toString('hex')}`;
    const expire = new Date(Date.now() + LEASE_TTL_MS).toISOString();
    await this.call(this.leases, 'Create', { id, labels: { [LABEL_LEASE_EXPIRE]: expire } });
    return id;
  }

  /** Deletes a lease without waiting (a lease left by a failed delete expires after LEASE_TTL_MS). */
  dropLease(id: string): void {
    void this.call(this.leases, 'Delete', { id, sync: false }).catch(() => undefined);
  }

  /** A client whose calls are all under lease `id` (from createLease), on this client's connections. */
  leased(id: string): ContainerdClient {
    return new ContainerdClient(this.address, this.namespace, id, [this.content, this.images, this.leases, this.snapshots]);
  }

  /**
   * Runs fn with a client whose calls are all under a lease (`lease`, from createLease, or a fresh
   * one), then deletes the lease. The lease keeps gc from collecting content and snapshots written
   * before the image record references them. The delete is not awaited: once fn resolved, the
   * records it wrote hold their content; it saves a round trip per pull.
   */
  async withLease<T>(fn: (c: ContainerdClient) => Promise<T>, lease: Promise<string> = this.createLease()): Promise<T> {
    const id = await lease;
    try {
      return await fn(this.leased(id));
    } finally {
      this.dropLease(id);
    }
  }

  /**
   * Writes a small blob into containerd's content store (one COMMIT message carrying all bytes), with
   * labels. If the blob exists already, only its labels are set.
   */
  async writeBlob(ref: string, data: Uint8Array, expected: string, labels: Record<string, string>): Promise<void> {
    try {
      await new Promise<void>((resolve, reject) => {
        const stream = (this.content as unknown as { Write(md: grpc.Metadata, o: grpc.CallOptions): grpc.ClientDuplexStream<object, object> }).Write(this.metadata(), {
          deadline: Date.now() + CALL_TIMEOUT_MS,
        });
        let answered = false;
        stream.on('data', () => {
          answered = true;
          stream.end();
        });
        stream.on('error', (err: grpc.ServiceError) => reject(this.wrap(err, `content Write ${expected}`)));
        stream.on('end', () => (answered ? resolve() : reject(new StarlightError('SL_ERR_CONTAINERD', `containerd closed the write of ${expected} without an answer`))));
        stream.write({ action: 'COMMIT', ref, total: data.length, expected, offset: 0, data: Buffer.from(data), labels });
      });
    } catch (err) {
      if (!hasCode(err, 'SL_ERR_CONTAINERD_EXISTS')) throw err;
      const paths = Object.keys(labels).map((k) => `labels.${k}`);
      await this.call(this.content, 'Update', { info: { digest: expected, labels }, update_mask: { paths } });
    }
  }

  /** Creates image `name` → target, or points the existing record at target. */
  async putImage(name: string, target: Descriptor): Promise<void> {
    const image = { name, labels: {}, target: { media_type: target.mediaType, digest: target.digest, size: target.size, annotations: {} } };
    try {
      await this.call(this.images, 'Create', { image });
    } catch (err) {
      if (!hasCode(err, 'SL_ERR_CONTAINERD_EXISTS')) throw err;
      await this.call(this.images, 'Update', { image, update_mask: { paths: ['target'] } });
    }
  }

  /** Info of a snapshot through containerd's metadata, or undefined if containerd has none. */
  async statSnapshot(snapshotter: string, key: string): Promise<{ name: string; parent: string; kind: string } | undefined> {
    try {
      const res = await this.call<{ info: { name: string; parent: string; kind: string } }>(this.snapshots, 'Stat', { snapshotter, key });
      return res.info;
    } catch (err) {
      if (hasCode(err, 'SL_ERR_CONTAINERD_NOT_FOUND')) return undefined;
      throw err;
    }
  }

  /** Prepare through containerd; resolves true if it answered already-exists (the remote case). */
  async prepareSnapshot(snapshotter: string, key: string, parent: string, labels: Record<string, string>): Promise<boolean> {
    try {
      await this.call(this.snapshots, 'Prepare', { snapshotter, key, parent, labels });
      return false;
    } catch (err) {
      if (hasCode(err, 'SL_ERR_CONTAINERD_EXISTS')) return true;
      throw err;
    }
  }

  async removeSnapshot(snapshotter: string, key: string): Promise<void> {
    await this.call(this.snapshots, 'Remove', { snapshotter, key });
  }

  close(): void {
    for (const c of [this.content, this.images, this.leases, this.snapshots]) c.close();
  }
}
