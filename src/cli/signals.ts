/**
 * Long-running commands (proxy, mount, snapshotter) run until SIGINT/SIGTERM, then close gracefully.
 */

/** Resolves with the first SIGINT/SIGTERM (or when `stop` aborts); removes its handlers. */
export function untilSignal(stop?: AbortSignal): Promise<NodeJS.Signals | 'stopped'> {
  return new Promise((resolve) => {
    const done = (why: NodeJS.Signals | 'stopped'): void => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      stop?.removeEventListener('abort', onStop);
      resolve(why);
    };
    const onInt = (): void => done('SIGINT');
    const onTerm = (): void => done('SIGTERM');
    const onStop = (): void => done('stopped');
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
    if (stop?.aborted) return done('stopped');
    stop?.addEventListener('abort', onStop, { once: true });
  });
}
