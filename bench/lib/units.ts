/**
 * Parsing of the bench's command-line quantities: bandwidths ("100mbit", "20Mbit/s", "1gbit", plain
 * bits/s), sizes ("64KiB", "5MB") and endpoints ("127.0.0.1:5000", "[::1]:80").
 *
 * Every parser throws StarlightError SL_ERR_INVALID_ARGUMENT naming the option it was given, so a
 * CLI can print it as is. Not here: argv handling (each CLI owns its few flags).
 */
import { StarlightError } from '../../src/errors.js';

const BANDWIDTH_UNITS: Record<string, number> = {
  '': 1,
  bit: 1,
  bps: 1,
  kbit: 1e3,
  kbps: 1e3,
  mbit: 1e6,
  mbps: 1e6,
  gbit: 1e9,
  gbps: 1e9,
};

/** Bits per second from "100mbit", "20Mbit/s", "1.5gbit", "500kbit" or a plain number of bits/s. */
export function parseBandwidth(text: string, option = 'bandwidth'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)(?:\/s)?\s*$/i.exec(text);
  const unit = m ? BANDWIDTH_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `--${option} ${JSON.stringify(text)} is not a bandwidth; use e.g. 100mbit, 20Mbit/s, 1gbit or bits/s`, {
      details: { option, value: text },
    });
  }
  return Number(m[1]) * unit;
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
};

/** Bytes from "64KiB", "5MB", "1.5GiB" or a plain number of bytes. */
export function parseSize(text: string, option = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `--${option} ${JSON.stringify(text)} is not a size; use e.g. 64KiB, 5MB or bytes`, {
      details: { option, value: text },
    });
  }
  return Math.round(Number(m[1]) * unit);
}

export interface HostPort {
  host: string;
  port: number;
}

/** {host, port} from "host:port" or "[v6]:port"; port 0 is allowed (any free port). */
export function parseHostPort(text: string, option = 'address'): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `--${option} ${JSON.stringify(text)} is not host:port (e.g. 127.0.0.1:5000)`, {
      details: { option, value: text },
    });
  }
  return { host: (m[1] ?? m[2])!, port };
}

/** "host:port", bracketing IPv6 literals. */
export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
