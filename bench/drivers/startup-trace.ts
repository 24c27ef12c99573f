/**
 * The size of the files an app read at startup, for bench/traces.ts: the traces a training worker
 * recorded (its spool, <root>/traces, read before `starlight report` uploads and deletes them), cut at
 * the training run's ready time, sized by the proxy's learned order (`GET /v1/traces?ref=`), with each
 * content's encoded size as the proxy sends it (`content-length` of `GET /v1/content/<digest>`).
 * All proxy requests go direct (cloud side, not over the emulated link).
 *
 * Not here: the selection rule and the table (report/startup-files.ts), the training run (starlight.ts).
 */
import { join } from 'node:path';
import { HarnessError } from '../../fixtures/harness-error.js';
import type { LearnedOrder } from '../../src/protocol/traces.js';
import { TraceSpool } from '../../src/worker/trace/spool.js';
import type { TraceUpload } from '../../src/worker/trace/types.js';
import { rawBytes, selectStartupFiles } from '../report/startup-files.js';
import type { StartupFilesSize } from '../report/types.js';

/** The daemon's trace spool under its root (src/worker/daemon.ts). */
const SPOOL_DIR = 'traces';
/** Parallel `GET /v1/content` requests when sizing encoded contents. */
const SIZE_CONCURRENCY = 8;
/** How long the recorder may take to save a finished trace, ms. */
const SPOOL_WAIT_MS = 5_000;

/** The trace bodies pending in a daemon's spool; waits up to SPOOL_WAIT_MS for at least `want`. */
export async function readSpool(root: string, want: number): Promise<TraceUpload[]> {
  const spool = new TraceSpool(join(root, SPOOL_DIR));
  const deadline = Date.now() + SPOOL_WAIT_MS;
  for (;;) {
    const { traces } = await spool.pending().catch(() => ({ traces: [] }));
    if (traces.length >= want || Date.now() > deadline) return traces.map((t) => t.body);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function learnedOrder(proxy: string, ref: string): Promise<LearnedOrder> {
  const res = await fetch(`http://${proxy}/v1/traces?${new URLSearchParams({ ref }).toString()}`);
  const text = await res.text();
  if (res.status !== 200) throw new HarnessError('SL_ERR_BENCH_STEP', `proxy ${proxy}: GET /v1/traces?ref=${ref} answered ${res.status}: ${text.slice(0, 200)}`, { details: { ref } });
  return JSON.parse(text) as LearnedOrder;
}

async function encodedSize(proxy: string, digest: string): Promise<number> {
  const res = await fetch(`http://${proxy}/v1/content/${digest}`);
  const n = Number(res.headers.get('content-length'));
  await res.body?.cancel();
  if (res.status !== 200 || !Number.isFinite(n)) throw new HarnessError('SL_ERR_BENCH_STEP', `proxy ${proxy}: GET /v1/content/${digest} answered ${res.status}`, { details: { digest } });
  return n;
}

/**
 * Sizes the startup files of `ref` from the recorded `traces` (entries with ms ≤ `readyMs`; the whole
 * learned order when there are none). Call after the traces were uploaded (the learned order exists).
 */
export async function measureStartupFiles(proxy: string, ref: string, traces: TraceUpload[], readyMs: number | undefined): Promise<StartupFilesSize> {
  const order = await learnedOrder(proxy, ref);
  const sel = selectStartupFiles(traces.flatMap((b) => b.traces), readyMs, order.entries);
  const digests = [...sel.contents.keys()];
  let encoded = 0;
  for (let i = 0; i < digests.length; i += SIZE_CONCURRENCY) {
    const sizes = await Promise.all(digests.slice(i, i + SIZE_CONCURRENCY).map((d) => encodedSize(proxy, d)));
    for (const s of sizes) encoded += s;
  }
  const out: StartupFilesSize = { files: digests.length, rawBytes: rawBytes(sel), encodedBytes: encoded, cut: sel.cut };
  if (readyMs !== undefined) out.readyMs = readyMs;
  return out;
}
