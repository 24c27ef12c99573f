import test from 'ava';
import { SendQueue } from '../../../src/proxy/session/send-queue.js';

/** Takes everything left, completing each item at once. */
function drain(q: SendQueue): number[] {
  const out: number[] = [];
  for (let i = q.shift(); i !== undefined; i = q.shift()) {
    out.push(i);
    q.done(i);
  }
  return out;
}

test('planned order from firstItem; each item once', (t) => {
  t.deepEqual(drain(new SendQueue(5)), [0, 1, 2, 3, 4]);
  t.deepEqual(drain(new SendQueue(5, 2)), [2, 3, 4]);
  t.deepEqual(drain(new SendQueue(0)), []);
});

test('bumped items go next, in the given order; the latest bump first; done, active and out-of-stream items are ignored', (t) => {
  const q = new SendQueue(10, 1);
  t.is(q.shift(), 1);
  q.done(1);
  const a = q.shift()!; // 2, active
  t.is(a, 2);
  q.bump([7, 1, 2, 0, 5, 7, 42, -1]);
  t.true(q.shouldPreempt());
  t.deepEqual(q.peek(3), [7, 5, 3]);
  q.preempt(2);
  q.bump([9]);
  t.deepEqual(drain(q), [9, 7, 5, 2, 3, 4, 6, 8]);
  t.false(q.shouldPreempt());
});

test('a preempted item resumes before the planned ones; bumping it resumes it first', (t) => {
  const q = new SendQueue(6);
  t.is(q.shift(), 0);
  q.bump([4]);
  q.preempt(0);
  t.is(q.shift(), 4);
  t.false(q.shouldPreempt(), 'items of one bump do not preempt each other');
  q.bump([0, 5]); // 4 is active: 0 (partial) and 5 jump ahead of it when it yields
  t.true(q.shouldPreempt());
  q.preempt(4);
  t.deepEqual(drain(q), [0, 5, 4, 1, 2, 3]);
});

test('random bumps and preemptions never lose or repeat an item', (t) => {
  let seed = 7;
  const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  for (let round = 0; round < 50; round++) {
    const n = 1 + rnd(40);
    const first = rnd(n);
    const q = new SendQueue(n, first);
    const sent: number[] = [];
    for (let i = q.shift(); i !== undefined; i = q.shift()) {
      if (rnd(3) === 0) q.bump(Array.from({ length: rnd(5) }, () => rnd(n + 2) - 1));
      if (q.shouldPreempt() && rnd(2) === 0) {
        q.preempt(i);
        continue;
      }
      sent.push(i);
      q.done(i);
    }
    t.deepEqual([...sent].sort((a, b) => a - b), Array.from({ length: n - first }, (_, k) => first + k));
    t.is(q.remaining, 0);
  }
});

test('takeRun takes a stretch only when shift() would give exactly it next, in planned order', (t) => {
  const q = new SendQueue(10, 1);
  t.is(q.nextPlanned(), 1);
  t.false(q.takeRun(2, 4), 'not the next item');
  t.true(q.takeRun(1, 4));
  t.true(q.isDone(1) && q.isDone(3));
  t.is(q.nextPlanned(), 4);
  q.bump([8]);
  t.is(q.nextPlanned(), undefined, 'a bumped item waits');
  t.false(q.takeRun(4, 6));
  t.is(q.shift(), 8);
  q.done(8);
  t.is(q.nextPlanned(), 4);
  t.false(q.takeRun(4, 10), 'a done item inside');
  t.true(q.takeRun(4, 8));
  const a = q.shift()!;
  t.is(a, 9);
  q.bump([8, 9]);
  q.preempt(a);
  t.is(q.nextPlanned(), undefined, 'a preempted item waits');
  t.false(q.takeRun(9, 10));
  t.deepEqual(drain(q), [9]);
  t.is(q.nextPlanned(), undefined);
});

test('preferred items go before the rest of the plan, after bumped and preempted ones, without preempting', (t) => {
  const q = new SendQueue(8, 1);
  t.is(q.shift(), 1); // active
  q.bump([6]);
  q.prefer([5, 1, 3, 42, 5, -1]);
  t.true(q.shouldPreempt(), 'the bump preempts');
  q.preempt(1);
  t.deepEqual(q.peek(4), [6, 1, 5, 3]);
  t.is(q.nextPlanned(), undefined, 'a preferred item waits: not the planned order');
  const a = q.shift()!;
  t.is(a, 6);
  q.prefer([7, 2]); // replaces [5, 3]
  t.false(q.shouldPreempt(), 'prefer does not preempt');
  q.done(a);
  t.deepEqual(drain(q), [1, 7, 2, 3, 4, 5]);
});

test('takeRun waits until the preferred items are sent', (t) => {
  const q = new SendQueue(6);
  q.prefer([4]);
  t.false(q.takeRun(0, 2));
  t.is(q.shift(), 4);
  q.done(4);
  t.true(q.takeRun(0, 2));
  t.deepEqual(drain(q), [2, 3, 5]);
});
