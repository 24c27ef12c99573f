/**
 * Exit watchdog for ava workers (loaded in every worker through package.json "ava": {"require"}).
 *
 * Why: ava's `timeout` covers tests, not a worker process that fails to EXIT after its tests
 * finished — a handle left open keeps its event loop alive, or (issue 17) Node spins forever in its
 * native exit path. ava then waits forever and CI sits until its own limit. So when this worker's
 * tests are done (ava's completion handler; also on 'exit', where JS still runs before Node's native
 * cleanup), it starts a tiny watchdog: a shell that waits for this pid to go away, for at most
 * GRACE seconds (env STARLIGHT_TEST_EXIT_GRACE_S, default 60). If the pid is still there then, the
 * watchdog writes "<file>: the test process … did not exit …" on the worker's stderr (ava prints
 * it) and SIGKILLs the worker: ava reports "<file> exited due to SIGKILL" and the run fails.
 *
 * Guarantees: a worker that exits is never killed (the watchdog returns as soon as the pid is gone,
 * checked every 0.1 s — `tail --pid`, coreutils); nothing is left behind (the watchdog ends within
 * 0.1 s of the worker, or right after killing it). Not a pipe-EOF design on purpose: Node's exit
 * path closes every handle, including a pipe to the watchdog, BEFORE the spin it must catch.
 *
 * Test: test/unit/helpers/exit-watchdog.test.ts (nested ava on fixtures that do not exit).
 */
import test, { registerCompletionHandler } from 'ava';
import { spawn } from 'node:child_process';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMainThread } from 'node:worker_threads';

/** Environment variable: seconds a worker may live after its tests finished. */
export const EXIT_GRACE_ENV = 'STARLIGHT_TEST_EXIT_GRACE_S';
const DEFAULT_GRACE_S = 60;
/** argv[0] of the watchdog shell, so `ps` says what it is. */
export const WATCHDOG_NAME = 'starlight-exit-watchdog';

/* $1 test file, $2 worker pid, $3 grace seconds. Exit status 124 = timeout(1) ran out. */
const WATCHDOG_SH = `
timeout "$3" tail -s 0.1 --pid="$2" -f /dev/null
[ $? -eq 124 ] || exit 0
echo "$1: the test process (pid $2) did not exit $3 s after its tests finished (something it started is still open; see docs/design-notes.md, 'Test processes that do not exit'); killing it" >&2
kill -KILL "$2"`;

function graceSeconds(): number {
  const raw = process.env[EXIT_GRACE_ENV];
  if (raw === undefined || raw === '') return DEFAULT_GRACE_S;
  const s = Number(raw);
  if (!Number.isFinite(s) || s <= 0) throw new Error(`${EXIT_GRACE_ENV}=${JSON.stringify(raw)} is invalid: want seconds > 0, e.g. 60`);
  return s;
}

export default function installExitWatchdog(): void {
  // In a worker thread (ava "workerThreads": true) the pid is ava's own: never watch that.
  if (!isMainThread) return;
  const grace = graceSeconds();
  let armed = false;
  const arm = (): void => {
    if (armed) return;
    armed = true;
    const file = relative(process.cwd(), fileURLToPath(test.meta.file));
    const dog = spawn('sh', ['-c', WATCHDOG_SH, WATCHDOG_NAME, file, String(process.pid), String(grace)], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    dog.on('error', (err) => process.stderr.write(`${file}: cannot start the exit watchdog: ${err.message}\n`));
    dog.unref(); // never what keeps this worker alive
  };
  registerCompletionHandler(arm);
  process.once('exit', arm);
}
