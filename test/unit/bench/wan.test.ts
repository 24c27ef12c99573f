/**
 * The WAN emulator against loopback echo/sink servers: latency per exchange and per handshake,
 * bandwidth cap, counters, backpressure with a paused reader, half-close, errors, the CLI.
 * Timing tests run serially (the machine is shared) with generous upper slack.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { WanEmulator, type WanEmulatorOptions } from '../../../bench/wan/emulator.js';
import { LinkShaper } from '../../../bench/wan/link.js';
import { parseBandwidth, parseHostPort, parseSize } from '../../../bench/lib/units.js';

/** Upper slack on latency assertions, ms (timer granularity + a busy shared machine). */
const SLACK_MS = 120;

async function listen(t: ExecutionContext, onConn: (s: Socket) => void): Promise<Server> {
  const server = createServer({ allowHalfOpen: true }, onConn);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const sockets = new Set<Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return server;
}

function portOf(server: Server): number {
  const a = server.address();
  if (a === null || typeof a === 'string') throw new Error('no port');
  return a.port;
}

/** Echo server: writes back what it reads, ends when the client ends. */
function echoServer(t: ExecutionContext): Promise<Server> {
  return listen(t, (s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
}

async function emulator(t: ExecutionContext, server: Server, opts: Omit<WanEmulatorOptions, 'target'>): Promise<WanEmulator> {
  const emu = await WanEmulator.start({ target: `127.0.0.1:${portOf(server)}`, ...opts });
  t.teardown(() => emu.close());
  return emu;
}

async function dial(t: ExecutionContext, emu: WanEmulator): Promise<Socket> {
  const s = connect({ host: '127.0.0.1', port: emu.port, allowHalfOpen: true });
  t.teardown(() => s.destroy());
  // Resets are part of what tests check (via 'close'); they must not become uncaught errors.
  s.on('error', () => {});
  await once(s, 'connect');
  return s;
}

/** Resolves when `s` is closed, by FIN or by reset. */
function closed(s: Socket): Promise<void> {
  return s.destroyed ? Promise.resolve() : new Promise((resolve) => s.once('close', () => resolve()));
}

/** Sends `msg` and resolves with ms until the same number of bytes came back. */
async function exchange(s: Socket, msg: string): Promise<number> {
  const t0 = performance.now();
  let got = 0;
  const done = new Promise<void>((resolve) => {
    const onData = (b: Buffer): void => {
      got += b.length;
      if (got >= msg.length) {
        s.off('data', onData);
        resolve();
      }
    };
    s.on('data', onData);
  });
  s.write(msg);
  await done;
  return performance.now() - t0;
}

test.serial('a request/response costs one RTT, plus one RTT for the handshake of each new connection', async (t) => {
  const rtt = 100;
  const emu = await emulator(t, await echoServer(t), { rttMs: rtt });
  // The emulator starts a connection's handshake RTT when it accepts, which may run before the
  // client's 'connect' callback on a busy machine: lower bounds count from the dial.
  const dialA = performance.now();
  const a = await dial(t, emu);
  const first = await exchange(a, 'hello');
  const firstSinceDial = performance.now() - dialA;
  const second = await exchange(a, 'again');
  const third = await exchange(a, 'more!');
  t.log(`exchanges: first ${first.toFixed(1)} ms, then ${second.toFixed(1)} / ${third.toFixed(1)} ms (RTT ${rtt})`);
  t.true(firstSinceDial >= 2 * rtt - 2, `dial + first exchange ${firstSinceDial} ms ≥ 2 RTT`);
  t.true(first < 2 * rtt + SLACK_MS, `first exchange ${first} ms < 2 RTT + slack`);
  for (const ms of [second, third]) {
    t.true(ms >= rtt - 2, `exchange ${ms} ms ≥ RTT`);
    t.true(ms < rtt + SLACK_MS, `exchange ${ms} ms < RTT + slack`);
  }
  const dialB = performance.now();
  const b = await dial(t, emu);
  await exchange(b, 'hi');
  const firstB = performance.now() - dialB;
  t.true(firstB >= 2 * rtt - 2, `a new connection pays the handshake again (${firstB} ms from its dial)`);
  const s = emu.stats();
  t.is(s.connections, 2);
  t.is(s.activeConnections, 2);
  t.is(s.bytesUp, 'hello'.length + 'again'.length + 'more!'.length + 'hi'.length);
  t.is(s.bytesDown, s.bytesUp);
});

test.serial('a 5 MiB download at 20 Mbit/s takes at least size/bandwidth and the counters match', async (t) => {
  const size = 5 * 1024 * 1024;
  const bps = 20e6;
  const payload = Buffer.alloc(size, 7);
  const server = await listen(t, (s) => {
    s.on('error', () => {});
    s.once('data', () => s.end(payload));
  });
  const emu = await emulator(t, server, { rttMs: 20, bandwidthBps: bps });
  const c = await dial(t, emu);
  const t0 = performance.now();
  let got = 0;
  c.on('data', (b: Buffer) => (got += b.length));
  c.write('go');
  await once(c, 'end');
  const ms = performance.now() - t0;
  const ideal = ((size - 64 * 1024) * 8 * 1000) / bps;
  t.log(`5 MiB at 20 Mbit/s: ${ms.toFixed(0)} ms (ideal ${ideal.toFixed(0)} ms)`);
  t.is(got, size);
  t.true(ms >= ideal, `took ${ms.toFixed(0)} ms, ideal ≥ ${ideal.toFixed(0)} ms`);
  t.true(ms < 3 * ideal, `took ${ms.toFixed(0)} ms < 3× ideal`);
  const s = emu.stats();
  t.is(s.bytesDown, size);
  t.is(s.bytesUp, 2);
  emu.resetStats();
  t.like(emu.stats(), { connections: 0, bytesUp: 0, bytesDown: 0 });
});

test.serial('a paused reader stalls the sender without the emulator buffering more than its window', async (t) => {
  const windowBytes = 1024 * 1024;
  const total = 64 * 1024 * 1024;
  const chunk = Buffer.alloc(256 * 1024, 1);
  let written = 0;
  let finished = false;
  const server = await listen(t, (s) => {
    s.on('error', () => {});
    const pump = (): void => {
      while (written < total) {
        written += chunk.length;
        if (!s.write(chunk)) {
          s.once('drain', pump);
          return;
        }
      }
      s.end(() => (finished = true));
    };
    pump();
  });
  const emu = await emulator(t, server, { rttMs: 10, windowBytes });
  const c = await dial(t, emu);
  c.pause();
  let maxBuffered = 0;
  const deadline = performance.now() + 1500;
  while (performance.now() < deadline) {
    maxBuffered = Math.max(maxBuffered, emu.stats().bufferedBytes);
    await new Promise((r) => setTimeout(r, 10));
  }
  const cap = windowBytes + 2 * chunk.length;
  t.log(`paused reader: max buffered ${maxBuffered} B, peak queue ${emu.stats().peakQueuedBytes} B, sender wrote ${written} of ${total} B`);
  t.true(maxBuffered <= cap, `emulator held ${maxBuffered} bytes, cap ${cap}`);
  t.true(emu.stats().peakQueuedBytes <= cap, `peak queue ${emu.stats().peakQueuedBytes}`);
  t.false(finished, 'the sender must be stalled while the reader is paused');
  t.true(written < total);
  // Resuming drains everything in order.
  let got = 0;
  c.on('data', (b: Buffer) => (got += b.length));
  c.resume();
  await once(c, 'end');
  t.is(got, total);
  t.is(emu.stats().bytesDown, total);
});

test('a half-close is forwarded: the server sees the end, answers, and the client gets it all', async (t) => {
  const server = await listen(t, (s) => {
    s.on('error', () => {});
    const parts: Buffer[] = [];
    s.on('data', (b: Buffer) => parts.push(b));
    s.on('end', () => s.end(Buffer.concat(parts).toString().toUpperCase()));
  });
  const emu = await emulator(t, server, { rttMs: 10 });
  const c = await dial(t, emu);
  let reply = '';
  c.on('data', (b: Buffer) => (reply += b.toString()));
  c.end('shout');
  await once(c, 'end');
  t.is(reply, 'SHOUT');
  await closed(c);
  const until = performance.now() + 2000;
  while (emu.stats().activeConnections > 0 && performance.now() < until) await new Promise((r) => setTimeout(r, 10));
  t.is(emu.stats().activeConnections, 0);
});

test('an unreachable target closes the client connection', async (t) => {
  const server = await echoServer(t);
  const port = portOf(server);
  await new Promise<void>((r) => server.close(() => r()));
  const emu = await WanEmulator.start({ target: `127.0.0.1:${port}`, rttMs: 5 });
  t.teardown(() => emu.close());
  const c = await dial(t, emu);
  await closed(c);
  t.is(emu.stats().activeConnections, 0);
});

test('close() ends open connections and is idempotent', async (t) => {
  const emu = await WanEmulator.start({ target: `127.0.0.1:${portOf(await echoServer(t))}` });
  const c = await dial(t, emu);
  await exchange(c, 'x');
  const gone = closed(c);
  await Promise.all([emu.close(), emu.close()]);
  await gone;
  t.is(emu.stats().activeConnections, 0);
});

test('bad options are refused with SL_ERR_CONFIG', async (t) => {
  await t.throwsAsync(WanEmulator.start({ target: '127.0.0.1:1', rttMs: -1 }), { code: 'SL_ERR_CONFIG' });
  await t.throwsAsync(WanEmulator.start({ target: 'nowhere' }), { code: 'SL_ERR_CONFIG' });
  await t.throwsAsync(WanEmulator.start({ target: '127.0.0.1:1', bandwidthBps: Number.NaN }), { code: 'SL_ERR_CONFIG' });
});

test('LinkShaper: unlimited passes at once; a burst passes; a long run is paced at the rate', (t) => {
  t.is(new LinkShaper({ bandwidthBps: 0 }).depart(5, 1e9), 5);
  const link = new LinkShaper({ bandwidthBps: 8e6, burstBytes: 1000 }); // 1000 bytes/ms
  t.is(link.depart(0, 1000), 0);
  let last = 0;
  for (let i = 0; i < 100; i++) last = link.depart(0, 1000);
  t.is(last, 100);
  t.true(link.backlogMs(0) >= 99);
  t.is(link.backlogMs(1000), 0);
  t.is(link.depart(1000, 500), 1000, 'an idle link refills its bucket');
});

test('units: bandwidths, sizes and endpoints parse; junk is SL_ERR_INVALID_ARGUMENT', (t) => {
  t.is(parseBandwidth('100mbit'), 1e8);
  t.is(parseBandwidth('20Mbit/s'), 2e7);
  t.is(parseBandwidth('1.5gbit'), 1.5e9);
  t.is(parseBandwidth('64000'), 64000);
  t.is(parseSize('64KiB'), 65536);
  t.is(parseSize('5MB'), 5e6);
  t.deepEqual(parseHostPort('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
  t.deepEqual(parseHostPort('[::1]:5000'), { host: '::1', port: 5000 });
  t.throws(() => parseBandwidth('fast'), { code: 'SL_ERR_INVALID_ARGUMENT' });
  t.throws(() => parseSize('1 potato'), { code: 'SL_ERR_INVALID_ARGUMENT' });
  t.throws(() => parseHostPort('localhost'), { code: 'SL_ERR_INVALID_ARGUMENT' });
  t.throws(() => parseHostPort('h:99999'), { code: 'SL_ERR_INVALID_ARGUMENT' });
});

test('the CLI prints its port and forwards', async (t) => {
  const server = await echoServer(t);
  const cli = fileURLToPath(new URL('../../../bench/wan/emulator.js', import.meta.url));
  const child = spawn(process.execPath, [cli, '--listen', '127.0.0.1:0', '--target', `127.0.0.1:${portOf(server)}`, '--rtt', '20', '--bandwidth', '100mbit'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.teardown(() => child.kill('SIGKILL'));
  const [line] = (await once(child.stdout, 'data')) as [Buffer];
  const m = /^listening 127\.0\.0\.1:(\d+)$/m.exec(line.toString());
  t.truthy(m, line.toString());
  const c = connect({ host: '127.0.0.1', port: Number(m![1]) });
  c.on('error', () => {});
  t.teardown(() => c.destroy());
  await once(c, 'connect');
  t.true((await exchange(c, 'ping')) >= 38);
  child.kill('SIGTERM');
  const [code] = (await once(child, 'exit')) as [number | null];
  t.is(code, 0);
});

test('the process exits after clients half-close and reset mid-transfer (no leaked TCP handle)', async (t) => {
  // Before the fix in emulator.ts's resetOrClose(), this child printed "closed" and then spun at
  // 100 % CPU forever inside Node's exit path (issue 17). A deadline turns that into a failure.
  const deadlineMs = 150_000; // above the child's own fill deadline (90 s)
  const script = fileURLToPath(new URL('./wan-close-child.js', import.meta.url));
  const child = spawn(process.execPath, [script, '50'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => child.kill('SIGKILL'));
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), deadlineMs)));
  const result = await Promise.race([exited, late]);
  clearTimeout(timer);
  t.not(result, 'late', `the child did not exit within ${deadlineMs} ms; output: ${out}`);
  t.deepEqual(result, [0, null], out);
  t.regex(out, /^closed$/m);
});
