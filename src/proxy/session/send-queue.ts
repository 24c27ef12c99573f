/**
 * The order in which one delta session sends its items: the planned order (header order from
 * `firstItem`), with on-demand items jumping the queue (POST /v1/sessions/<id>/next, docs/protocol.md).
 *
 * Contract:
 * - shift() gives the next item to send: first bumped items (the latest bump first, each bump in its
 *   given order), then items preempted part-way (most recently preempted first), then preferred items
 *   (prefer(), in the given order), then the planned order.
 * - Each item is taken at most once until it is preempted (preempt() puts it back) or done (done()).
 * - bump() ignores items already done or being sent and items outside the stream; a bumped item that
 *   was preempted part-way is resumed where it stopped (the sender keeps its offset).
 * - prefer() re-orders what is left of the plan (a startup prediction that arrived after the header):
 *   unlike bump() it neither overtakes bumped or preempted items nor preempts the current item.
 * - takeRun() takes a stretch of the planned order at once, only when shift() would give exactly
 *   those items next.
 * - shouldPreempt() is true while a bumped item waits that was bumped after the current item started:
 *   the sender then stops the current item at its next frame boundary (the items of one bump do not
 *   preempt each other).
 *
 * Not here: bytes, frames, HTTP (session.ts).
 */

const PENDING = 0;
/** Preempted part-way; waits in `resumed`. */
const PARTIAL = 1;
const ACTIVE = 2;
const DONE = 3;

export class SendQueue {
  private readonly state: Uint8Array;
  private urgent: number[] = [];
  private readonly resumed: number[] = [];
  /** prefer()'s items, and the first of them not looked at yet. */
  private preferred: number[] = [];
  private prefPos = 0;
  private pos: number;
  /** Effective bump() calls so far, and their count when the active item was taken. */
  private bumps = 0;
  private activeSince = 0;

  /** Items `firstItem`..`count - 1`, in index order (= header order). */
  constructor(
    readonly count: number,
    readonly firstItem = 0,
  ) {
    this.state = new Uint8Array(count);
    this.state.fill(DONE, 0, Math.min(firstItem, count));
    this.pos = firstItem;
  }

  /** Items not done yet. */
  get remaining(): number {
    let n = 0;
    for (const s of this.state) if (s !== DONE) n++;
    return n;
  }

  isDone(index: number): boolean {
    return this.state[index] === DONE;
  }

  /** Makes `indices` the next items, in this order (see the contract above). */
  bump(indices: readonly number[]): void {
    const front: number[] = [];
    const seen = new Set<number>();
    for (const i of indices) {
      if (!Number.isInteger(i) || i < 0 || i >= this.count || seen.has(i)) continue;
      const s = this.state[i];
      if (s === DONE || s === ACTIVE) continue;
      seen.add(i);
      front.push(i);
    }
    if (front.length === 0) return;
    this.urgent = [...front, ...this.urgent.filter((i) => !seen.has(i))];
    this.bumps++;
  }

  /**
   * Sends `indices` (those still pending) before the rest of the planned order, in this order, after
   * anything bumped or preempted; replaces an earlier prefer(). Out-of-range indices are ignored.
   */
  prefer(indices: readonly number[]): void {
    this.preferred = indices.filter((i) => Number.isInteger(i) && i >= 0 && i < this.count && this.state[i] === PENDING);
    this.prefPos = 0;
  }

  /** True if an item jumped the queue since the active item started and waits (the active item should yield). */
  shouldPreempt(): boolean {
    this.dropStaleUrgent();
    return this.urgent.length > 0 && this.bumps > this.activeSince;
  }

  /** The next item to send (marked active), or undefined when nothing is left to start. */
  shift(): number | undefined {
    const i = this.peekNext();
    if (i === undefined) return undefined;
    this.take(i);
    return i;
  }

  /** Up to `n` items that shift() would give next, without taking them (to open them ahead). */
  peek(n: number): number[] {
    const out: number[] = [];
    const seen = new Set<number>();
    const consider = (i: number): boolean => {
      if (seen.has(i) || (this.state[i] !== PENDING && this.state[i] !== PARTIAL)) return false;
      seen.add(i);
      out.push(i);
      return out.length >= n;
    };
    for (const i of this.urgent) if (consider(i)) return out;
    for (let k = this.resumed.length - 1; k >= 0; k--) if (consider(this.resumed[k]!)) return out;
    for (let k = this.prefPos; k < this.preferred.length; k++) if (consider(this.preferred[k]!)) return out;
    for (let i = this.pos; i < this.count; i++) if (consider(i)) return out;
    return out;
  }

  /**
   * The item shift() would give next if it comes from the planned order (nothing bumped, preempted or
   * preferred waits), else undefined.
   */
  nextPlanned(): number | undefined {
    const i = this.peekNext();
    return i !== undefined && this.urgent.length === 0 && this.resumed.length === 0 && this.prefPos >= this.preferred.length ? i : undefined;
  }

  /**
   * Takes items `start`..`end - 1` as sent, if shift() would give exactly them next in this order
   * (planned order, all pending, nothing bumped or preempted waiting); returns whether it did.
   * Marks them done at once: the caller writes them in one piece (framed-runs.ts).
   */
  takeRun(start: number, end: number): boolean {
    if (this.nextPlanned() !== start || end > this.count) return false;
    for (let i = start; i < end; i++) if (this.state[i] !== PENDING) return false;
    this.state.fill(DONE, start, end);
    this.pos = end;
    return true;
  }

  /** The active item `index` stopped part-way: it is resumed before the planned items. */
  preempt(index: number): void {
    if (this.state[index] !== ACTIVE) return;
    this.state[index] = PARTIAL;
    this.resumed.push(index);
  }

  /** The active item `index` was sent completely. */
  done(index: number): void {
    this.state[index] = DONE;
  }

  private peekNext(): number | undefined {
    this.dropStaleUrgent();
    if (this.urgent.length > 0) return this.urgent[0];
    while (this.resumed.length > 0 && this.state[this.resumed[this.resumed.length - 1]!] !== PARTIAL) this.resumed.pop();
    if (this.resumed.length > 0) return this.resumed[this.resumed.length - 1];
    while (this.prefPos < this.preferred.length && this.state[this.preferred[this.prefPos]!] !== PENDING) this.prefPos++;
    if (this.prefPos < this.preferred.length) return this.preferred[this.prefPos];
    while (this.pos < this.count && this.state[this.pos] !== PENDING) this.pos++;
    return this.pos < this.count ? this.pos : undefined;
  }

  private take(i: number): void {
    if (this.urgent[0] === i) this.urgent.shift();
    else if (this.resumed[this.resumed.length - 1] === i) this.resumed.pop();
    this.state[i] = ACTIVE;
    this.activeSince = this.bumps;
  }

  private dropStaleUrgent(): void {
    while (this.urgent.length > 0 && this.state[this.urgent[0]!] !== PENDING && this.state[this.urgent[0]!] !== PARTIAL) this.urgent.shift();
  }
}
