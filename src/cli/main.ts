/**
 * The `starlight` command: picks the subcommand and maps its failure to an exit code. Each
 * subcommand lives in its own module (parse → call library → print) and is loaded on demand so
 * `starlight image …` does not load gRPC or the FUSE addon.
 */

type Runner = (argv: string[]) => Promise<number>;

/** Subcommand → loader. The alias `starlight-grpc run` is the original Starlight's daemon command line. */
const COMMANDS: Record<string, { summary: string; load: () => Promise<Runner> }> = {
  image: { summary: 'inspect an image or list its file table (TOC)', load: async () => (await import('./image.js')).runImageCommand },
  proxy: { summary: 'run the registry-side proxy that serves delta streams', load: async () => (await import('./proxy.js')).runProxyCommand },
  notify: { summary: 'ask a proxy to index an image ahead of time', load: async () => (await import('./notify.js')).runNotifyCommand },
  mount: { summary: 'mount an image lazily from a proxy (no containerd needed)', load: async () => (await import('./mount.js')).runMountCommand },
  umount: { summary: 'unmount a view mounted by `starlight mount`', load: async () => (await import('./mount.js')).runUmountCommand },
  snapshotter: { summary: 'run the containerd snapshotter daemon', load: async () => (await import('./snapshotter.js')).runSnapshotterCommand },
  'starlight-grpc': { summary: 'alias: starlight-grpc run --server URL --socket PATH', load: async () => (await import('./snapshotter.js')).runStarlightGrpcAlias },
  pull: { summary: 'lazily pull an image into containerd through the daemon', load: async () => (await import('./pull.js')).runPullCommand },
  status: { summary: 'show images, progress, views and mounts of the daemon', load: async () => (await import('./status.js')).runStatusCommand },
  trace: { summary: 'turn startup tracing on/off, or show a learned order', load: async () => (await import('./trace.js')).runTraceCommand },
  report: { summary: 'upload recorded startup traces to the proxy', load: async () => (await import('./trace.js')).runReportCommand },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  const lines = Object.entries(COMMANDS)
    .filter(([name]) => name !== 'starlight-grpc')
    .map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `usage: starlight <command> [options]\n\ncommands:\n${lines.join('\n')}\n\nRun 'starlight <command> --help' for a command's options.`;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(usage() + '\n');
    return cmd === undefined ? 64 : 0;
  }
  const entry = COMMANDS[cmd];
  if (!entry) {
    process.stderr.write(`starlight: unknown command '${cmd}'\n${usage()}\n`);
    return 64;
  }
  try {
    const run = await entry.load();
    return await run(rest);
  } catch (err) {
    // Loaded only on failure: every module costs a pull's start-up a few ms (issue 19).
    const { exitCodeFor, formatError } = await import('./exit-codes.js');
    process.stderr.write(formatError(err) + '\n');
    return exitCodeFor(err);
  }
}
