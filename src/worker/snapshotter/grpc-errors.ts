/**
 * The gRPC boundary's one error mapping: error kind ↔ gRPC status code, as containerd's errgrpc
 * (errdefs/grpc.go ToGRPC/FromGRPC). containerd's proxy snapshotter turns the status back into an
 * errdefs class, and the protocol depends on it: Prepare's ALREADY_EXISTS means "layer already
 * there" (core/metadata/snapshot.go:385–400).
 *
 * The server also sends the Starlight code in trailing metadata (ERROR_CODE_METADATA) so our own
 * client can rebuild the exact error; containerd ignores it.
 *
 * Not here: anything else about gRPC (grpc-service.ts, grpc-client.ts).
 */
import * as grpc from '@grpc/grpc-js';
import { StarlightError, isCode, kindOf, type Code, type Kind } from '../../errors.js';

/** Trailer key carrying the StarlightError code; written by the service, read by the client. */
const ERROR_CODE_METADATA = 'starlight-error-code';

const KIND_TO_STATUS: Record<Kind, grpc.status> = {
  'not-found': grpc.status.NOT_FOUND,
  'already-exists': grpc.status.ALREADY_EXISTS,
  'invalid-argument': grpc.status.INVALID_ARGUMENT,
  'failed-precondition': grpc.status.FAILED_PRECONDITION,
  'unavailable': grpc.status.UNAVAILABLE,
  'data-loss': grpc.status.DATA_LOSS,
  'resource-exhausted': grpc.status.RESOURCE_EXHAUSTED,
  'canceled': grpc.status.CANCELLED,
  'unimplemented': grpc.status.UNIMPLEMENTED,
  'unauthenticated': grpc.status.UNAUTHENTICATED,
  'permission-denied': grpc.status.PERMISSION_DENIED,
  'internal': grpc.status.INTERNAL,
};

/** The code a client gives to an error of this status when the server sent no Starlight code. */
const STATUS_TO_CODE: Partial<Record<grpc.status, Code>> = {
  [grpc.status.NOT_FOUND]: 'SL_ERR_SNAPSHOT_NOT_FOUND',
  [grpc.status.ALREADY_EXISTS]: 'SL_ERR_SNAPSHOT_EXISTS',
  [grpc.status.INVALID_ARGUMENT]: 'SL_ERR_SNAPSHOT_INVALID',
  [grpc.status.FAILED_PRECONDITION]: 'SL_ERR_SNAPSHOT_PRECONDITION',
  [grpc.status.UNAVAILABLE]: 'SL_ERR_SNAPSHOT_UNAVAILABLE',
  [grpc.status.UNIMPLEMENTED]: 'SL_ERR_SNAPSHOT_UNIMPLEMENTED',
  [grpc.status.CANCELLED]: 'SL_ERR_CANCELED',
};

/** Any error → a ServiceError for grpc-js callbacks / call.destroy(). */
export function toGrpcError(err: unknown): grpc.ServiceError {
  const kind = kindOf(err);
  const metadata = new grpc.Metadata();
  if (err instanceof StarlightError) metadata.set(ERROR_CODE_METADATA, err.code);
  const message = err instanceof Error ? err.message : String(err);
  const e = new Error(message) as grpc.ServiceError;
  e.code = KIND_TO_STATUS[kind];
  e.details = message;
  e.metadata = metadata;
  return e;
}

function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as Partial<grpc.ServiceError>).code === 'number';
}

/** A gRPC client error → StarlightError with the server's code, or one derived from the status. */
export function fromGrpcError(err: unknown, context: string): StarlightError {
  if (!isServiceError(err)) {
    return new StarlightError('SL_ERR_INTERNAL', `${context}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const sent = err.metadata?.get(ERROR_CODE_METADATA)[0];
  const code: Code = isCode(sent) ? sent : (STATUS_TO_CODE[err.code as grpc.status] ?? 'SL_ERR_INTERNAL');
  return new StarlightError(code, `${context}: ${err.details || err.message}`, { cause: err, details: { grpcStatus: err.code } });
}
