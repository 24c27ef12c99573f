/**
 * A ContentProvider for fs tests: content backed by real files, digests in `missing` invisible until
 * release(), digests in `failing` rejecting. Waiters are aborted through their signal (unmount).
 */
import { StarlightError } from '../../src/errors.js';
import type { ContentProvider } from '../../src/worker/fs/view.js';

/** Content backed by real files; digests in `missing` are invisible until release(). */
export class TestContent implements ContentProvider {
  readonly files = new Map<string, string>();
  readonly missing = new Set<string>();
  readonly failing = new Set<string>();
  waits = 0;
  private waiters: { digest: string; resolve: (p: string) => void; reject: (e: unknown) => void }[] = [];

  locate(digest: string): string | null {
    return this.missing.has(digest) ? null : (this.files.get(digest) ?? null);
  }
  waitFor(digest: string, _offset: number, _length: number, signal?: AbortSignal): Promise<string> {
    this.waits++;
    if (this.failing.has(digest)) return Promise.reject(new StarlightError('SL_ERR_INTERNAL', `test: ${digest} fails`));
    const at = this.locate(digest);
    if (at !== null) return Promise.resolve(at);
    return new Promise((resolve, reject) => {
      const w = { digest, resolve, reject };
      this.waiters.push(w);
      signal?.addEventListener('abort', () => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new StarlightError('SL_ERR_CANCELED', 'test: aborted'));
      });
    });
  }
  release(digest: string): void {
    this.missing.delete(digest);
    for (const w of this.waiters.filter((x) => x.digest === digest)) w.resolve(this.files.get(digest)!);
    this.waiters = this.waiters.filter((x) => x.digest !== digest);
  }
  fail(digest: string): void {
    this.failing.add(digest);
    for (const w of this.waiters.filter((x) => x.digest === digest)) w.reject(new StarlightError('SL_ERR_INTERNAL', 'test: failed'));
    this.waiters = this.waiters.filter((x) => x.digest !== digest);
  }
  pending(): number {
    return this.waiters.length;
  }
}

