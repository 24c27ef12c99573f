/**
 * Progress for long operations: one rewritten line on a terminal (stderr), nothing otherwise
 * (logs stay quiet by default; scripts read the final stdout line).
 */

export interface Progress {
  update(text: string): void;
  done(text?: string): void;
}

const MIN_INTERVAL_MS = 200;

export function createProgress(stream: NodeJS.WriteStream = process.stderr): Progress {
  if (!stream.isTTY) return { update: () => {}, done: () => {} };
  let last = 0;
  let shown = false;
  return {
    update(text) {
      const now = Date.now();
      if (now - last < MIN_INTERVAL_MS) return;
      last = now;
      shown = true;
      stream.write(`\r\x1b[K${text.slice(0, (stream.columns ?? 80) - 1)}`);
    },
    done(text) {
      if (shown) stream.write('\r\x1b[K');
      if (text) stream.write(text + '\n');
      shown = false;
    },
  };
}

/** 1536 → "1.5 KiB". */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}
