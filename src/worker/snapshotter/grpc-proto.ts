/**
 * Loads containerd's snapshots API (proto/containerd/services/snapshots/v1/snapshots.proto) at
 * runtime with @grpc/proto-loader, and declares the decoded message shapes we rely on, plus the
 * conversions between wire messages and our types (like containerd's snapshots/proxy/convert.go).
 *
 * Loader options: keepCase (field names as in the .proto), longs as Number (sizes < 2^53), enums as
 * String ('ACTIVE'), defaults (absent scalars decode as ''/0, absent repeated as []).
 *
 * Not here: error mapping (grpc-errors.ts), serving (grpc-service.ts, server.ts).
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import type { EpochNanos, Info, Mount, SnapshotKind } from './types.js';

/** proto/ at the package root; this file runs from dist/src/worker/snapshotter/. */
export const PROTO_DIR = fileURLToPath(new URL('../../../../proto/', import.meta.url));
const SNAPSHOTS_PROTO = 'containerd/services/snapshots/v1/snapshots.proto';
const SERVICE_NAME = 'containerd.services.snapshots.v1.Snapshots';

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

/** The Snapshots service definition (paths `/containerd.services.snapshots.v1.Snapshots/<Method>`). */
export function snapshotsService(): grpc.ServiceDefinition {
  const def = protoLoader.loadSync(SNAPSHOTS_PROTO, LOADER_OPTIONS);
  return def[SERVICE_NAME] as grpc.ServiceDefinition;
}

/** A client constructor for the Snapshots service. */
export function snapshotsClientConstructor(): grpc.ServiceClientConstructor {
  return grpc.makeGenericClientConstructor(snapshotsService(), 'Snapshots');
}

// ---- wire shapes (as decoded with LOADER_OPTIONS) ----

export type WireKind = 'UNKNOWN' | 'VIEW' | 'ACTIVE' | 'COMMITTED';

export interface WireTimestamp {
  seconds: number;
  nanos: number;
}

export interface WireMount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

export interface WireInfo {
  name: string;
  parent: string;
  kind: WireKind;
  created_at: WireTimestamp | null;
  updated_at: WireTimestamp | null;
  labels: Record<string, string>;
}

export interface WireCreateRequest {
  snapshotter: string;
  key: string;
  parent: string;
  labels: Record<string, string>;
}
export interface WireKeyRequest {
  snapshotter: string;
  key: string;
}
export interface WireCommitRequest {
  snapshotter: string;
  name: string;
  key: string;
  labels: Record<string, string>;
}
export interface WireUpdateRequest {
  snapshotter: string;
  info: WireInfo | null;
  update_mask: { paths: string[] } | null;
}
export interface WireListRequest {
  snapshotter: string;
  filters: string[];
}
export interface WireMountsResponse {
  mounts: WireMount[];
}
export interface WireInfoResponse {
  info: WireInfo | null;
}
export interface WireListResponse {
  info: WireInfo[];
}
export interface WireUsageResponse {
  size: number;
  inodes: number;
}

// ---- conversions ----

const KIND_TO_WIRE: Record<SnapshotKind, WireKind> = { view: 'VIEW', active: 'ACTIVE', committed: 'COMMITTED' };
const WIRE_TO_KIND: Record<string, SnapshotKind> = { VIEW: 'view', ACTIVE: 'active', COMMITTED: 'committed' };

const NS_PER_S = 1_000_000_000n;

/** google.protobuf.Timestamp ↔ ns since the epoch, exactly (containerd's times are ns). */
function toTimestamp(ns: EpochNanos): WireTimestamp {
  const seconds = ns / NS_PER_S - (ns % NS_PER_S < 0n ? 1n : 0n);
  return { seconds: Number(seconds), nanos: Number(ns - seconds * NS_PER_S) };
}

function fromTimestamp(t: WireTimestamp | null | undefined): EpochNanos {
  if (!t) return 0n;
  return BigInt(t.seconds) * NS_PER_S + BigInt(t.nanos);
}

export function infoToWire(i: Info): WireInfo {
  return {
    name: i.name,
    parent: i.parent,
    kind: KIND_TO_WIRE[i.kind],
    created_at: toTimestamp(i.created),
    updated_at: toTimestamp(i.updated),
    labels: { ...i.labels },
  };
}

/** Unknown kinds decode as 'active' never: they are reported as a protocol error by the caller. */
export function infoFromWire(w: WireInfo): Info {
  const kind = WIRE_TO_KIND[w.kind];
  if (!kind) throw new TypeError(`snapshot ${JSON.stringify(w.name)} has unknown kind ${JSON.stringify(w.kind)}`);
  return {
    name: w.name,
    parent: w.parent,
    kind,
    created: fromTimestamp(w.created_at),
    updated: fromTimestamp(w.updated_at),
    labels: { ...(w.labels ?? {}) },
  };
}

export function mountToWire(m: Mount): WireMount {
  return { type: m.type, source: m.source, target: m.target ?? '', options: [...m.options] };
}

export function mountFromWire(m: WireMount): Mount {
  const out: Mount = { type: m.type, source: m.source, options: [...(m.options ?? [])] };
  if (m.target) out.target = m.target;
  return out;
}
