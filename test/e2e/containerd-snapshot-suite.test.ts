/**
 * containerd's own snapshotter test suite against `starlight snapshotter`, through containerd's
 * proxy client (test/conformance/containerd-snapshots/suite_test.go). The Go test is built OFFLINE
 * from Debian's packages (golang-go + golang-github-containerd-containerd-dev, installed by
 * scripts/install-deps.sh): GOPATH mode against /usr/share/gocode, GOPROXY=off — no module
 * downloads. Skipped, saying why, when `go` is absent; needs root (the suite mounts).
 */
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { unmountAllUnder } from '../../src/worker/fs/mount-table.js';
import { CLI } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SUITE_DIR = './test/conformance/containerd-snapshots';
const GOPATH = '/usr/share/gocode';
const TESTSUITE_SRC = join(GOPATH, 'src/github.com/containerd/containerd/snapshots/testsuite');
const INSTALL_HINT = 'apt-get install golang-go golang-github-containerd-containerd-dev (scripts/install-deps.sh does)';
/** Build (cold: ~1 min on 2 cores) plus the suite's ~20 checks, each with its own daemon. */
const TEST_TIMEOUT_MS = 15 * 60_000;
/** Checks run at once (each starts a daemon; the machine may have 2 cores). */
const PARALLEL = 4;

const hasGo = spawnSync('go', ['version'], { stdio: 'ignore' }).status === 0;
const isRoot = process.getuid?.() === 0;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
}

/** Runs `cmd` in its own process group (so a teardown can end the daemons it started too). */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd: string, onStart: (pid: number) => void): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.on('error', reject);
    if (child.pid !== undefined) onStart(child.pid);
    child.on('close', (code, signal) => resolve({ code, signal, out }));
  });
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

const title = 'containerd snapshots/testsuite passes against starlight snapshotter through the proxy client';
if (!hasGo) {
  test.skip(`${title} — SKIPPED: \`go\` not found; ${INSTALL_HINT}`, () => undefined);
} else if (!isRoot) {
  test.skip(`${title} — SKIPPED: needs root (the suite mounts snapshots)`, () => undefined);
} else {
  test(title, async (t) => {
    t.timeout(TEST_TIMEOUT_MS);
    t.true(existsSync(TESTSUITE_SRC), `Go is installed but containerd's testsuite source is not at ${TESTSUITE_SRC}: ${INSTALL_HINT}`);
    const dir = tempDir(t, 'starlight-go-suite-');
    t.teardown(async () => {
      await unmountAllUnder(dir); // a check that died mid-way leaves its mounts (runs before the dir removal)
    });
    const tmp = join(dir, 'tmp');
    mkdirSync(tmp);
    const groups: number[] = [];
    t.teardown(() => groups.forEach(killGroup));
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      GO111MODULE: 'off',
      GOPATH,
      GOPROXY: 'off',
      GOFLAGS: '',
      // Go's build cache defaults to $HOME/.cache; only a bare environment needs one here.
      ...(process.env.HOME || process.env.XDG_CACHE_HOME || process.env.GOCACHE ? {} : { GOCACHE: join(dir, 'gocache') }),
      TMPDIR: tmp,
    };
    const bin = join(dir, 'containerd-snapshots.test');
    const build = await run('go', ['test', '-c', '-o', bin, SUITE_DIR], env, ROOT, (pid) => groups.push(pid));
    t.is(build.code, 0, `offline build of ${SUITE_DIR} failed:\n${build.out}`);
    if (build.code !== 0) return;

    const suite = await run(bin, ['-test.v', `-test.parallel=${PARALLEL}`, '-test.timeout=12m'], { ...env, STARLIGHT_CLI: CLI, STARLIGHT_NODE: process.execPath }, dir, (pid) =>
      groups.push(pid),
    );
    const passed = [...suite.out.matchAll(/^\s*--- PASS: TestContainerdSnapshotterSuite\/(\S+)/gm)].map((m) => m[1]!);
    const failed = [...suite.out.matchAll(/^\s*--- FAIL: TestContainerdSnapshotterSuite\/(\S+)/gm)].map((m) => m[1]!);
    t.log(`containerd testsuite: ${passed.length} passed, ${failed.length} failed${failed.length ? ` (${failed.join(', ')})` : ''}`);
    t.deepEqual(failed, [], suite.out.slice(-20_000));
    t.is(suite.code, 0, suite.out.slice(-20_000));
    t.true(passed.length >= 20, `the suite's checks ran (${passed.length}: ${passed.join(', ')})`);
  });
}
