/**
 * The text of bench/RESULTS.md: latest results with the exact command, the machine and tool
 * versions, the startup table and the overhead table. Pure (run.ts gathers the inputs).
 */
export interface MachineInfo {
  cpu: string;
  cores: number;
  memGiB: number;
  kernel: string;
  node: string;
  containerd: string;
  runc: string;
  /** ctr-remote / stargz version, when present. */
  estargz?: string;
}

export interface ResultsDoc {
  command: string;
  date: string;
  durationS: number;
  machine: MachineInfo;
  startupTable: string;
  overheadTable?: string;
  /** Where the CSV/SVG of this run were written. */
  outDir: string;
  skipped: string[];
}

export function resultsMarkdown(d: ResultsDoc): string {
  const m = d.machine;
  const parts = [
    '# Benchmark results (latest)',
    '',
    'Written by `npm run bench -- … --write-results`; see bench/README.md for what each mode and column means.',
    '',
    `- Command: \`${d.command}\``,
    `- Date: ${d.date} (bench took ${Math.round(d.durationS)} s)`,
    `- Machine: ${m.cpu}, ${m.cores} cores, ${m.memGiB.toFixed(0)} GiB RAM, Linux ${m.kernel}`,
    `- Tools: node ${m.node}, ${m.containerd}, ${m.runc}${m.estargz ? `, ${m.estargz}` : ''}`,
    `- Figure and CSV: ${d.outDir}/startup.svg, ${d.outDir}/results.csv, ${d.outDir}/aggregates.csv (not committed)`,
  ];
  if (d.skipped.length > 0) parts.push('', 'Skipped modes:', '', ...d.skipped.map((s) => `- ${s}`));
  parts.push('', '## Time to ready', '', 'Cells are median [min–max] over the runs; MB, requests and connections cross the emulated link up to the ready line; MB total: until a Starlight stream completed.', '', d.startupTable.trimEnd());
  if (d.overheadTable) parts.push('', '## Runtime overhead (after a full download)', '', d.overheadTable.trimEnd());
  return parts.join('\n') + '\n';
}
