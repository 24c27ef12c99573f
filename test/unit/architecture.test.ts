/**
 * docs/architecture.md's picture holds in the code: imports between areas only point down, proxy and
 * worker never import each other, and the folders (with the loose files of src/proxy/ and
 * src/worker/ as nodes of their own) form no cycle.
 */
import test from 'ava';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const IMPORT = /from '(\.[^']+)'/g;

/** Rank of an area: a module may import only from areas of lower rank (or its own area). */
function rank(area: string): number {
  if (area === 'src/cli') return 4;
  if (area === 'src/proxy' || area === 'src/worker') return 3;
  if (area === 'src/protocol' || area === 'src/layers') return 2;
  if (area === 'src/oci') return 1;
  return 0; // 'src': errors.ts, http-errors.ts, log.ts
}

/** The area of a source file: its top folder under src/, or 'src' for the base modules directly in src/. */
const area = (p: string): string => (p.split('/').length > 2 ? p.split('/').slice(0, 2).join('/') : 'src');
/** Graph node: a folder, except that loose files of src/proxy/ and src/worker/ are nodes of their own. */
function node(p: string): string {
  const parts = p.split('/');
  if (parts[1] === 'proxy' || parts[1] === 'worker') return parts.length > 3 ? parts.slice(0, 3).join('/') : p;
  return parts.length > 2 ? parts.slice(0, 2).join('/') : p;
}

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir)).flatMap((n) => {
    const p = `${dir}/${n}`;
    return statSync(join(ROOT, p)).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

function edges(): [string, string][] {
  const out: [string, string][] = [];
  for (const f of sources('src')) {
    for (const m of readFileSync(join(ROOT, f), 'utf8').matchAll(IMPORT)) {
      const target = relative(ROOT, normalize(join(ROOT, dirname(f), m[1]!))).replace(/\.js$/, '.ts');
      out.push([f, target]);
    }
  }
  return out;
}

test('imports between areas point down; proxy and worker never import each other; src imports nothing outside src', (t) => {
  const all = edges();
  t.true(all.length > 200, 'found the imports');
  const bad = all.filter(([from, to]) => !to.startsWith('src/') || (area(from) !== area(to) && rank(area(from)) <= rank(area(to))));
  t.deepEqual(bad.map(([f, to]) => `${f} → ${to}`), []);
});

test('no cycle between folders', (t) => {
  const graph = new Map<string, Set<string>>();
  for (const [f, to] of edges()) {
    const [a, b] = [node(f), node(to)];
    if (a !== b) graph.set(a, (graph.get(a) ?? new Set()).add(b));
  }
  // Depth-first search with colours: a grey node reached again closes a cycle.
  const colour = new Map<string, 'grey' | 'black'>();
  const cycles: string[] = [];
  const visit = (v: string, path: string[]): void => {
    colour.set(v, 'grey');
    for (const w of graph.get(v) ?? []) {
      if (colour.get(w) === 'grey') cycles.push([...path, v, w].slice(path.indexOf(w) >= 0 ? path.indexOf(w) : path.length).join(' → '));
      else if (!colour.has(w)) visit(w, [...path, v]);
    }
    colour.set(v, 'black');
  };
  for (const v of graph.keys()) if (!colour.has(v)) visit(v, []);
  t.deepEqual(cycles, []);
});

test('docs/architecture.md names every folder of src/proxy/ and src/worker/', (t) => {
  const doc = readFileSync(join(ROOT, 'docs/architecture.md'), 'utf8');
  const folders = ['src/proxy', 'src/worker'].flatMap((d) => readdirSync(join(ROOT, d)).filter((n) => statSync(join(ROOT, d, n)).isDirectory()).map((n) => `${n}/`));
  t.deepEqual(folders.filter((f) => !doc.includes(`\`${f}\``)), []);
});
