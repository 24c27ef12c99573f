/**
 * Fan-out run of bench/proxy.ts (`--fanout`, issue 15 "one replica must keep up with a rollout"):
 * 1/10/50 concurrent full-delta pulls of warm (pre-indexed, encoded) Debian bench images, from one
 * and from two proxy replicas, next to docker-registry serving the same images' layer blobs to the
 * same number of clients. Clients run in a separate process (bench/lib/fanout-client.ts) so their CPU
 * is reported apart from the servers'. Per row: aggregate MB/s (wire bytes of all pulls / wall time
 * of the slowest), p50/p95 time to first byte and to the end of the HEADER frame (registry: first
 * byte), server CPU seconds and peak RSS (VmHWM, reset before each row via /proc/<pid>/clear_refs),
 * client CPU seconds. The median table then puts side by side what issue 15's acceptance reads (MB/s,
 * × registry, × one replica, header p95), followed by the verdicts, the machine's core count and its
 * load average (figures under other load are indicative only).
 *
 * Two replicas: each has its own --data dir (both pre-indexed) and the clients alternate between them
 * (round-robin in the bench, no load balancer): a shared PostgreSQL store is another change.
 *
 *   npm run build && flock /tmp/sl-bench.lock node dist/bench/proxy.js --fanout --images python-web,redis --clients 1,10,50 --replicas 1,2 --runs 3
 */
import type { ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { startRegistry } from '../test/helpers/registry.js';
import { tempDir } from '../test/helpers/tmp.js';
import { peakRssKb, startProxyProcess } from '../test/e2e/proxy-support.js';
import { type DebianImageName, type EnsuredImage, ensureDebianImage } from './images/ensure.js';
import type { FanoutPull, PullResult } from './lib/fanout-client.js';
import { cpuSeconds } from './lib/proc-stat.js';

const CLIENT = fileURLToPath(new URL('./lib/fanout-client.js', import.meta.url));

export interface FanoutOptions {
  images: DebianImageName[];
  clients: number[];
  replicas: number[];
  runs: number;
}

const peakRssMb = (pid: number): number => peakRssKb(pid) / 1024;

/** Resets VmHWM to the current RSS (Linux: "5" > clear_refs), so each row reports its own peak. */
function resetPeakRss(pid: number): void {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
  } catch {
    // not permitted: the row then shows the process's lifetime peak
  }
}

/** The pid of the docker-registry serving on `host` (its config file is named after the port). */
function registryPid(host: string): number | undefined {
  const tag = `config-${host.split(':')[1]}.yml`;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8');
      if (cmd.includes('docker-registry') && cmd.includes(tag)) return Number(d);
    } catch {
      // exited meanwhile
    }
  }
  return undefined;
}

const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
};

interface ClientRun {
  results: PullResult[];
  wallMs: number;
  cpuMs: number;
}

function runClients(pulls: FanoutPull[]): Promise<ClientRun> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLIENT, JSON.stringify({ pulls })], { maxBuffer: 64 * 1024 * 1024, timeout: 30 * 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`fan-out client failed: ${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout) as ClientRun);
    });
  });
}

interface Row {
  scenario: string;
  clients: number;
  server: string;
  run: number;
  mbps: number;
  ttfbP50: number;
  ttfbP95: number;
  hdrP50: number;
  hdrP95: number;
  endP95: number;
  mbPerPull: number;
  serverCpu: number;
  peakRss: number;
  clientCpu: number;
}

/** One timed fan-out: the pulls against servers `pids`; CPU and peak RSS of those processes. */
async function measure(pulls: FanoutPull[], pids: number[]): Promise<Omit<Row, 'scenario' | 'clients' | 'server' | 'run'>> {
  for (const p of pids) resetPeakRss(p);
  const c0 = pids.map(cpuSeconds);
  const run = await runClients(pulls);
  const cpu = pids.reduce((s, p, i) => s + cpuSeconds(p) - c0[i]!, 0);
  const failed = run.results.filter((r) => r.error !== undefined);
  if (failed.length > 0) throw new Error(`${failed.length} of ${pulls.length} pulls failed, first: ${failed[0]!.error}`);
  const bytes = run.results.reduce((s, r) => s + r.bytes, 0);
  const wallS = Math.max(...run.results.map((r) => r.endMs)) / 1000;
  return {
    mbps: bytes / 1e6 / wallS,
    ttfbP50: quantile(run.results.map((r) => r.ttfbMs), 0.5) / 1000,
    ttfbP95: quantile(run.results.map((r) => r.ttfbMs), 0.95) / 1000,
    hdrP50: quantile(run.results.map((r) => r.headerMs), 0.5) / 1000,
    hdrP95: quantile(run.results.map((r) => r.headerMs), 0.95) / 1000,
    endP95: quantile(run.results.map((r) => r.endMs), 0.95) / 1000,
    mbPerPull: bytes / 1e6 / pulls.length,
    serverCpu: cpu,
    peakRss: Math.max(...pids.map(peakRssMb)),
    clientCpu: run.cpuMs / 1000,
  };
}

export async function fanout(t: ExecutionContext, o: FanoutOptions): Promise<void> {
  const cores = availableParallelism();
  const loadAtStart = loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
  const reg = await startRegistry(t);
  const regPid = registryPid(reg.host);
  const pushed: EnsuredImage[] = [];
  for (const image of o.images) pushed.push(await ensureDebianImage(reg.url, image));
  const maxReplicas = Math.max(...o.replicas);
  const proxies: Awaited<ReturnType<typeof startProxyProcess>>[] = [];
  for (let r = 0; r < maxReplicas; r++) {
    proxies.push(await startProxyProcess(t, ['--registry', reg.url, '--listen', '127.0.0.1:0', '--data', tempDir(t, 'starlight-fanout-')]));
  }
  // Warm: every image indexed, encoded and predicted on every replica, and one delta read through.
  for (const p of proxies) {
    for (const img of pushed) {
      const n = await fetch(`${p.url}/v1/notify?ref=${img.reference}`, { method: 'POST' });
      if (n.status !== 200) throw new Error(`notify ${img.reference}: HTTP ${n.status}: ${await n.text()}`);
    }
  }
  const deltaPull = (replica: number, img: EnsuredImage): FanoutPull => ({ urls: [`${proxies[replica]!.url}/v1/delta?to=${img.reference}`], delta: true });
  const blobPull = (img: EnsuredImage): FanoutPull => ({
    urls: img.manifest.layers.map((l) => `${reg.url}/v2/${img.ref.repository}/blobs/${l.digest}`),
    delta: false,
  });
  await runClients(proxies.flatMap((_, r) => pushed.map((img) => deltaPull(r, img))));
  await runClients(pushed.map(blobPull));

  const scenarios: { name: string; pick: (k: number) => EnsuredImage }[] = [{ name: `same (${o.images[0]})`, pick: () => pushed[0]! }];
  if (pushed.length > 1) scenarios.push({ name: `different (${o.images.join('/')})`, pick: (k) => pushed[k % pushed.length]! });
  const rows: Row[] = [];
  for (let run = 1; run <= o.runs; run++) {
    for (const sc of scenarios) {
      for (const n of o.clients) {
        const ks = Array.from({ length: n }, (_, k) => k);
        rows.push({ scenario: sc.name, clients: n, server: 'docker-registry', run, ...(await measure(ks.map((k) => blobPull(sc.pick(k))), regPid === undefined ? [] : [regPid])) });
        for (const r of o.replicas) {
          const pulls = ks.map((k) => deltaPull(k % r, sc.pick(k)));
          rows.push({ scenario: sc.name, clients: n, server: `proxy x${r}`, run, ...(await measure(pulls, proxies.slice(0, r).map((p) => p.pid))) });
        }
      }
    }
  }
  const head = ['scenario', 'clients', 'server', 'run', 'MB/s', 'TTFB p50 s', 'TTFB p95 s', 'header p50 s', 'header p95 s', 'end p95 s', 'MB/pull', 'server CPU s', 'peak RSS MB', 'client CPU s'];
  console.log(`| ${head.join(' | ')} |`);
  console.log(`|${head.map(() => '---').join('|')}|`);
  const fmt = (r: Row): string[] => [
    r.scenario,
    String(r.clients),
    r.server,
    String(r.run),
    r.mbps.toFixed(0),
    r.ttfbP50.toFixed(3),
    r.ttfbP95.toFixed(3),
    r.hdrP50.toFixed(3),
    r.hdrP95.toFixed(3),
    r.endP95.toFixed(2),
    r.mbPerPull.toFixed(1),
    r.serverCpu.toFixed(2),
    r.peakRss.toFixed(0),
    r.clientCpu.toFixed(2),
  ];
  for (const r of rows) console.log(`| ${fmt(r).join(' | ')} |`);
  // Medians over runs: everything issue 15's acceptance reads, in one table, then the verdicts.
  console.log(`\nmedian over ${o.runs} run(s); ${cores} cores; load average ${loadAtStart} at start, ${loadavg().map((l) => l.toFixed(2)).join(' ')} at end:`);
  console.log('| scenario | clients | server | MB/s | x registry | x one replica | header p95 s | TTFB p95 s | server CPU s | peak RSS MB | client CPU s |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|');
  const med = (xs: number[]): number => quantile(xs, 0.5);
  const verdicts: string[] = [];
  for (const sc of scenarios) {
    for (const n of o.clients) {
      const of = (server: string): Row[] => rows.filter((r) => r.scenario === sc.name && r.clients === n && r.server === server);
      const regMbps = med(of('docker-registry').map((r) => r.mbps));
      const oneMbps = med(of('proxy x1').map((r) => r.mbps));
      for (const server of ['docker-registry', ...o.replicas.map((r) => `proxy x${r}`)]) {
        const rs = of(server);
        const mbps = med(rs.map((r) => r.mbps));
        const hdrP95 = med(rs.map((r) => r.hdrP95));
        const perOne = server.startsWith('proxy') && Number.isFinite(oneMbps) ? (mbps / oneMbps).toFixed(2) : '';
        console.log(
          `| ${sc.name} | ${n} | ${server} | ${mbps.toFixed(0)} | ${(mbps / regMbps).toFixed(2)} | ${perOne} | ${hdrP95.toFixed(3)} | ${med(rs.map((r) => r.ttfbP95)).toFixed(3)} | ${med(rs.map((r) => r.serverCpu)).toFixed(2)} | ${med(rs.map((r) => r.peakRss)).toFixed(0)} | ${med(rs.map((r) => r.clientCpu)).toFixed(2)} |`,
        );
        if (server === 'proxy x1' && n >= 10) verdicts.push(`${sc.name}, ${n} pulls: one replica ${(mbps / regMbps).toFixed(2)}x docker-registry (goal >= 0.8): ${mbps / regMbps >= 0.8 ? 'met' : 'NOT met'}`);
        if (server === 'proxy x1' && n >= 50) verdicts.push(`${sc.name}, ${n} pulls: header p95 ${hdrP95.toFixed(3)} s (goal <= 1 s): ${hdrP95 <= 1 ? 'met' : 'NOT met'}`);
        if (server === 'proxy x2' && n >= 10) {
          const why = cores < 4 ? ` (${cores} cores: two replicas, the client process and docker-registry share them, so 1.6x is out of reach on this machine)` : '';
          verdicts.push(`${sc.name}, ${n} pulls: two replicas ${(mbps / oneMbps).toFixed(2)}x one (goal >= 1.6 where cores allow): ${mbps / oneMbps >= 1.6 ? 'met' : 'NOT met'}${why}`);
        }
      }
    }
  }
  console.log('\nissue 15 acceptance (medians above):');
  for (const v of verdicts) console.log(`- ${v}`);
}
