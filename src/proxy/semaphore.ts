/**
 * A counting semaphore: at most `limit` holders at once, waiters served first come first served.
 * Bounds the proxy's concurrent layer passes and background encodes.
 */
export class Semaphore {
  private held = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(readonly limit: number) {}

  /** Holders right now. */
  get active(): number {
    return this.held;
  }

  /** Waiters right now. */
  get waiting(): number {
    return this.waiters.length;
  }

  async acquire(): Promise<void> {
    if (this.held < this.limit) {
      this.held++;
      return;
    }
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** Hands the slot to the next waiter, if any. */
  release(): void {
    const next = this.waiters.shift();
    if (next !== undefined) next();
    else this.held--;
  }

  /** Runs `fn` holding one slot. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await fn();
    } finally {
      this.release();
    }
  }
}
