/**
 * The ExecutionContext the e2e test helpers (test/e2e/mount-support.ts, test/helpers) need when a
 * bench uses them outside ava: only teardown(), whose functions run in reverse order when the bench
 * calls teardown() (also on failure), errors printed and not thrown.
 */
import type { ExecutionContext } from 'ava';

export function teardownContext(): { t: ExecutionContext; teardown(): Promise<void> } {
  const fns: (() => unknown)[] = [];
  const t = { teardown: (fn: () => unknown) => void fns.push(fn), log: () => {} } as unknown as ExecutionContext;
  return {
    t,
    async teardown() {
      for (const fn of fns.splice(0).reverse()) await Promise.resolve(fn()).catch((err: unknown) => console.error(`teardown: ${(err as Error).message}`));
    },
  };
}
