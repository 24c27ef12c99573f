/**
 * Docs and comments stay true to the tree: every repo path they name exists, and README's exit-code
 * list is the CLI's table (src/cli/exit-codes.ts).
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EXIT_CODES } from '../../src/cli/exit-codes.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
/** Files whose text may name repo paths. */
const TEXT_FILE = /\.(ts|md|cc|h|sh|service|toml|conf)$/;
/** A repo-relative path with an extension, not preceded by a path character (so `../shared/x.md` is not one). */
const REPO_PATH = /(?<![\w./-])((?:docs|src|bench|test|scripts|native|proto)\/[\w./-]*\w\.(?:ts|md|cc|h|sh|proto|json|toml|service|conf|go))/g;

test('every docs/…, src/…, bench/…, test/…, scripts/… path named in the tree exists', (t) => {
  const files = execFileSync('git', ['ls-files'], { cwd: ROOT, encoding: 'utf8' }).split('\n').filter((f) => TEXT_FILE.test(f));
  t.true(files.length > 50, 'git ls-files found the tree');
  const stale: string[] = [];
  for (const f of files) {
    if (!existsSync(join(ROOT, f))) continue; // deleted in the work tree, not yet committed
    for (const m of readFileSync(join(ROOT, f), 'utf8').matchAll(REPO_PATH)) {
      if (!existsSync(join(ROOT, m[1]!))) stale.push(`${f} names ${m[1]}`);
    }
  }
  t.deepEqual(stale, []);
});

test("README's exit codes are the CLI's table", (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const line = /Exit codes:([^`]*?)\./s.exec(readme)?.[1];
  t.truthy(line, 'README has an "Exit codes:" list');
  const documented = new Set([...line!.matchAll(/\b(\d+) [a-z]/g)].map((m) => Number(m[1])));
  const actual = new Set([0, ...Object.values(EXIT_CODES)]);
  t.deepEqual([...documented].sort((a, b) => a - b), [...actual].sort((a, b) => a - b));
});
