/**
 * Prometheus text exposition (format 0.0.4): metric families with labelled samples, and a cumulative
 * histogram. Plain numbers and maps, so hot paths only add. A leaf module (imports nothing), so any
 * layer that counts (FUSE views, the content tracker) can own its histograms.
 *
 * Not here: what the worker measures (src/worker/metrics/collect.ts, at scrape time), serving
 * (src/worker/metrics/server.ts).
 */

export type Labels = Record<string, string>;

export interface Sample {
  labels?: Labels;
  value: number;
  /** Appended to the family name (histograms: '_bucket', '_sum', '_count'). */
  suffix?: string;
}

export interface Family {
  name: string;
  type: 'counter' | 'gauge' | 'histogram';
  help: string;
  samples: Sample[];
}

/** Upper bounds (seconds) of blocked-read waits: 1 ms … 60 s (the default read deadline). */
const WAIT_BUCKETS_S = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** A cumulative histogram (Prometheus semantics: bucket `le` counts every observation ≤ le). */
export class Histogram {
  private readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[] = WAIT_BUCKETS_S) {
    this.counts = bounds.map(() => 0);
  }

  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.bounds.length; i++) if (v <= this.bounds[i]!) this.counts[i]!++;
  }

  samples(labels: Labels = {}): Sample[] {
    return [
      ...this.bounds.map((le, i) => ({ suffix: '_bucket', labels: { ...labels, le: String(le) }, value: this.counts[i]! })),
      { suffix: '_bucket', labels: { ...labels, le: '+Inf' }, value: this.count },
      { suffix: '_sum', labels, value: this.sum },
      { suffix: '_count', labels, value: this.count },
    ];
  }
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function formatLabels(labels: Labels | undefined): string {
  const entries = Object.entries(labels ?? {});
  return entries.length === 0 ? '' : `{${entries.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}`;
}

/** The families as Prometheus text. */
export function renderFamilies(families: Family[]): string {
  let out = '';
  for (const f of families) {
    out += `# HELP ${f.name} ${f.help}\n# TYPE ${f.name} ${f.type}\n`;
    for (const s of f.samples) out += `${f.name}${s.suffix ?? ''}${formatLabels(s.labels)} ${s.value}\n`;
  }
  return out;
}

/** Parses exposition text into sample (`name` or `name{labels}`) → value; for tests and the bench. */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const [name, value] = line.split(' ');
    if (name !== undefined && value !== undefined) out.set(name, Number(value));
  }
  return out;
}
