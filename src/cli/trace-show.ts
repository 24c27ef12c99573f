/**
 * `starlight trace show REF|sha256:MANIFEST --proxy URL [--group G] [--platform P] [--token-file F] [--top N] [--json]`:
 * prints the startup order a proxy uses for an image (GET /v1/traces) as a table of rank, size, signal
 * (why the file is there) and path (or the JSON answer with --json). Called by `starlight trace` (trace.ts).
 *
 * Not here: recording or uploading traces (the worker, `starlight trace on|off`, `starlight report`).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { StarlightError } from '../errors.js';
import { isDigest } from '../oci/digest.js';
import { TRACES_ROUTE, type LearnedOrder } from '../protocol/traces.js';
import { parseTokenFile } from '../proxy/config.js';
import { ProxyClient } from '../worker/stream/proxy-client.js';

/** ms to wait for the proxy's answer (it may index the image first). */
const SHOW_TIMEOUT_MS = 120_000;

const USAGE = `usage: starlight trace show REF|sha256:MANIFEST --proxy URL [--group NAME] [--platform os/arch]
                            [--token-file FILE] [--top N] [--json]

Prints the startup order the proxy uses for an image: rank (1 = sent first), size, the signal that put
the file there (trace: this image's traces; prior-trace: other images' traces; entrypoint, shebang,
interp, ld-cache, needed-lib, process-start, locale, elf-path, script-command, argument: predicted
from the image; elf-dir, argument-dir, home, neighbour: directory guesses), path, and the file that
led to it (elf-path, elf-dir: the binary or library naming that path).
  --proxy URL        the proxy (default: $STARLIGHT_PROXY_URL)
  --group NAME       the order of a workload group (falls back to the image's order)
  --platform P       platform of REF (default: the proxy's)
  --token-file FILE  bearer token for the proxy (first line)
  --top N            print only the first N ranks
  --json             print the proxy's JSON answer`;

function usageError(why: string): StarlightError {
  return new StarlightError('SL_ERR_INVALID_ARGUMENT', `${why}\n${USAGE}`);
}

/** Renders the order as a fixed-width table (rank, size in bytes, signal, path, what led there), first `top` rows. */
export function formatLearnedOrder(o: LearnedOrder, top = Infinity): string {
  const prior = o.priorTraces !== undefined ? ` + ${o.priorTraces} trace(s) of other images` : '';
  const head = `image ${o.manifestDigest}${o.group !== undefined ? ` group ${o.group}` : ''}: ${o.entries.length} file(s) from ${o.traces} trace(s)${prior} (source: ${o.source})`;
  if (o.entries.length === 0) return `${head}\nno learned or predicted order: deltas of this image follow the heuristic order`;
  const shown = o.entries.slice(0, top);
  const rw = Math.max(4, ...shown.map((e) => String(e.rank).length));
  const sw = Math.max(4, ...shown.map((e) => String(e.size).length));
  const gw = Math.max(6, ...shown.map((e) => (e.signal ?? 'trace').length));
  const rows = shown.map(
    (e) => `${String(e.rank).padStart(rw)}  ${String(e.size).padStart(sw)}  ${(e.signal ?? 'trace').padEnd(gw)}  ${e.path}${e.via !== undefined ? `  (via ${e.via})` : ''}`,
  );
  const more = o.entries.length > shown.length ? [`… ${o.entries.length - shown.length} more (--top N)`] : [];
  return [head, `${'RANK'.padStart(rw)}  ${'SIZE'.padStart(sw)}  ${'SIGNAL'.padEnd(gw)}  PATH`, ...rows, ...more].join('\n');
}

/** `starlight trace show …`; returns the exit code (0). Errors are thrown as StarlightErrors. */
export async function runTraceShowCommand(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        proxy: { type: 'string' },
        group: { type: 'string' },
        platform: { type: 'string' },
        'token-file': { type: 'string' },
        json: { type: 'boolean' },
        top: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (cause) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `${(cause as Error).message}\n${USAGE}`, { cause });
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (positionals.length !== 1) throw usageError('expected one image reference or manifest digest');
  const proxy = values.proxy ?? process.env.STARLIGHT_PROXY_URL;
  if (proxy === undefined || proxy === '') throw usageError('--proxy URL is required');
  const target = positionals[0]!;
  const top = values.top === undefined ? Infinity : Number(values.top);
  if (!Number.isSafeInteger(top) && top !== Infinity) throw usageError('--top needs a whole number of rows');
  if (top < 1) throw usageError('--top needs a whole number of rows ≥ 1');
  const tf = values['token-file'];
  const client = new ProxyClient({ url: proxy, token: tf !== undefined ? parseTokenFile(readFileSync(tf, 'utf8'), tf)[0] : undefined, headersTimeoutMs: SHOW_TIMEOUT_MS });
  let order: LearnedOrder;
  try {
    order = (await client.requestJson('GET', TRACES_ROUTE, {
      [isDigest(target) ? 'manifest' : 'ref']: target,
      group: values.group,
      platform: values.platform,
    })) as LearnedOrder;
  } finally {
    client.close();
  }
  process.stdout.write((values.json ? JSON.stringify(order, null, 2) : formatLearnedOrder(order, top)) + '\n');
  return 0;
}

/** Same as runTraceShowCommand (the name the lead asked for). */
export const runTraceShow = runTraceShowCommand;
