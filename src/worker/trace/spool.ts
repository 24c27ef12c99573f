/**
 * Recorded startup traces on disk until the proxy took them:
 *   <dir>/<startedAt>-<random>.json   one TraceUpload body holding one trace (types.ts)
 * and the upload of what is pending: traces of the same image/group/worker are batched into one
 * `POST /v1/traces` (≤ MAX_TRACES_PER_UPLOAD each); a file is deleted only after its batch got 200.
 *
 * Not here: recording (recorder.ts), retry policy (reporter.ts), HTTP (the `post` function given).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StarlightError, kindOf } from '../../errors.js';
import { MAX_TRACES_PER_UPLOAD, TRACE_FORMAT_VERSION, type TraceUpload } from './types.js';

/** File names the spool owns (anything else in the dir is left alone). */
const FILE_RE = /^\d+-[0-9a-f]{8}\.json$/;

export interface PendingTrace {
  file: string;
  body: TraceUpload;
}

/** Outcome of one upload round. */
export interface ReportResult {
  /** Traces the proxy accepted (their files are deleted). */
  uploaded: number;
  /** Traces still on disk after this round. */
  pending: number;
  /** Failed batches: the error code and whether retrying later can help. */
  failures: { ref: string; traces: number; code: string; message: string; retriable: boolean }[];
}

/** Posts one body; resolves on HTTP 200, rejects with the proxy's StarlightError otherwise. */
export type PostTraces = (body: TraceUpload) => Promise<unknown>;

/** Kinds of upload failures worth retrying (proxy down or failing, not a refused body). */
const RETRIABLE_KINDS = new Set(['unavailable', 'internal', 'resource-exhausted', 'canceled']);

/** Trace files kept at most (each is one startup of one image, a few KiB to a few hundred). */
export const MAX_PENDING_FILES = 256;

export class TraceSpool {
  constructor(readonly dir: string) {}

  async open(): Promise<this> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    return this;
  }

  /** Writes one body atomically; resolves with its file name. */
  async save(body: TraceUpload): Promise<string> {
    const startedAt = body.traces[0]?.startedAt ?? Date.now();
    const name = `${startedAt}-${randomBytes(4).toString('hex')}.json`;
    const tmp = join(this.dir, `.${name}.tmp`);
    await writeFile(tmp, JSON.stringify(body), { mode: 0o600 });
    await rename(tmp, join(this.dir, name));
    await this.prune();
    return name;
  }

  /**
   * Bounds the spool (issue 14: no unbounded growth while the proxy is unreachable or refuses): beyond
   * MAX_PENDING_FILES, the oldest traces are dropped (they order startups least like the current ones).
   * Resolves with how many were dropped.
   */
  async prune(max = MAX_PENDING_FILES): Promise<number> {
    const files = (await readdir(this.dir)).filter((f) => FILE_RE.test(f)).sort();
    const drop = files.slice(0, Math.max(0, files.length - max));
    for (const f of drop) await rm(join(this.dir, f), { force: true });
    return drop.length;
  }

  /** Pending traces, oldest first. Unreadable files are skipped (and reported by name). */
  async pending(): Promise<{ traces: PendingTrace[]; unreadable: string[] }> {
    const traces: PendingTrace[] = [];
    const unreadable: string[] = [];
    for (const file of (await readdir(this.dir)).filter((f) => FILE_RE.test(f)).sort()) {
      try {
        const body = JSON.parse(await readFile(join(this.dir, file), 'utf8')) as TraceUpload;
        if (body.version !== TRACE_FORMAT_VERSION || !Array.isArray(body.traces)) throw new Error('not a trace body');
        traces.push({ file, body });
      } catch {
        unreadable.push(file);
      }
    }
    return { traces, unreadable };
  }

  async remove(file: string): Promise<void> {
    if (!FILE_RE.test(file)) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `${file} is not a trace file name`);
    await rm(join(this.dir, file), { force: true });
  }

  /** Uploads everything pending, batched per image/group/worker; deletes what was accepted. */
  async upload(post: PostTraces): Promise<ReportResult> {
    const { traces } = await this.pending();
    const batches = new Map<string, PendingTrace[]>();
    for (const t of traces) {
      const { ref, manifestDigest, platform, group, worker } = t.body;
      const key = JSON.stringify([ref, manifestDigest, platform, group ?? null, worker ?? null]);
      let list = batches.get(key);
      if (!list) batches.set(key, (list = []));
      list.push(t);
    }
    const result: ReportResult = { uploaded: 0, pending: 0, failures: [] };
    for (const list of batches.values()) {
      for (let i = 0; i < list.length; i += MAX_TRACES_PER_UPLOAD) {
        const batch = list.slice(i, i + MAX_TRACES_PER_UPLOAD);
        const first = batch[0]!.body;
        const body: TraceUpload = { ...first, traces: batch.flatMap((t) => t.body.traces) };
        try {
          await post(body);
        } catch (err) {
          const e = err instanceof StarlightError ? err : undefined;
          result.failures.push({
            ref: first.ref,
            traces: body.traces.length,
            code: e?.code ?? 'SL_ERR_INTERNAL',
            message: err instanceof Error ? err.message : String(err),
            retriable: RETRIABLE_KINDS.has(kindOf(err)),
          });
          result.pending += body.traces.length;
          continue;
        }
        for (const t of batch) await this.remove(t.file);
        result.uploaded += body.traces.length;
      }
    }
    return result;
  }
}
