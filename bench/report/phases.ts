/**
 * The phase breakdown of Starlight trials (issue 19): for each image × scenario × RTT × mode with
 * recorded phases, the median of each phase over the successful runs, one column per group. The
 * phases come from the CLI (`starlight pull --timings`) and the daemon's view record (GET /v1/status):
 *
 *   cli.start      node start-up + module loading of `starlight pull`
 *   cli.request    the API request, end to end (the daemon's phases below are inside it)
 *   pull.*         daemon: have (layers announced), header (request → header in + decoded),
 *                  tocs (stored), merge (chain's tree) or merge-onto (onto an earlier merge of the
 *                  chain's lower part)
 *   containerd-*   daemon: lease, blobs + snapshot Stat (the view's inode table is built in slices
 *                  meanwhile), snapshots (Prepare), image record
 *   view.*         merge (reused from the pull when 0), table-wait (for the table the pull builds) +
 *                  inode-table-prebuilt, or inode-table (built at the mount), fuse-mount, fuse-init
 *                  (probe), first-access-after-mount
 *   run.view-ready-after-ctr-start   the view's mount done, ms after `ctr run` was spawned (> 0: the
 *                  container's Mounts may have waited for it)
 *   run.to-ready   `ctr run` to the ready line
 *
 * Pure. Not here: measuring (bench/drivers/starlight.ts).
 */
import { median } from './aggregate.js';
import type { TrialResult } from './types.js';

export function phasesTable(results: readonly TrialResult[]): string {
  const groups = new Map<string, Record<string, number>[]>();
  for (const r of results) {
    if (r.status !== 'ok' || !r.phases) continue;
    const key = `${r.image} ${r.scenario} rtt=${r.rttMs} ${r.mode}`;
    const list = groups.get(key) ?? [];
    list.push(r.phases);
    groups.set(key, list);
  }
  if (groups.size === 0) return '';
  const names: string[] = [];
  for (const list of groups.values()) for (const p of list) for (const k of Object.keys(p)) if (!names.includes(k)) names.push(k);
  const cols = [...groups.keys()];
  const lines = [`| phase (ms, median) | ${cols.join(' | ')} |`, `|---|${cols.map(() => '---:').join('|')}|`];
  for (const n of names) {
    const cells = cols.map((c) => {
      const vs = groups.get(c)!.map((p) => p[n]).filter((v): v is number => v !== undefined);
      return vs.length === 0 ? '–' : median(vs).toFixed(1);
    });
    lines.push(`| ${n} | ${cells.join(' | ')} |`);
  }
  return `\nPhase breakdown (Starlight trials):\n\n${lines.join('\n')}\n`;
}
