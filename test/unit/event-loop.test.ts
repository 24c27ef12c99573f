import test from 'ava';
import { startSliced, yieldToLoop } from '../../src/event-loop.js';

/** `n` steps, each long enough that any slice is over after it (performance.now() moved). */
function* steps(n: number, done: { count: number }): Generator<void, number, undefined> {
  for (let i = 0; i < n; i++) {
    const at = performance.now();
    while (performance.now() === at);
    done.count++;
    yield;
  }
  return done.count;
}

/** Counts event-loop turns (setImmediate callbacks) until stopped. */
function turnCounter(): { readonly turns: number; stop(): void } {
  let turns = 0;
  let on = true;
  const tick = (): void => {
    if (!on) return;
    turns++;
    setImmediate(tick);
  };
  setImmediate(tick);
  return {
    get turns() {
      return turns;
    },
    stop: () => {
      on = false;
    },
  };
}

test('sliced work gives the loop a turn between slices, and hurried it runs the rest without one', async (t) => {
  const done = { count: 0 };
  const loop = turnCounter();
  const work = startSliced(steps(200, done), 0);
  for (let i = 0; i < 5; i++) await yieldToLoop();
  // Not hurried: a pause after each over-long step, so five turns ran only a few of the 200 steps.
  t.true(done.count > 0 && done.count < 20, `${done.count} steps in five turns`);
  const before = loop.turns;
  work.hurry();
  t.is(await work.result, 200);
  loop.stop();
  // At most the turn the work was already paused in; the ~190 steps left ran in one stretch.
  t.true(loop.turns - before <= 1, `${loop.turns - before} turns while hurried`);
});

test('a failing step rejects the result, hurried or not', async (t) => {
  function* failing(): Generator<void, number, undefined> {
    yield;
    throw new Error('bad step');
  }
  await t.throwsAsync(startSliced(failing(), 0).result, { message: 'bad step' });
  const hurried = startSliced(failing(), 0);
  hurried.hurry();
  await t.throwsAsync(hurried.result, { message: 'bad step' });
});
