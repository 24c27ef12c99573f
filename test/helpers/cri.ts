/**
 * A CRI v1 client for e2e tests: what the kubelet says to containerd's CRI plugin, over containerd's
 * gRPC socket, with the vendored k8s.io/cri-api proto (proto/cri-api/runtime/v1/api.proto) loaded by
 * @grpc/proto-loader. Only the calls the tests make are typed; message shapes follow the proto
 * (keepCase field names, enums as their names).
 *
 * Not here: starting containerd (containerd.ts), pod/container specs (the tests build them).
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { PROTO_DIR } from '../../src/worker/snapshotter/grpc-proto.js';

const CRI_PROTO = 'cri-api/runtime/v1/api.proto';
/** Deadline of one CRI call, ms (PullImage and StopPodSandbox included; generous for a loaded host). */
const CALL_TIMEOUT_MS = 120_000;

type Unary = (req: object, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;
type GenericClient = grpc.Client & Record<string, Unary>;

export interface PodSandboxConfig {
  metadata: { name: string; uid: string; namespace: string; attempt?: number };
  hostname?: string;
  log_directory?: string;
  labels?: Record<string, string>;
  linux?: { security_context?: { namespace_options?: { network?: 'POD' | 'CONTAINER' | 'NODE' | 'TARGET' } } };
}

export interface ContainerConfig {
  metadata: { name: string; attempt?: number };
  image: { image: string };
  command?: string[];
  args?: string[];
  log_path?: string;
  labels?: Record<string, string>;
}

export interface ContainerStatus {
  id: string;
  state: 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';
  exit_code: number;
  log_path: string;
  image_ref: string;
}

export interface CriImage {
  id: string;
  repo_tags: string[];
  repo_digests: string[];
  size: number;
}

export class CriClient {
  private readonly runtime: GenericClient;
  private readonly images: GenericClient;

  /** `address`: containerd's gRPC socket path (the CRI plugin serves on it). */
  constructor(address: string) {
    const def = protoLoader.loadSync(CRI_PROTO, { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_DIR] });
    const make = (name: string) => {
      const Ctor = grpc.makeGenericClientConstructor(def[name] as grpc.ServiceDefinition, name);
      return new Ctor(`unix://${address}`, grpc.credentials.createInsecure()) as unknown as GenericClient;
    };
    this.runtime = make('runtime.v1.RuntimeService');
    this.images = make('runtime.v1.ImageService');
  }

  private call<T>(client: GenericClient, method: string, req: object): Promise<T> {
    return new Promise((resolve, reject) => {
      client[method]!(req, new grpc.Metadata(), { deadline: Date.now() + CALL_TIMEOUT_MS }, (err, res) => {
        if (err) reject(new Error(`CRI ${method}: ${err.details || err.message}`, { cause: err }));
        else resolve(res as T);
      });
    });
  }

  version(): Promise<{ runtime_name: string; runtime_version: string; runtime_api_version: string }> {
    return this.call(this.runtime, 'Version', {});
  }

  /** PullImage; resolves with the image ref (id) containerd returns. */
  async pullImage(image: string, sandbox?: PodSandboxConfig): Promise<string> {
    const res = await this.call<{ image_ref: string }>(this.images, 'PullImage', { image: { image }, sandbox_config: sandbox });
    return res.image_ref;
  }

  async listImages(): Promise<CriImage[]> {
    return (await this.call<{ images: CriImage[] }>(this.images, 'ListImages', {})).images;
  }

  async removeImage(image: string): Promise<void> {
    await this.call(this.images, 'RemoveImage', { image: { image } });
  }

  async runPodSandbox(config: PodSandboxConfig): Promise<string> {
    return (await this.call<{ pod_sandbox_id: string }>(this.runtime, 'RunPodSandbox', { config })).pod_sandbox_id;
  }

  async stopPodSandbox(id: string): Promise<void> {
    await this.call(this.runtime, 'StopPodSandbox', { pod_sandbox_id: id });
  }

  async removePodSandbox(id: string): Promise<void> {
    await this.call(this.runtime, 'RemovePodSandbox', { pod_sandbox_id: id });
  }

  async listPodSandboxes(): Promise<{ id: string; state: string }[]> {
    return (await this.call<{ items: { id: string; state: string }[] }>(this.runtime, 'ListPodSandbox', {})).items;
  }

  async createContainer(podId: string, config: ContainerConfig, sandbox: PodSandboxConfig): Promise<string> {
    return (await this.call<{ container_id: string }>(this.runtime, 'CreateContainer', { pod_sandbox_id: podId, config, sandbox_config: sandbox })).container_id;
  }

  async startContainer(id: string): Promise<void> {
    await this.call(this.runtime, 'StartContainer', { container_id: id });
  }

  /** StopContainer: SIGTERM, then SIGKILL after `timeoutS`. */
  async stopContainer(id: string, timeoutS: number): Promise<void> {
    await this.call(this.runtime, 'StopContainer', { container_id: id, timeout: timeoutS });
  }

  async removeContainer(id: string): Promise<void> {
    await this.call(this.runtime, 'RemoveContainer', { container_id: id });
  }

  async containerStatus(id: string): Promise<ContainerStatus> {
    return (await this.call<{ status: ContainerStatus }>(this.runtime, 'ContainerStatus', { container_id: id })).status;
  }

  async listContainers(): Promise<{ id: string; state: string }[]> {
    return (await this.call<{ containers: { id: string; state: string }[] }>(this.runtime, 'ListContainers', {})).containers;
  }

  close(): void {
    this.runtime.close();
    this.images.close();
  }
}
