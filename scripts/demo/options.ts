/**
 * The demo's command line (`bash scripts/demo.sh [--keep] [--rtt MS] [--bandwidth RATE]`): parsing
 * and validation into one resolved object. Pure: no I/O.
 *
 * Not here: running anything (scripts/demo.ts), `--skip-install` (consumed by scripts/demo.sh).
 */
import { parseArgs } from 'node:util';
import { parseBandwidth } from '../../bench/lib/units.js';
import { StarlightError } from '../../src/errors.js';

export const DEMO_USAGE = `usage: bash scripts/demo.sh [--skip-install] [--keep] [--rtt MS] [--bandwidth RATE]

Starts a local registry, the Starlight proxy, the snapshotter daemon and a private containerd
(all on 127.0.0.1, state in a temp dir), pushes a Debian-based python3 web app image, pulls and runs
it through Starlight, makes one HTTP request to it, updates it to v2, prints a summary, and removes
everything again (also on Ctrl-C or failure). The host's containerd is not touched.

  --skip-install    do not run scripts/install-deps.sh (apt, npm ci, build) first
  --keep            leave everything running after the summary until Ctrl-C
  --rtt MS          put the WAN emulator between the worker and the proxy: round-trip time, ms
  --bandwidth RATE  ... and its capacity per direction, e.g. 100mbit, 20mbps, 1gbit (default: unlimited)`;

export interface DemoOptions {
  /** Keep the environment (and the v2 container) running after the summary until SIGINT/SIGTERM. Default false. */
  keep: boolean;
  /**
   * WAN emulator between worker and proxy; undefined = direct loopback. Set when --rtt or
   * --bandwidth is given.
   */
  wan?: {
    /** Round-trip time added, ms. Default 0. */
    rttMs: number;
    /** Capacity per direction, bits/s; 0 = unlimited. Default 0. */
    bandwidthBps: number;
  };
  help: boolean;
}

/** Longest RTT accepted, ms (beyond this the demo's own timeouts no longer make sense). */
const MAX_RTT_MS = 10_000;

function invalid(message: string, cause?: unknown): StarlightError {
  return new StarlightError('SL_ERR_INVALID_ARGUMENT', `${message}\n\n${DEMO_USAGE}`, { cause });
}

/** Parses the demo's arguments; throws SL_ERR_INVALID_ARGUMENT on anything it does not understand. */
export function parseDemoArgs(argv: string[]): DemoOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        keep: { type: 'boolean' },
        rtt: { type: 'string' },
        bandwidth: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (cause) {
    throw invalid((cause as Error).message, cause);
  }
  const opts: DemoOptions = { keep: values.keep ?? false, help: values.help ?? false };
  if (values.rtt !== undefined || values.bandwidth !== undefined) {
    let rttMs = 0;
    if (values.rtt !== undefined) {
      rttMs = Number(values.rtt);
      if (values.rtt.trim() === '' || !Number.isFinite(rttMs) || rttMs < 0 || rttMs > MAX_RTT_MS) {
        throw invalid(`--rtt must be a number of milliseconds between 0 and ${MAX_RTT_MS}, got ${JSON.stringify(values.rtt)}`);
      }
    }
    let bandwidthBps = 0;
    if (values.bandwidth !== undefined) {
      try {
        bandwidthBps = parseBandwidth(values.bandwidth, 'bandwidth');
      } catch (cause) {
        throw invalid(`--bandwidth ${JSON.stringify(values.bandwidth)} is not a rate like 100mbit or 20mbps`, cause);
      }
      if (!(bandwidthBps > 0)) throw invalid(`--bandwidth must be positive, got ${JSON.stringify(values.bandwidth)}`);
    }
    opts.wan = { rttMs, bandwidthBps };
  }
  return opts;
}
