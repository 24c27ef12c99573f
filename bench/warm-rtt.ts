/**
 * Round trips of a delta request at WAN latency (issue 19): time from ProxyClient.delta() to the
 * response head through the WAN emulator, with and without the connection opened ahead
 * (warm-connection.ts), against a stub proxy that answers at once. Isolates the TCP handshake's RTT
 * from the proxy's own work and the machine's load.
 *
 *   flock /tmp/sl-bench.lock node dist/bench/warm-rtt.js [--rtt 150] [--runs 5]
 */
import { createServer } from 'node:http';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { ProxyClient } from '../src/worker/stream/proxy-client.js';
import { WanEmulator } from './wan/emulator.js';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rtt: { type: 'string', default: '150' }, runs: { type: 'string', default: '5' } } });
  const rttMs = Number(values.rtt);
  const runs = Number(values.runs);
  const stub = createServer((_req, res) => res.end('x'));
  await new Promise<void>((r) => stub.listen(0, '127.0.0.1', r));
  const { port } = stub.address() as { port: number };
  const emu = await WanEmulator.start({ target: `127.0.0.1:${port}`, rttMs, bandwidthBps: 100e6 });
  const url = `http://${emu.address}`;
  const rows: string[] = [];
  for (const warm of [false, true]) {
    const client = new ProxyClient({ url, warm });
    // The spare (if any) is opened long before the request, as a daemon's is.
    await new Promise((r) => setTimeout(r, 3 * rttMs + 200));
    const ms: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const { body } = await client.delta({ ref: 'r/x:1', have: [] });
      ms.push(performance.now() - t0);
      for await (const _ of body) void _;
      await new Promise((r) => setTimeout(r, 3 * rttMs + 200));
    }
    client.close();
    ms.sort((a, b) => a - b);
    rows.push(`| ${warm ? 'warm (connection opened ahead)' : 'cold (dial per request)'} | ${rttMs} | ${ms[Math.floor(ms.length / 2)]!.toFixed(0)} | ${ms[0]!.toFixed(0)}–${ms[ms.length - 1]!.toFixed(0)} | ${emu.stats().connections} |`);
  }
  process.stdout.write(`| client | RTT ms | request → response head, median ms | range | connections so far |\n| --- | --- | --- | --- | --- |\n${rows.join('\n')}\n`);
  await emu.close();
  stub.close();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
