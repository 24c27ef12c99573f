/**
 * containerd's Snapshots gRPC service over any Snapshotter: an adapter ONLY (decode → call → encode,
 * errors through grpc-errors.ts), modelled on containerd contrib/snapshotservice/service.go.
 * The request's `snapshotter` field is ignored: one socket serves one snapshotter.
 *
 * Not here: any snapshot logic (snapshotter.ts), sockets and lifecycle (server.ts).
 */
import * as grpc from '@grpc/grpc-js';
import { once } from 'node:events';
import { StarlightError } from '../../errors.js';
import { toGrpcError } from './grpc-errors.js';
import {
  infoToWire,
  mountToWire,
  type WireCommitRequest,
  type WireCreateRequest,
  type WireInfo,
  type WireKeyRequest,
  type WireListRequest,
  type WireListResponse,
  type WireUpdateRequest,
} from './grpc-proto.js';
import { isCleaner, type Info, type Snapshotter } from './types.js';

/** Infos per List message, as containerd's service (service.go:124–158). */
const LIST_BATCH_SIZE = 100;

type Unary<Req, Res> = (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => void;

/** Wraps an async handler into a grpc-js unary handler with the one error mapping. */
function unary<Req, Res>(fn: (req: Req) => Promise<Res>): Unary<Req, Res> {
  return (call, cb) => {
    fn(call.request).then(
      (res) => cb(null, res),
      (err: unknown) => cb(toGrpcError(err)),
    );
  };
}

const EMPTY = {};

/** grpc-js handlers for `containerd.services.snapshots.v1.Snapshots`. */
export function snapshotsHandlers(sn: Snapshotter): grpc.UntypedServiceImplementation {
  return {
    Prepare: unary(async (r: WireCreateRequest) => ({ mounts: (await sn.prepare(r.key, r.parent, { labels: r.labels })).map(mountToWire) })),
    View: unary(async (r: WireCreateRequest) => ({ mounts: (await sn.view(r.key, r.parent, { labels: r.labels })).map(mountToWire) })),
    Mounts: unary(async (r: WireKeyRequest) => ({ mounts: (await sn.mounts(r.key)).map(mountToWire) })),
    Commit: unary(async (r: WireCommitRequest) => {
      await sn.commit(r.name, r.key, { labels: r.labels });
      return EMPTY;
    }),
    Remove: unary(async (r: WireKeyRequest) => {
      await sn.remove(r.key);
      return EMPTY;
    }),
    Stat: unary(async (r: WireKeyRequest) => ({ info: infoToWire(await sn.stat(r.key)) })),
    Update: unary(async (r: WireUpdateRequest) => {
      if (!r.info) throw new StarlightError('SL_ERR_SNAPSHOT_INVALID', 'Update needs info with a name');
      const info = decodeInfo(r.info);
      return { info: infoToWire(await sn.update(info, r.update_mask?.paths ?? [])) };
    }),
    Usage: unary(async (r: WireKeyRequest) => sn.usage(r.key)),
    Cleanup: unary(async () => {
      if (!isCleaner(sn)) throw new StarlightError('SL_ERR_SNAPSHOT_UNIMPLEMENTED', 'this snapshotter does not implement Cleanup');
      await sn.cleanup();
      return EMPTY;
    }),
    List: (call: grpc.ServerWritableStream<WireListRequest, WireListResponse>) => {
      list(sn, call).then(
        () => call.end(),
        // grpc-js turns a server stream's 'error' event into the call's status (server-call.js).
        (err: unknown) => call.emit('error', toGrpcError(err)),
      );
    },
  };
}

/** Update only reads name and labels (the rest is immutable), so other fields are not validated. */
function decodeInfo(w: WireInfo): Pick<Info, 'name' | 'labels'> {
  return { name: w.name, labels: { ...(w.labels ?? {}) } };
}

async function list(sn: Snapshotter, call: grpc.ServerWritableStream<WireListRequest, WireListResponse>): Promise<void> {
  let batch: WireInfo[] = [];
  const flush = async () => {
    const msg = { info: batch };
    batch = [];
    if (!call.write(msg)) await once(call, 'drain');
  };
  await sn.walk(async (info) => {
    if (call.cancelled) throw new StarlightError('SL_ERR_CANCELED', 'List canceled by the client');
    batch.push(infoToWire(info));
    if (batch.length >= LIST_BATCH_SIZE) await flush();
  }, call.request.filters ?? []);
  if (batch.length > 0) await flush();
}
