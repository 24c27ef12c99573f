/**
 * `starlight trace on [--group NAME] | off | status` and `starlight report`: the worker side of
 * startup traces (docs/protocol.md "Traces"), through the daemon's API socket.
 *   trace on      containers starting from now on are traced until `trace off` (manual mode)
 *   trace off     ends manual traces; they are saved under <root>/traces (and uploaded in auto mode)
 *   trace status  manual/auto mode, open traces, traces waiting for an upload
 *   report        uploads every recorded trace to the proxy now (POST /v1/traces)
 * `trace show` (the proxy's learned order) is the proxy side's subcommand, in ./trace-show.js.
 *
 * Not here: recording and uploading (src/worker/trace/), the daemon's options (snapshotter.ts).
 */
import { parseArgs } from 'node:util';
import { StarlightError, type Code } from '../errors.js';
import { DaemonClient } from '../worker/api/client.js';
import type { TraceStatus } from '../worker/api/server.js';
import { DEFAULT_API_SOCKET } from '../worker/defaults.js';


const TRACE_USAGE = `usage: starlight trace on [--group NAME] [--daemon SOCK] [--json]
       starlight trace off|status [--daemon SOCK] [--json]
       starlight trace show ...   (the proxy's learned order; see 'starlight trace show --help')

  --group NAME   label the traces of this workload (the proxy keeps one order per image and group)
  --daemon SOCK  the daemon's API socket (default ${DEFAULT_API_SOCKET})`;

const REPORT_USAGE = `usage: starlight report [--daemon SOCK] [--json]

Uploads the startup traces the daemon recorded (kept under <root>/traces) to its proxy.`;

function parse(argv: string[], usage: string) {
  try {
    return parseArgs({
      args: argv,
      allowPositionals: true,
      options: { daemon: { type: 'string' }, group: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (cause) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `${(cause as Error).message}\n${usage}`, { cause });
  }
}

function describe(st: TraceStatus): string {
  const manual = st.manual.on ? `on${st.manual.group ? ` (group ${st.manual.group})` : ''}` : 'off';
  const auto = st.autoWindowMs > 0 ? `first ${st.autoWindowMs / 1000} s of every container start` : 'off';
  return `manual tracing: ${manual}\nauto tracing: ${auto}\ntraces being recorded: ${st.open}\ntraces waiting for upload: ${st.pending} (upload: ${st.upload})`;
}

export async function runTraceCommand(argv: string[]): Promise<number> {
  if (argv[0] === 'show') return (await import('./trace-show.js')).runTraceShowCommand(argv.slice(1));
  const { values, positionals } = parse(argv, TRACE_USAGE);
  if (values.help) {
    process.stdout.write(TRACE_USAGE + '\n');
    return 0;
  }
  const [sub, ...rest] = positionals;
  if (rest.length > 0 || (sub !== 'on' && sub !== 'off' && sub !== 'status')) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `expected on, off, status or show; got ${JSON.stringify(positionals.join(' '))}\n${TRACE_USAGE}`);
  }
  if (values.group !== undefined && sub !== 'on') throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `--group goes with 'trace on'\n${TRACE_USAGE}`);
  const client = new DaemonClient(values.daemon ?? DEFAULT_API_SOCKET);
  const st = sub === 'status' ? await client.trace() : await client.trace({ on: sub === 'on', ...(values.group ? { group: values.group } : {}) });
  process.stdout.write((values.json ? JSON.stringify(st, null, 2) : describe(st)) + '\n');
  return 0;
}

export async function runReportCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, REPORT_USAGE);
  if (values.help) {
    process.stdout.write(REPORT_USAGE + '\n');
    return 0;
  }
  if (positionals.length > 0 || values.group !== undefined) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `unexpected arguments ${argv.join(' ')}\n${REPORT_USAGE}`);
  const r = await new DaemonClient(values.daemon ?? DEFAULT_API_SOCKET).report();
  if (values.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
  else process.stdout.write(`uploaded ${r.uploaded} trace(s); ${r.pending} still waiting\n`);
  const f = r.failures[0];
  if (f) {
    throw new StarlightError(f.code as Code, `upload of ${f.traces} trace(s) of ${f.ref} failed: ${f.message}${f.retriable ? '' : ' (the proxy refused them; they stay on disk)'}`, {
      details: { failures: r.failures },
    });
  }
  return 0;
}
