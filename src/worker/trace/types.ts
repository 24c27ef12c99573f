/**
 * The startup-trace wire format (docs/protocol.md "Traces"): the JSON body of the proxy's
 * `POST /v1/traces`, which is also what the worker keeps on disk until an upload succeeds.
 *
 * Not here: recording (recorder.ts), disk and upload (spool.ts), the proxy's storage and merge.
 */

/** Version of the body; bumped on an incompatible change. */
export const TRACE_FORMAT_VERSION = 1;
/** The proxy route traces are posted to. */
export const TRACES_PATH = '/v1/traces';
/** At most this many traces in one body (docs/protocol.md). */
export const MAX_TRACES_PER_UPLOAD = 100;
/** At most this many entries in one trace (docs/protocol.md); later first accesses are dropped. */
export const MAX_ENTRIES_PER_TRACE = 65_536;

export interface TraceEntry {
  /** Path in the merged image tree (TOC form: relative, no leading '/'). */
  path: string;
  /** diffID of the layer supplying the file in the merged tree. */
  layer?: string;
  /** Content digest (regular files and hardlinks). */
  digest?: string;
  /** ms since the trace's startedAt (container start), ≥ 0; non-decreasing along entries. */
  ms: number;
}

export interface Trace {
  /** ms since the epoch of the container start. */
  startedAt: number;
  /** How long the worker recorded after the start, ms; 0 = until `trace off`. */
  windowMs: number;
  /** Files in order of first access, each path once. */
  entries: TraceEntry[];
}

export interface TraceUpload {
  version: typeof TRACE_FORMAT_VERSION;
  ref: string;
  manifestDigest: string;
  platform: string;
  group?: string;
  worker?: string;
  traces: Trace[];
}
