/**
 * Structured logging: one JSON object per line on stderr, quiet by default.
 *
 * Level comes from STARLIGHT_LOG (error|warn|info|debug; default warn) or createLogger's `level`. Every record
 * has a stable `msg` key (e.g. 'remote-snapshot-prepared') that tests may assert on; data goes in
 * fields, never interpolated into `msg`. Hot paths must check `log.enabled('debug')` first.
 *
 * Not here: progress bars (src/cli/progress.ts), metrics (per component).
 */

export type Level = 'error' | 'warn' | 'info' | 'debug';
const RANK: Record<Level, number> = { error: 0, warn: 1, info: 2, debug: 3 };

export type Fields = Record<string, unknown>;

export interface Logger {
  error(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  debug(msg: string, fields?: Fields): void;
  enabled(level: Level): boolean;
  /** A logger that adds `fields` (e.g. {component:'proxy'}) to every record. */
  child(fields: Fields): Logger;
}

export type Sink = (line: string) => void;

/** Logger settings shared by all children of one root; not module-global so tests can own theirs. */
class LogConfig {
  level: Level;
  sink: Sink;
  constructor(level: Level, sink: Sink) {
    this.level = level;
    this.sink = sink;
  }
}

function parseLevel(v: string | undefined): Level {
  return v === 'error' || v === 'warn' || v === 'info' || v === 'debug' ? v : 'warn';
}

/** Deepest `cause` chain logged per error: enough to reach the system error under two wrappers. */
const MAX_CAUSES = 3;

/**
 * An Error as a record: message, name, and what a reader needs to act — a StarlightError's code, kind
 * and details; a system error's code (ENOSPC…); the cause's message (chained up to MAX_CAUSES).
 */
function errorFields(v: unknown, depth = 0): unknown {
  if (!(v instanceof Error)) return v;
  const out: Fields = { message: v.message, name: v.name };
  const code = (v as { code?: unknown }).code;
  if (code !== undefined) out.code = code;
  const kind = (v as { kind?: unknown }).kind;
  if (typeof kind === 'string') out.kind = kind;
  const details = (v as { details?: unknown }).details;
  if (details && typeof details === 'object' && Object.keys(details).length > 0) out.details = details;
  if (v.cause !== undefined && depth < MAX_CAUSES) out.cause = errorFields(v.cause, depth + 1);
  return out;
}

class JsonLogger implements Logger {
  constructor(
    private readonly cfg: LogConfig,
    private readonly base: Fields,
  ) {}

  private write(level: Level, msg: string, fields?: Fields): void {
    if (RANK[level] > RANK[this.cfg.level]) return;
    const rec: Fields = { time: new Date().toISOString(), level, msg, ...this.base };
    if (fields) for (const [k, v] of Object.entries(fields)) rec[k] = errorFields(v);
    this.cfg.sink(JSON.stringify(rec));
  }
  error(msg: string, fields?: Fields): void {
    this.write('error', msg, fields);
  }
  warn(msg: string, fields?: Fields): void {
    this.write('warn', msg, fields);
  }
  info(msg: string, fields?: Fields): void {
    this.write('info', msg, fields);
  }
  debug(msg: string, fields?: Fields): void {
    this.write('debug', msg, fields);
  }
  enabled(level: Level): boolean {
    return RANK[level] <= RANK[this.cfg.level];
  }
  child(fields: Fields): Logger {
    return new JsonLogger(this.cfg, { ...this.base, ...fields });
  }
}

/** A root logger. Defaults: level from STARLIGHT_LOG, lines to stderr. */
export function createLogger(opts: { level?: Level; sink?: Sink; fields?: Fields } = {}): Logger {
  const cfg = new LogConfig(
    opts.level ?? parseLevel(process.env.STARLIGHT_LOG),
    opts.sink ?? ((line) => process.stderr.write(line + '\n')),
  );
  return new JsonLogger(cfg, opts.fields ?? {});
}

/** A logger that drops everything (for libraries used without a logger). */
export const nullLogger: Logger = createLogger({ level: 'error', sink: () => {} });
