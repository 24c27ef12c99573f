/**
 * `starlight status [--daemon SOCK] [--json]`: the daemon's images with stream progress (files and
 * bytes present / total), the views it built and the FUSE mounts under its root.
 *
 * Not here: collecting the data (src/worker/daemon.ts status()).
 */
import { parseArgs } from 'node:util';
import { StarlightError } from '../errors.js';
import { DaemonClient } from '../worker/api/client.js';
import { DEFAULT_API_SOCKET } from '../worker/defaults.js';
import { formatBytes } from './progress.js';

const USAGE = `usage: starlight status [--daemon SOCK] [--json]`;

export async function runStatusCommand(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: { daemon: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (cause) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `${(cause as Error).message}\n${USAGE}`, { cause });
  }
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const st = await new DaemonClient(values.daemon ?? DEFAULT_API_SOCKET).status();
  if (values.json) {
    process.stdout.write(JSON.stringify(st, null, 2) + '\n');
    return 0;
  }
  const lines = ['IMAGES'];
  for (const i of st.images) {
    const state = i.complete ? 'complete' : i.streaming ? 'streaming' : 'incomplete';
    lines.push(`  ${i.name} ${i.manifestDigest.slice(0, 19)} ${state}: ${i.filesPresent}/${i.files} files, ${formatBytes(i.bytesPresent)}/${formatBytes(i.bytes)}`);
  }
  lines.push('VIEWS', ...st.views.map((v) => `  ${v}`), 'MOUNTS', ...st.mounts.map((m) => `  ${m}`));
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}
