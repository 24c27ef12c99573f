/** Fixture for exit-watchdog.test.ts (run by a nested ava only): a test file whose process exits. */
import test from 'ava';

test('passes, and the process exits', (t) => {
  t.pass();
});
