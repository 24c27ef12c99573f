/**
 * The exit watchdog (test/helpers/exit-watchdog.ts), through a nested ava run with package.json's
 * own ava settings on three fixture files (exit-watchdog-fixtures/): one exits normally, one keeps
 * its event loop alive, one spins in Node's native exit path (the failure of issue 17). With a
 * short grace period, the run must fail naming both stuck files, pass the normal one, and leave no
 * worker or watchdog process behind.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { EXIT_GRACE_ENV } from '../../helpers/exit-watchdog.js';
import { tempDir } from '../../helpers/tmp.js';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const FIXTURES = 'dist/test/unit/helpers/exit-watchdog-fixtures';
const AVA_CLI = join(ROOT, 'node_modules/ava/entrypoints/cli.mjs');
const NESTED_TIMEOUT_MS = 120_000;
const LEFTOVER_DEADLINE_MS = 5_000;
/** Short grace for the fixtures; long enough for a normal exit on a loaded 2-core machine. */
const GRACE_S = 5;

/** Pids whose command line mentions `needle` (this test's fixtures: nested workers and watchdogs). */
function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(needle)) pids.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

test('a test process that outlives its tests is killed after the grace period, its file named, the run failed', async (t) => {
  const dir = tempDir(t);
  // package.json's ava settings (so its "require" is what is tested), only the files differ.
  const config = join(dir, 'ava.config.mjs');
  const ava = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { ava: Record<string, unknown> }).ava;
  writeFileSync(config, `export default ${JSON.stringify({ ...ava, files: [`${FIXTURES}/*.fixture.js`], concurrency: 3 })};\n`);
  const run = await new Promise<{ code: number | null; out: string }>((resolve) => {
    execFile(process.execPath, [AVA_CLI, '--config', config], { cwd: ROOT, timeout: NESTED_TIMEOUT_MS, env: { ...process.env, [EXIT_GRACE_ENV]: String(GRACE_S) } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, out: stdout + stderr }),
    );
  });
  // The nested output (with its ✘ lines) is shown only when an assertion fails.
  const out = `\n--- nested ava output ---\n${run.out}`;
  t.is(run.code, 1, `the nested run fails${out}`);
  for (const name of ['loop-alive', 'stuck-in-cleanup']) {
    const file = `${FIXTURES}/${name}.fixture.js`;
    t.regex(run.out, new RegExp(`${file}: the test process \\(pid \\d+\\) did not exit ${GRACE_S} s after its tests finished`), `${name}: watchdog message${out}`);
    t.regex(run.out, new RegExp(`${file} exited due to SIGKILL`), `${name}: ava names the file${out}`);
  }
  t.regex(run.out, /3 tests passed/, out);
  t.notRegex(run.out, /exits\.fixture\.js (exited|: the test process)/, `the file that exits is left alone${out}`);
  // Nothing of the nested run survives it (watchdogs end within 0.1 s of their worker).
  const deadline = Date.now() + LEFTOVER_DEADLINE_MS;
  while (processesMentioning(FIXTURES).length > 0 && Date.now() < deadline) await sleep(50);
  t.deepEqual(processesMentioning(FIXTURES), []);
});
