/**
 * A real, throwaway PostgreSQL for tests and benches (Debian's `postgresql` package,
 * scripts/install-deps.sh): `initdb` in a temp dir, the server listening on a unix socket in that dir only (no TCP port), stopped and
 * the dir removed in t.teardown — also when the test fails.
 *
 * PostgreSQL refuses to run as root: as root, initdb and the server run as the `postgres` user
 * (setpriv), in a temp dir owned by it. The server is this process's child with a parent-death signal
 * (SIGINT: fast shutdown), so a killed test worker leaves no postmaster behind.
 *
 * Debian installs the binaries in /usr/lib/postgresql/<major>/bin, not on PATH: resolved at run time.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

export interface TestPostgres {
  /** Connection string (unix socket): postgres://postgres@<encoded socket dir>/postgres. */
  url: string;
  /** Stops the server (fast shutdown); the data dir stays, start() brings it back. */
  stop(): Promise<void>;
  start(): Promise<void>;
}

/** Bounds on server start/stop (ms): generous, the machine is shared. */
const START_DEADLINE_MS = 60_000;
const STOP_DEADLINE_MS = 30_000;
/** Port number of the socket file name (.s.PGSQL.<port>); no TCP listener is opened. */
const SOCKET_PORT = 5432;

/** The directory holding initdb/postgres: newest /usr/lib/postgresql/<major>/bin, else PATH. */
export function postgresBinDir(): string | undefined {
  const base = '/usr/lib/postgresql';
  if (existsSync(base)) {
    const majors = readdirSync(base)
      .filter((v) => /^\d+$/.test(v) && existsSync(join(base, v, 'bin', 'initdb')))
      .sort((a, b) => Number(b) - Number(a));
    if (majors.length > 0) return join(base, majors[0]!, 'bin');
  }
  try {
    const p = execFileSync('sh', ['-c', 'command -v initdb'], { encoding: 'utf8' }).trim();
    return p === '' ? undefined : join(p, '..');
  } catch {
    return undefined;
  }
}

function postgresUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

/** argv that runs `cmd` as the postgres user when we are root (with a parent-death signal if asked). */
function asPostgres(cmd: string, args: string[], pdeathsig?: string): [string, string[]] {
  const sig = pdeathsig !== undefined ? ['--pdeathsig', pdeathsig] : [];
  if (process.getuid?.() !== 0) return sig.length > 0 ? ['setpriv', [...sig, '--', cmd, ...args]] : [cmd, args];
  return ['setpriv', ['--reuid', 'postgres', '--regid', 'postgres', '--init-groups', ...sig, '--', cmd, ...args]];
}

async function waitReady(url: string, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + START_DEADLINE_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`postgres exited during start: ${log()}`);
    const c = new pg.Client({ connectionString: url });
    try {
      await c.connect();
      await c.query('SELECT 1');
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`postgres not ready after ${START_DEADLINE_MS} ms: ${String(err)} ${log()}`);
    } finally {
      await c.end().catch(() => undefined);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Whatever can run cleanup: an ava ExecutionContext, or a list the caller runs at its end (benches). */
export interface Teardown {
  teardown(fn: () => unknown): void;
}

/** A new empty database on `server` (CREATE DATABASE), for tests sharing one server; its URL. */
export async function freshDatabase(server: TestPostgres): Promise<string> {
  const name = `t_${randomBytes(6).toString('hex')}`;
  const c = new pg.Client({ connectionString: server.url });
  await c.connect();
  try {
    await c.query(`CREATE DATABASE ${name}`);
  } finally {
    await c.end();
  }
  return server.url.replace(/\/postgres$/, `/${name}`);
}

/** Starts a throwaway PostgreSQL; stopped and removed by `t`'s teardown. */
export async function startPostgres(t: Teardown): Promise<TestPostgres> {
  const bin = postgresBinDir();
  if (bin === undefined) throw new Error('PostgreSQL server binaries not found (apt-get install postgresql; scripts/install-deps.sh)');
  const dir = mkdtempSync(join(tmpdir(), 'starlight-pg-'));
  const user = postgresUser();
  if (user !== undefined) chownSync(dir, user.uid, user.gid);
  const data = join(dir, 'data');
  let child: ChildProcess | undefined;
  const stop = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill('SIGINT'); // fast shutdown: disconnects clients, checkpoints, exits
    const timer = setTimeout(() => c.kill('SIGKILL'), STOP_DEADLINE_MS);
    await exited;
    clearTimeout(timer);
  };
  t.teardown(async () => {
    await stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const [icmd, iargs] = asPostgres(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  execFileSync(icmd, iargs, { stdio: 'pipe' });
  const url = `postgres://postgres@${encodeURIComponent(dir)}:${SOCKET_PORT}/postgres`;
  const start = async (): Promise<void> => {
    if (child !== undefined) return;
    const [cmd, args] = asPostgres(
      join(bin, 'postgres'),
      ['-D', data, '-k', dir, '-p', String(SOCKET_PORT), '-c', 'listen_addresses=', '-c', 'fsync=off', '-c', 'max_connections=200'],
      'INT',
    );
    const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    c.stderr!.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-4000)));
    child = c;
    await waitReady(url, c, () => stderr);
  };
  await start();
  return { url, stop, start };
}
