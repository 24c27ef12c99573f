/**
 * The README's first command end to end: `bash scripts/demo.sh` (with --skip-install: the test
 * suite already built the tree) against a real registry, proxy, snapshotter daemon, containerd, runc
 * and FUSE. Checks the summary lines, that the v2 update streamed far less than the v2 image, and
 * that nothing of the demo is left behind: no process naming its temp dir (registry, proxy, daemon,
 * containerd, shims), no mount under it, the dir itself gone. Also --keep ended by SIGINT (what
 * Ctrl-C sends) with the WAN emulator on, and bad arguments. Needs root.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const run = process.getuid?.() === 0 ? test.serial : (test.skip as typeof test.serial);

const DEMO_SH = fileURLToPath(new URL('../../../scripts/demo.sh', import.meta.url));
/** Longest one demo run may take, ms (a cold image build alone takes ~1 min here). */
const DEMO_TIMEOUT_MS = 6 * 60_000;
/** SIGTERM → SIGKILL grace when the test has to stop a demo itself, ms (the demo cleans up first). */
const STOP_GRACE_MS = 60_000;

interface Demo {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<number | null>;
}

function startDemo(t: ExecutionContext, args: string[]): Demo {
  const child = spawn('bash', [DEMO_SH, '--skip-install', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const timer = setTimeout(() => child.kill('SIGTERM'), DEMO_TIMEOUT_MS);
  void exited.then(() => clearTimeout(timer));
  t.teardown(async () => {
    clearTimeout(timer);
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const kill = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
    await exited;
    clearTimeout(kill);
  });
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** "428.4 KiB" → bytes. */
function bytesOf(text: string): number {
  const m = /^([\d.]+) (B|KiB|MiB|GiB)$/.exec(text.trim());
  if (!m) throw new Error(`not a size: ${text}`);
  return Number(m[1]) * 1024 ** ['B', 'KiB', 'MiB', 'GiB'].indexOf(m[2]!);
}

/** Processes (other than us) whose command line names `dir`. */
function processesNaming(dir: string): string[] {
  const found: string[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').join(' ');
      if (cmd.includes(dir)) found.push(`${p} ${cmd}`);
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

function assertNothingLeft(t: ExecutionContext, stdout: string): void {
  const m = /^cleaned up: .* and (\/\S+)$/m.exec(stdout);
  if (!m) return void t.fail(`no "cleaned up:" line in:\n${stdout}`);
  const dir = m[1]!;
  t.regex(dir, /starlight-demo-/);
  t.false(existsSync(dir), `${dir} still exists`);
  t.deepEqual(readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(dir)), [], 'mounts left under the temp dir');
  t.deepEqual(processesNaming(dir), [], 'processes of the demo still running');
}

run('bash scripts/demo.sh: pulls, runs and updates the app through Starlight, prints the summary, leaves nothing behind', async (t) => {
  t.timeout(DEMO_TIMEOUT_MS + STOP_GRACE_MS);
  const demo = startDemo(t, []);
  const code = await demo.exited;
  const out = demo.stdout();
  t.log(out);
  t.is(code, 0, `demo failed:\n${demo.stderr()}`);
  t.regex(out, /^Starlight demo: 127\.0\.0\.1:\d+\/demo\/python-web:v1 \(3 layers, [\d.]+ MiB compressed\)$/m);
  t.regex(out, /^index: +\d+\.\d\d s/m);
  t.regex(out, /^pull: +\d+\.\d\d s/m);
  t.regex(out, /^ready: +\d+\.\d\d s +\("READY python-web v1"/m);
  t.regex(out, /^http: +GET http:\/\/127\.0\.0\.1:\d+\/ → 200, \d+ bytes: <h1>starlight bench python-web v1<\/h1>$/m);
  t.regex(out, /^at ready: +[\d.]+ \S+ streamed .* \d+\/\d+ files present/m);
  const complete = /^complete: +\d+\.\d\d s +\(([\d.]+ \S+) streamed in all; (\d+) distinct files/m.exec(out);
  t.truthy(complete, 'complete line');
  const update = /^update v2: +index [\d.]+ s, pull [\d.]+ s, ready [\d.]+ s; ([\d.]+ \S+) streamed \(\d+ new files, [^)]*\) vs ([\d.]+ \S+) for all of v2, ([\d.]+ \S+) for its 2 new layers$/m.exec(out);
  if (!update || !complete) return;
  const [sent, all, newLayers] = [bytesOf(update[1]!), bytesOf(update[2]!), bytesOf(update[3]!)];
  t.true(sent < newLayers / 4, `the update streamed ${sent} bytes, not far below the ${newLayers} bytes of v2's new layers`);
  t.true(sent < all / 20);
  t.true(bytesOf(complete[1]!) > 10 * sent, 'a fresh pull streamed much more than the update');
  t.regex(out, /^http v2: +GET http:\/\/127\.0\.0\.1:\d+\/new-in-v2\.txt → 200, \d+ bytes: added in v2$/m);
  assertNothingLeft(t, out);
});

run('bash scripts/demo.sh --keep --rtt --bandwidth: stays up until SIGINT (Ctrl-C), then cleans up', async (t) => {
  t.timeout(DEMO_TIMEOUT_MS + STOP_GRACE_MS);
  const demo = startDemo(t, ['--keep', '--rtt', '20', '--bandwidth', '1gbit']);
  const deadline = Date.now() + DEMO_TIMEOUT_MS;
  while (!demo.stdout().includes('Press Ctrl-C') && demo.child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
  const out = demo.stdout();
  t.regex(out, /WAN emulator between worker and proxy: 20 ms RTT, 1 Gbit\/s/);
  t.regex(out, /Press Ctrl-C/, `demo did not reach --keep:\n${out}\n${demo.stderr()}`);
  t.regex(out, /ctr --address \/\S+\/c\.sock -n \S+ run --rm -t --snapshotter starlight /);
  const curl = /^ +curl (http:\/\/127\.0\.0\.1:\d+\/)$/m.exec(out);
  if (curl) {
    const res = await fetch(curl[1]!, { signal: AbortSignal.timeout(10_000) });
    t.is(res.status, 200);
    t.regex(await res.text(), /python-web v2/);
  }
  t.is(demo.child.exitCode, null, 'still running with --keep');
  demo.child.kill('SIGINT');
  t.is(await demo.exited, 0, demo.stderr());
  assertNothingLeft(t, demo.stdout());
});

test('bash scripts/demo.sh with bad arguments exits 64 before starting anything', async (t) => {
  for (const args of [['--rtt', 'soon'], ['--bandwidth', 'fast'], ['--nope']]) {
    const demo = startDemo(t, args);
    t.is(await demo.exited, 64, `${args.join(' ')}: ${demo.stderr()}`);
    t.regex(demo.stderr(), /\[SL_ERR_INVALID_ARGUMENT\]/);
    t.is(demo.stdout(), '');
  }
});
