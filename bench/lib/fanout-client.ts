/**
 * The client side of the proxy fan-out bench (bench/proxy.ts --fanout), run as its own process so its
 * CPU is measured apart from the server's: N concurrent "pulls", each a list of URLs fetched in
 * sequence (a delta stream: one URL; docker-registry: the image's layer blobs). A pull counts bytes
 * and, for a delta, walks the frame heads (no msgpack, no content decoding) to time the end of the
 * HEADER frame and to check that the stream ends with END.
 *
 * Input: one JSON argument {pulls: [{urls: string[], delta: boolean}]}; output: one JSON line on
 * stdout {results: PullResult[], wallMs, cpuMs} (cpuMs: user+system of this process).
 *
 * Not here: starting servers, the table (bench/proxy.ts).
 */
import { Agent, get } from 'node:http';
import { FRAME_HEAD_BYTES, FrameType, PREAMBLE_BYTES } from '../../src/protocol/constants.js';

export interface FanoutPull {
  urls: string[];
  /** The URL is a delta stream (walk its frames); else raw bytes (registry blobs). */
  delta: boolean;
}

export interface PullResult {
  /** ms from the start of the run to the first response byte of the first URL. */
  ttfbMs: number;
  /** ms to the end of the HEADER frame (delta) or to the first byte (blobs: no header). */
  headerMs: number;
  /** ms to the last byte of the last URL. */
  endMs: number;
  bytes: number;
  frames: number;
  error?: string;
}

/** Walks frame heads across chunk boundaries: counts frames, notes the end of the HEADER frame and END. */
class FrameWalker {
  private skip = PREAMBLE_BYTES;
  private head = Buffer.alloc(FRAME_HEAD_BYTES);
  private headFill = 0;
  frames = 0;
  headerEnded = false;
  ended = false;
  private inHeader = false;

  /** Feeds a chunk; returns true if the HEADER frame ended inside it. */
  push(b: Buffer): boolean {
    let pos = 0;
    let headerEndedNow = false;
    while (pos < b.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, b.length - pos);
        this.skip -= n;
        pos += n;
        if (this.skip === 0 && this.inHeader) {
          this.inHeader = false;
          this.headerEnded = true;
          headerEndedNow = true;
        }
        continue;
      }
      const n = Math.min(FRAME_HEAD_BYTES - this.headFill, b.length - pos);
      b.copy(this.head, this.headFill, pos, pos + n);
      this.headFill += n;
      pos += n;
      if (this.headFill < FRAME_HEAD_BYTES) break;
      this.headFill = 0;
      this.frames++;
      const type = this.head[0]!;
      this.skip = this.head.readUInt32BE(1);
      if (type === FrameType.HEADER) this.inHeader = true;
      if (type === FrameType.END || type === FrameType.ERROR) this.ended = type === FrameType.END;
      if (this.skip === 0 && this.inHeader) {
        this.inHeader = false;
        this.headerEnded = true;
        headerEndedNow = true;
      }
    }
    return headerEndedNow;
  }
}

async function runPull(agent: Agent, pull: FanoutPull, t0: number): Promise<PullResult> {
  const r: PullResult = { ttfbMs: -1, headerMs: -1, endMs: -1, bytes: 0, frames: 0 };
  try {
    for (const url of pull.urls) {
      const walker = pull.delta ? new FrameWalker() : undefined;
      await new Promise<void>((resolve, reject) => {
        get(url, { agent }, (res) => {
          if (res.statusCode !== 200) {
            res.resume();
            reject(new Error(`${url}: HTTP ${res.statusCode}`));
            return;
          }
          res.on('data', (b: Buffer) => {
            const now = performance.now() - t0;
            if (r.ttfbMs < 0) {
              r.ttfbMs = now;
              if (walker === undefined) r.headerMs = now;
            }
            r.bytes += b.length;
            if (walker?.push(b) === true) r.headerMs = now;
          });
          res.on('end', resolve);
          res.on('error', reject);
        }).on('error', reject);
      });
      if (walker !== undefined) {
        r.frames += walker.frames;
        if (!walker.ended) throw new Error(`${url}: stream ended without END (${walker.frames} frames, ${r.bytes} bytes)`);
      }
    }
    r.endMs = performance.now() - t0;
  } catch (err) {
    r.error = err instanceof Error ? err.message : String(err);
  }
  return r;
}

async function main(): Promise<void> {
  const { pulls } = JSON.parse(process.argv[2] ?? '{"pulls":[]}') as { pulls: FanoutPull[] };
  const agent = new Agent({ keepAlive: true, maxSockets: Infinity });
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const results = await Promise.all(pulls.map((p) => runPull(agent, p, t0)));
  const wallMs = performance.now() - t0;
  const c = process.cpuUsage(c0);
  agent.destroy();
  process.stdout.write(JSON.stringify({ results, wallMs, cpuMs: (c.user + c.system) / 1000 }) + '\n');
}

await main();
