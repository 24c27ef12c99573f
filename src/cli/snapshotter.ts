/**
 * `starlight snapshotter --socket PATH --root DIR [--proxy URL] [--log-level L]`: runs the worker
 * daemon (containerd snapshotter) until SIGINT/SIGTERM, then closes it gracefully, leaving its lazy
 * views mounted for the next daemon (issue 13); `--shutdown-views` is the explicit unmount of them
 * all. Also the original command line `starlight-grpc run --server URL --socket PATH`.
 *
 * Not here: the wiring (src/worker/daemon.ts).
 */
import { parseArgs } from 'node:util';
import { StarlightError } from '../errors.js';
import { createLogger, type Level } from '../log.js';
import { shutdownViews, WorkerDaemon } from '../worker/daemon.js';
import { API_SOCKET_NAME, DEFAULT_ROOT, DEFAULT_SOCKET } from '../worker/defaults.js';
import { DEFAULT_CONTAINERD_ADDRESS } from '../worker/images/containerd-client.js';
import { untilSignal } from './signals.js';

const USAGE = `usage: starlight snapshotter [--socket PATH] [--root DIR] [--proxy URL] [--containerd-address SOCK]
                             [--api-socket PATH] [--read-deadline SECONDS] [--log-level error|warn|info|debug]
                             [--trace-window SECONDS] [--trace-upload auto|manual] [--trace-group NAME] [--worker-id ID]
                             [--metrics-address HOST:PORT] [--no-graduate] [--view-idle SECONDS]
       starlight snapshotter --shutdown-views [--root DIR]

  --socket PATH              unix socket for containerd's proxy plugin (default ${DEFAULT_SOCKET})
  --root DIR                 state directory (default ${DEFAULT_ROOT})
  --proxy URL[,URL…]         Starlight proxy for lazy pulls (optional; token from $STARLIGHT_PROXY_TOKEN); several replicas: fail over between them
  --containerd-address SOCK  containerd's socket, used by \`starlight pull\` (default ${DEFAULT_CONTAINERD_ADDRESS})
  --api-socket PATH          the daemon's own API socket (default <root>/${API_SOCKET_NAME})
  --read-deadline SECONDS    a read of a lazy view waits at most this long for content (default 60)
  --log-level L              default: $STARLIGHT_LOG or warn
  --trace-window SECONDS     auto tracing: record the files every container reads in its first SECONDS
                             (default 30; 0 = only \`starlight trace on\`)
  --trace-upload MODE        auto: upload traces to the proxy when recorded (default); manual: \`starlight report\`
  --trace-group NAME         group label of auto-mode traces (default none)
  --worker-id ID             opaque id sent with traces (default: none sent)
  --metrics-address H:P      serve Prometheus metrics on http://H:P/metrics (default off; e.g. 127.0.0.1:9108)
  --no-graduate              keep new containers of complete images on the lazy view (default: they get a
                             plain overlay lowerdir materialised under <root>/graduated)
  --view-idle SECONDS        unmount a graduated image's lazy view once no container or mount has used it
                             for SECONDS (default 60)
  --shutdown-views           unmount every lazy view of --root and end its fd holder, then exit (a plain
                             stop leaves views mounted so running containers survive a restart)`;

const LEVELS = new Set(['error', 'warn', 'info', 'debug']);

export async function runSnapshotterCommand(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        socket: { type: 'string' },
        root: { type: 'string' },
        proxy: { type: 'string' },
        'containerd-address': { type: 'string' },
        'api-socket': { type: 'string' },
        'read-deadline': { type: 'string' },
        'log-level': { type: 'string' },
        'trace-window': { type: 'string' },
        'trace-upload': { type: 'string' },
        'no-graduate': { type: 'boolean' },
        'view-idle': { type: 'string' },
        'trace-group': { type: 'string' },
        'worker-id': { type: 'string' },
        'metrics-address': { type: 'string' },
        'shutdown-views': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (cause) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `${(cause as Error).message}\n${USAGE}`, { cause });
  }
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (values['shutdown-views']) {
    const r = await shutdownViews(values.root ?? DEFAULT_ROOT);
    process.stdout.write(`starlight snapshotter: ${r.held} held view(s) released, ${r.unmounted.length} mount(s) removed\n`);
    return 0;
  }
  const level = values['log-level'];
  if (level !== undefined && !LEVELS.has(level)) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `--log-level must be one of error, warn, info, debug; got ${level}`);
  const log = createLogger(level ? { level: level as Level } : {}).child({ component: 'worker' });
  const deadline = values['read-deadline'];
  if (deadline !== undefined && !(Number(deadline) > 0)) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `--read-deadline must be a positive number of seconds, got ${deadline}`);
  const window = values['trace-window'];
  if (window !== undefined && !(Number(window) >= 0)) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `--trace-window must be a number of seconds ≥ 0, got ${window}`);
  const idle = values['view-idle'];
  if (idle !== undefined && !(Number(idle) > 0)) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `--view-idle must be a positive number of seconds, got ${idle}`);
  const upload = values['trace-upload'];
  if (upload !== undefined && upload !== 'auto' && upload !== 'manual') throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `--trace-upload must be auto or manual, got ${upload}`);
  const daemon = await WorkerDaemon.start({
    socket: values.socket,
    root: values.root,
    proxy: values.proxy,
    containerdAddress: values['containerd-address'],
    apiSocket: values['api-socket'],
    readDeadlineMs: deadline === undefined ? undefined : Number(deadline) * 1000,
    traceWindowMs: window === undefined ? undefined : Number(window) * 1000,
    traceUpload: upload,
    traceGroup: values['trace-group'],
    workerId: values['worker-id'],
    metricsAddress: values['metrics-address'],
    graduate: values['no-graduate'] ? false : undefined,
    viewIdleMs: idle === undefined ? undefined : Number(idle) * 1000,
    log,
  });
  process.stderr.write(`starlight snapshotter: serving on ${daemon.opts.socket}\n`);
  const signal = await untilSignal();
  log.info('worker-daemon-signal', { signal });
  await daemon.close();
  return 0;
}

/** `starlight-grpc run --server URL --socket PATH [...]` → `starlight snapshotter --proxy URL ...`. */
export async function runStarlightGrpcAlias(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'run') throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `usage: starlight-grpc run --server URL --socket PATH (got ${JSON.stringify(sub ?? '')})`);
  return runSnapshotterCommand(rest.map((a) => (a === '--server' ? '--proxy' : a.startsWith('--server=') ? `--proxy=${a.slice(9)}` : a)));
}
