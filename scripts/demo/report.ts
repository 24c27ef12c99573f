/**
 * What the demo shows a person: step progress on a terminal (stderr; nothing when stderr is not a
 * terminal, so logs stay quiet) and the summary lines (stdout, always). The summary's line labels
 * ("pull:", "ready:", "http:", "at ready:", "complete:", "update v2:", "http v2:", "cleaned up:")
 * are stable: test/e2e/demo.test.ts reads them.
 *
 * Not here: measuring (scripts/demo.ts, scripts/demo/app.ts).
 */
import { performance } from 'node:perf_hooks';
import { formatBytes } from '../../src/cli/progress.js';

/** Result of one HTTP request to the app. */
export interface HttpFacts {
  url: string;
  status: number;
  bytes: number;
  /** The first line of the body, trimmed. */
  firstLine: string;
}

/** Stream progress of one image in the daemon (src/worker/images/service.ts ImageStatus subset). */
export interface StreamFacts {
  /** Encoded bytes the worker received for this image (header + content frames). */
  wireBytes: number;
  files: number;
  filesPresent: number;
  /** Decoded content bytes of the streamed files, and of those present. */
  bytes: number;
  bytesPresent: number;
}

export interface FirstRunFacts {
  ref: string;
  layers: number;
  /** Sum of the manifest's layer sizes: what a plain `ctr pull` would download. */
  compressedBytes: number;
  wan?: { rttMs: number; bandwidthBps: number };
  /** `starlight notify` duration (the proxy indexing the image once, before any pull), ms. */
  indexMs: number;
  /** `starlight pull` duration, ms (header in, image recorded in containerd). */
  pullMs: number;
  /** From the start of the pull to the container's ready line, ms. */
  readyMs: number;
  /** From `ctr run` to the ready line, ms. */
  runMs: number;
  readyLine: string;
  http: HttpFacts;
  atReady: StreamFacts;
  /** From the start of the pull to the end of the stream, ms. */
  completeMs: number;
  complete: StreamFacts;
}

export interface UpdateFacts {
  indexMs: number;
  pullMs: number;
  readyMs: number;
  http: HttpFacts;
  sent: StreamFacts;
  /** Compressed size of all v2 layers, and of those v1 does not have (a layer-based update's download). */
  compressedBytes: number;
  newLayers: number;
  newLayersBytes: number;
}

const secs = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
const pct = (part: number, whole: number): string => (whole > 0 ? `${Math.round((100 * part) / whole)}%` : '–');

function mbit(bps: number): string {
  return bps >= 1e9 ? `${bps / 1e9} Gbit/s` : `${bps / 1e6} Mbit/s`;
}

function httpLine(h: HttpFacts): string {
  return `GET ${h.url} → ${h.status}, ${h.bytes} bytes: ${h.firstLine}`;
}

/** The summary of the first run (v1), one string per line. */
export function firstRunLines(f: FirstRunFacts): string[] {
  const wan = f.wan ? `; WAN emulator between worker and proxy: ${f.wan.rttMs} ms RTT, ${f.wan.bandwidthBps > 0 ? mbit(f.wan.bandwidthBps) : 'unlimited bandwidth'}` : '';
  const r = f.atReady;
  const c = f.complete;
  return [
    `Starlight demo: ${f.ref} (${f.layers} layers, ${formatBytes(f.compressedBytes)} compressed${wan})`,
    `index:       ${secs(f.indexMs)}  (proxy side, once per image, before any pull: starlight notify, as a registry webhook would)`,
    `pull:        ${secs(f.pullMs)}  (starlight pull returned: header in, image recorded in containerd)`,
    `ready:       ${secs(f.readyMs)}  (${JSON.stringify(f.readyLine)}; ctr run took ${secs(f.runMs)} of it)`,
    `http:        ${httpLine(f.http)}`,
    `at ready:    ${formatBytes(r.wireBytes)} streamed (${pct(r.wireBytes, f.compressedBytes)} of the ${formatBytes(f.compressedBytes)} a full pull downloads); ` +
      `${r.filesPresent}/${r.files} files present (${formatBytes(r.bytesPresent)} of ${formatBytes(r.bytes)} of content)`,
    `complete:    ${secs(f.completeMs)}  (${formatBytes(c.wireBytes)} streamed in all; ${c.files} distinct files, ${formatBytes(c.bytes)} of content)`,
  ];
}

/** The summary of the v1 → v2 update. */
export function updateLines(u: UpdateFacts): string[] {
  return [
    `update v2:   index ${secs(u.indexMs)}, pull ${secs(u.pullMs)}, ready ${secs(u.readyMs)}; ${formatBytes(u.sent.wireBytes)} streamed (${u.sent.files} new files, ${formatBytes(u.sent.bytes)}) ` +
      `vs ${formatBytes(u.compressedBytes)} for all of v2, ${formatBytes(u.newLayersBytes)} for its ${u.newLayers} new layers`,
    `http v2:     ${httpLine(u.http)}`,
  ];
}

/** Step progress on a terminal: "… label" while it runs, "✓ label (1.23 s)" or "✗ label" after. */
export class Steps {
  constructor(private readonly out: NodeJS.WriteStream = process.stderr) {}

  get tty(): boolean {
    return this.out.isTTY === true;
  }

  /** A line of its own (terminal only). */
  note(text: string): void {
    if (this.tty) this.out.write(`${text}\n`);
  }

  async run<T>(label: string, fn: () => Promise<T>, detail?: (v: T) => string): Promise<T> {
    const t0 = performance.now();
    if (this.tty) this.out.write(`… ${label}`);
    try {
      const v = await fn();
      const extra = detail ? `: ${detail(v)}` : '';
      if (this.tty) this.out.write(`\r\x1b[K✓ ${label}${extra} (${secs(performance.now() - t0)})\n`);
      return v;
    } catch (err) {
      if (this.tty) this.out.write(`\r\x1b[K✗ ${label}\n`);
      throw err;
    }
  }
}
