/**
 * Startup traces on the wire (docs/protocol.md "Traces"): the body of `POST /v1/traces` and the answer
 * of `GET /v1/traces`, their limits, and the strict validation of an upload body (pure: JSON value in,
 * typed value or SL_ERR_INVALID_ARGUMENT out, `details.field` naming the offending field).
 *
 * Not here: reading the HTTP body (the proxy's trace handlers), storing or merging traces
 * (src/proxy/priority*.ts), recording them (src/worker/trace/).
 */
import { StarlightError } from '../errors.js';
import { isDigest } from '../oci/digest.js';

/** Version of the upload body; a proxy answers 400 to other versions. */
export const TRACE_UPLOAD_VERSION = 1;
/** Route of uploads (POST) and of the learned order (GET). */
export const TRACES_ROUTE = '/v1/traces';
/** Largest upload body, bytes (16 MiB); larger → 413 SL_ERR_BODY_TOO_LARGE. */
export const MAX_TRACE_BODY_BYTES = 16 * 1024 * 1024;
/** Traces per upload body (1..100). */
export const MAX_TRACES_PER_BODY = 100;
/** Entries per trace. */
export const MAX_TRACE_ENTRIES = 65_536;
/** Longest entry path, bytes of UTF-8 (Linux PATH_MAX). */
export const MAX_TRACE_PATH_BYTES = 4096;
/** Longest `ref` / `worker` string, characters. */
export const MAX_TRACE_REF_CHARS = 1024;
export const MAX_TRACE_WORKER_CHARS = 256;
/** A group label: 1-128 of [A-Za-z0-9._-], starting with a letter or digit (as `starlight trace on --group`). */
export const TRACE_GROUP_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

const PLATFORM_RE = /^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/;

export interface TraceUploadEntry {
  /** Path in the merged image tree (relative, normalized, no leading '/'). */
  path: string;
  /** diffID of the layer supplying the file. */
  layer?: string;
  /** Content digest. */
  digest?: string;
  /** ms since the trace's startedAt; non-decreasing along a trace. */
  ms: number;
}

export interface TraceUploadTrace {
  startedAt: number;
  windowMs: number;
  entries: TraceUploadEntry[];
}

export interface TraceUploadBody {
  version: typeof TRACE_UPLOAD_VERSION;
  ref: string;
  manifestDigest: string;
  platform: string;
  group?: string;
  worker?: string;
  traces: TraceUploadTrace[];
}

/**
 * Why a file has its rank (docs/protocol.md "Planning"): `trace` = startup traces of this image (or of
 * its repository), `prior-trace` = traces of other images holding the same content; the others come
 * from the image itself (src/proxy/startup/predict.ts StartupSignal).
 */
export type OrderSignal =
  | 'trace'
  | 'prior-trace'
  | 'entrypoint'
  | 'shebang'
  | 'interp'
  | 'ld-cache'
  | 'needed-lib'
  | 'process-start'
  | 'locale'
  | 'script-command'
  | 'argument'
  | 'argument-dir'
  | 'home'
  | 'neighbour'
  | 'elf-path'
  | 'elf-dir';

/** One row of `GET /v1/traces`: a file of the image in learned order. */
export interface LearnedEntry {
  path: string;
  /** 1 = sent first. */
  rank: number;
  /** Raw bytes. */
  size: number;
  digest: string;
  /** What put the file there (absent from proxies before issue 11: 'trace'). */
  signal?: OrderSignal;
  /** The file that led to it (the script naming it, the binary needing a library), if any. */
  via?: string;
}

/**
 * Which traces the learned order came from (docs/protocol.md "Merging traces"); 'predicted' = no
 * trace of this image or its repository: the order is predicted from the image and other images' traces.
 */
export type OrderSource = 'image-group' | 'image' | 'related-group' | 'related' | 'predicted' | 'none';

/** Answer of `GET /v1/traces`. */
export interface LearnedOrder {
  manifestDigest: string;
  group?: string;
  source: OrderSource;
  /** Traces merged into the order. */
  traces: number;
  /** Traces of other images merged into its prior-trace part (absent: none). */
  priorTraces?: number;
  entries: LearnedEntry[];
}

function invalid(field: string, why: string): StarlightError {
  return new StarlightError('SL_ERR_INVALID_ARGUMENT', `trace upload: ${field} ${why}`, { details: { field } });
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isUint = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

function str(o: Obj, key: string, field: string, max: number, optional: boolean): string | undefined {
  const v = o[key];
  if (v === undefined && optional) return undefined;
  if (typeof v !== 'string' || v.length === 0 || v.length > max) throw invalid(field, `must be a string of 1..${max} characters`);
  return v;
}

function digest(o: Obj, key: string, field: string, optional: boolean): string | undefined {
  const v = o[key];
  if (v === undefined && optional) return undefined;
  if (!isDigest(v)) throw invalid(field, 'must be sha256:<64 lowercase hex>');
  return v;
}

/** A TOC path: relative, no '', '.', '..' components, no NUL, ≤ MAX_TRACE_PATH_BYTES. */
export function isTracePath(p: string): boolean {
  if (p === '' || p.startsWith('/') || p.includes('\0') || Buffer.byteLength(p) > MAX_TRACE_PATH_BYTES) return false;
  return p.split('/').every((c) => c !== '' && c !== '.' && c !== '..');
}

function entry(v: unknown, field: string, prevMs: number): TraceUploadEntry {
  if (!isObj(v)) throw invalid(field, 'must be an object');
  const path = v.path;
  if (typeof path !== 'string' || !isTracePath(path)) throw invalid(`${field}.path`, 'must be a relative normalized path (no leading /, no . or .. components)');
  const ms = v.ms;
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) throw invalid(`${field}.ms`, 'must be a finite number ≥ 0');
  if (ms < prevMs) throw invalid(`${field}.ms`, 'must not decrease along entries (they are in first-access order)');
  const out: TraceUploadEntry = { path, ms };
  const layer = digest(v, 'layer', `${field}.layer`, true);
  if (layer !== undefined) out.layer = layer;
  const d = digest(v, 'digest', `${field}.digest`, true);
  if (d !== undefined) out.digest = d;
  return out;
}

function trace(v: unknown, field: string): TraceUploadTrace {
  if (!isObj(v)) throw invalid(field, 'must be an object');
  if (!isUint(v.startedAt)) throw invalid(`${field}.startedAt`, 'must be a non-negative integer (ms since the epoch)');
  if (!isUint(v.windowMs)) throw invalid(`${field}.windowMs`, 'must be a non-negative integer (ms)');
  const raw = v.entries;
  if (!Array.isArray(raw) || raw.length > MAX_TRACE_ENTRIES) throw invalid(`${field}.entries`, `must be an array of at most ${MAX_TRACE_ENTRIES} entries`);
  const seen = new Set<string>();
  const entries: TraceUploadEntry[] = [];
  let prev = 0;
  raw.forEach((e, i) => {
    const x = entry(e, `${field}.entries[${i}]`, prev);
    if (seen.has(x.path)) throw invalid(`${field}.entries[${i}].path`, 'is listed twice (each path once, at its first access)');
    seen.add(x.path);
    prev = x.ms;
    entries.push(x);
  });
  return { startedAt: v.startedAt, windowMs: v.windowMs, entries };
}

/**
 * Validates a parsed upload body strictly (types, sizes, path form, per-trace uniqueness and
 * non-decreasing `ms`). Unknown keys are ignored (additive fields stay compatible within version 1).
 * Returns a copy holding only the known fields.
 */
export function validateTraceUpload(body: unknown): TraceUploadBody {
  if (!isObj(body)) throw invalid('body', 'must be a JSON object');
  if (body.version !== TRACE_UPLOAD_VERSION) throw invalid('version', `must be ${TRACE_UPLOAD_VERSION} (this proxy knows no other trace format)`);
  const ref = str(body, 'ref', 'ref', MAX_TRACE_REF_CHARS, false)!;
  const manifestDigest = digest(body, 'manifestDigest', 'manifestDigest', false)!;
  const platform = body.platform;
  if (typeof platform !== 'string' || !PLATFORM_RE.test(platform)) throw invalid('platform', 'must be os/arch[/variant]');
  const group = body.group;
  if (group !== undefined && (typeof group !== 'string' || !TRACE_GROUP_RE.test(group))) {
    throw invalid('group', 'must be 1-128 of [A-Za-z0-9._-], starting with a letter or digit');
  }
  const worker = str(body, 'worker', 'worker', MAX_TRACE_WORKER_CHARS, true);
  const raw = body.traces;
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > MAX_TRACES_PER_BODY) {
    throw invalid('traces', `must be an array of 1..${MAX_TRACES_PER_BODY} traces`);
  }
  const out: TraceUploadBody = { version: TRACE_UPLOAD_VERSION, ref, manifestDigest, platform, traces: raw.map((t, i) => trace(t, `traces[${i}]`)) };
  if (group !== undefined) out.group = group;
  if (worker !== undefined) out.worker = worker;
  return out;
}
