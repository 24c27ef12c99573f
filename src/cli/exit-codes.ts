/**
 * The CLI boundary's one error mapping: error kind → process exit code, and how an error is printed.
 * Exit codes follow sysexits(3) where one fits, so scripts can tell "bad usage" from "try again".
 */
import { CodedError, kindOf, type Kind } from '../errors.js';

/** Exported for the README check (test/unit/docs.test.ts). */
export const EXIT_CODES: Record<Kind, number> = {
  'invalid-argument': 64, // EX_USAGE
  'not-found': 66, // EX_NOINPUT
  'already-exists': 73, // EX_CANTCREAT
  'failed-precondition': 65, // EX_DATAERR
  'data-loss': 65, // EX_DATAERR
  'unavailable': 69, // EX_UNAVAILABLE
  'resource-exhausted': 75, // EX_TEMPFAIL
  'canceled': 130, // as after SIGINT
  'unimplemented': 70, // EX_SOFTWARE
  'unauthenticated': 77, // EX_NOPERM
  'permission-denied': 77, // EX_NOPERM
  'internal': 70, // EX_SOFTWARE
};

export function exitCodeFor(err: unknown): number {
  return EXIT_CODES[kindOf(err)];
}

/** One line for the user: `starlight: <message> (<code>)` and a hint line. */
export function formatError(err: unknown): string {
  if (err instanceof CodedError) return `starlight: ${err.message} [${err.code}]\n  hint: ${err.hint}`;
  if (err instanceof Error) return `starlight: ${err.message}`;
  return `starlight: ${String(err)}`;
}
