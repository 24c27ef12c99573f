/**
 * Fixture for exit-watchdog.test.ts (run by a nested ava only): the test passes but leaves a timer
 * running, so the worker's event loop never empties and the process never exits on its own.
 */
import test from 'ava';

test('passes but leaves an interval running', (t) => {
  setInterval(() => undefined, 1_000);
  t.pass();
});
