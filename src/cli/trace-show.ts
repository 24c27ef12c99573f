/**
 * `starlight trace show REF|sha256:MANIFEST --proxy URL [--group G] [--platform P] [--token-file F] [--json]`:
 * prints the order a proxy learned from startup traces for an image (GET /v1/traces) as a table of
 * rank, size and path (or the JSON answer with --json). Called by `starlight trace` (trace.ts).
 *
 * Not here: recording or uploading traces (the worker, `starlight trace on|off`, `starlight report`).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { StarlightError } from '../errors.js';
import { isDigest } from '../oci/reference.js';
import { TRACES_ROUTE, type LearnedOrder } from '../protocol/traces.js';
import { parseTokenFile } from '../proxy/config.js';
import { ProxyClient } from '../worker/stream/proxy-client.js';

/** ms to wait for the proxy's answer (it may index the image first). */
const SHOW_TIMEOUT_MS = 120_000;

const USAGE = `usage: starlight trace show REF|sha256:MANIFEST --proxy URL [--group NAME] [--platform os/arch]
                            [--token-file FILE] [--json]

Prints the startup order the proxy learned from traces for an image: rank (1 = sent first), size, path.
  --proxy URL        the proxy (default: $STARLIGHT_PROXY_URL)
  --group NAME       the order of a workload group (falls back to the image's order)
  --platform P       platform of REF (default: the proxy's)
  --token-file FILE  bearer token for the proxy (first line)
  --json             print the proxy's JSON answer`;

function usageError(why: string): StarlightError {
  return new StarlightError('SL_ERR_INVALID_ARGUMENT', `${why}\n${USAGE}`);
}

/** Renders the learned order as a fixed-width table (rank, size in bytes, path). */
export function formatLearnedOrder(o: LearnedOrder): string {
  const head = `image ${o.manifestDigest}${o.group !== undefined ? ` group ${o.group}` : ''}: ${o.entries.length} file(s) from ${o.traces} trace(s) (source: ${o.source})`;
  if (o.entries.length === 0) return `${head}\nno learned order: deltas of this image follow the heuristic order`;
  const rw = Math.max(4, ...o.entries.map((e) => String(e.rank).length));
  const sw = Math.max(4, ...o.entries.map((e) => String(e.size).length));
  const rows = o.entries.map((e) => `${String(e.rank).padStart(rw)}  ${String(e.size).padStart(sw)}  ${e.path}`);
  return [head, `${'RANK'.padStart(rw)}  ${'SIZE'.padStart(sw)}  PATH`, ...rows].join('\n');
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
  process.stdout.write((values.json ? JSON.stringify(order, null, 2) : formatLearnedOrder(order)) + '\n');
  return 0;
}

/** Same as runTraceShowCommand (the name the lead asked for). */
export const runTraceShow = runTraceShowCommand;
