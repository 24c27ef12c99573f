/**
 * `starlight pull [--daemon SOCK] [-n NAMESPACE] [--platform os/arch] REF`: asks the worker daemon to
 * pull REF lazily and record it in containerd; returns once `ctr run --snapshotter starlight REF`
 * can start it (content keeps streaming in the daemon). Prints the image name and manifest digest.
 *
 * Not here: the pull itself (src/worker/images/service.ts).
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { StarlightError } from '../errors.js';
import { DaemonClient } from '../worker/api/client.js';
import { DEFAULT_API_SOCKET } from '../worker/defaults.js';

const USAGE = `usage: starlight pull [--daemon SOCK] [-n NAMESPACE] [--platform os/arch] [--timings] REF

  --daemon SOCK      the daemon's API socket (default ${DEFAULT_API_SOCKET})
  -n, --namespace NS containerd namespace (default $CONTAINERD_NAMESPACE or 'default')
  --platform P       e.g. linux/amd64 (default: the proxy's)
  --timings          also print where the time went, as one JSON line on stderr (ms: the CLI's
                     start-up, the request, the daemon's phases)`;

export async function runPullCommand(argv: string[]): Promise<number> {
  let values, positionals;
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        daemon: { type: 'string' },
        namespace: { type: 'string', short: 'n' },
        platform: { type: 'string' },
        timings: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (cause) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `${(cause as Error).message}\n${USAGE}`, { cause });
  }
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (positionals.length !== 1) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `expected exactly one REF\n${USAGE}`);
  const client = new DaemonClient(values.daemon ?? DEFAULT_API_SOCKET);
  // performance.now() counts from the process's start: node start-up + module loading.
  const cliStartMs = performance.now();
  const started = Date.now();
  const r = await client.pull({
    ref: positionals[0]!,
    namespace: values.namespace ?? process.env.CONTAINERD_NAMESPACE ?? 'default',
    ...(values.platform ? { platform: values.platform } : {}),
  });
  if (values.timings) {
    const requestMs = performance.now() - cliStartMs;
    process.stderr.write(JSON.stringify({ timings: { 'cli.start': round(cliStartMs), 'cli.request': round(requestMs), ...r.phases } }) + '\n');
  }
  process.stdout.write(`${r.name} ${r.manifestDigest}: ready in ${Date.now() - started} ms (${r.items} files to stream, ${r.have} already here)\n`);
  return 0;
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
