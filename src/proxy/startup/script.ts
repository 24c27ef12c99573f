/**
 * Text facts for startup prediction (PURE): the `#!` line of a script, and the words of a script that
 * may name files it runs or reads (absolute paths, and for shell scripts the command words resolved
 * later through PATH). Bounded: only the first SCRIPT_HEAD_BYTES of a file are ever looked at, at most
 * MAX_SCRIPT_WORDS words are returned. Never throws on content.
 *
 * Not here: resolving words against an image tree (predict.ts).
 */

/** Bytes of a text file read for analysis (shebang, command words, ld.so.conf lines). */
export const SCRIPT_HEAD_BYTES = 16 * 1024;
/** Words returned by scriptWords (first ones, in order of appearance, distinct). */
const MAX_SCRIPT_WORDS = 256;
/** Linux reads at most this many bytes of the #! line (BINPRM_BUF_SIZE). */
const SHEBANG_MAX = 256;

export interface Shebang {
  /** The interpreter path as written (Linux needs it absolute; relative ones resolve from the cwd). */
  interpreter: string;
  /** The optional single argument (the rest of the line, trimmed), e.g. 'python3' for /usr/bin/env. */
  arg?: string;
}

/** The `#!` line of `head`, or undefined when it has none (Linux semantics: one optional argument). */
export function parseShebang(head: Uint8Array): Shebang | undefined {
  if (head.length < 3 || head[0] !== 0x23 || head[1] !== 0x21) return undefined;
  let end = head.indexOf(0x0a);
  if (end < 0 || end > SHEBANG_MAX) end = Math.min(head.length, SHEBANG_MAX);
  const line = Buffer.from(head.buffer, head.byteOffset + 2, end - 2).toString('latin1').replace(/\r$/, '').trim();
  const m = /^(\S+)(?:[ \t]+(.*))?$/.exec(line);
  if (m === null) return undefined;
  const arg = m[2]?.trim();
  return arg !== undefined && arg !== '' ? { interpreter: m[1]!, arg } : { interpreter: m[1]! };
}

/** True when the interpreter is a POSIX-like shell (its scripts name commands as bare words). */
export function isShell(interpreterBase: string): boolean {
  return /^(sh|bash|dash|ash|ksh|mksh|zsh|busybox)$/.test(interpreterBase);
}

/** Does the file look like text (no NUL in its head)? Binary files are not scanned for words. */
export function isText(head: Uint8Array): boolean {
  return head.indexOf(0) < 0;
}

/**
 * Candidate words of a script, in order of appearance, distinct: absolute paths (any script: also
 * Python's open('/app/port')), and when `shell`, bare words that could be commands ([A-Za-z0-9._+-],
 * not starting with '-'). Comments (`#` at a word start) are skipped. `$VAR` inside a path is kept for
 * the resolver to match any one directory entry there.
 */
export function scriptWords(text: string, shell: boolean): string[] {
  const out = new Set<string>();
  const body = text.length > SCRIPT_HEAD_BYTES ? text.slice(0, SCRIPT_HEAD_BYTES) : text;
  for (const rawLine of body.split('\n')) {
    const line = rawLine.replace(/(^|\s)#.*$/, '$1');
    for (const w of line.split(/[\s;&|()<>`"'=,{}[\]]+/)) {
      if (out.size >= MAX_SCRIPT_WORDS) return [...out];
      if (w === '' || w.length > 1024) continue;
      if (w.startsWith('/')) out.add(w.replace(/[:.]+$/, ''));
      else if (shell && /^[A-Za-z0-9_+][A-Za-z0-9._+-]*$/.test(w)) out.add(w);
    }
  }
  return [...out];
}
