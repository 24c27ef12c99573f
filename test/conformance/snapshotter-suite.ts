/**
 * Snapshotter contract suite, modelled on containerd's snapshots/testsuite (SnapshotterSuite):
 * lifecycle, stat/update/usage/walk, misuse kinds, and file semantics through REAL mounts of the
 * returned Mount lists (bind/overlay; needs root). Run against every implementation and through the
 * gRPC adapter via a factory. Each test owns its root and unmounts everything in teardown.
 */
import type { ExecutionContext, TestFn } from 'ava';
import { chmod, chown, mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { hasCode, type Code } from '../../src/errors.js';
import type { Info, Snapshotter } from '../../src/worker/snapshotter/types.js';
import { withMounted } from './mount-util.js';

/** Makes a snapshotter with its state under `root`; the factory registers its own teardown. */
export type SnapshotterFactory = (t: ExecutionContext, root: string) => Promise<Snapshotter>;

interface Ctx {
  sn: Snapshotter;
  work: string;
}

async function rejectsCode(t: ExecutionContext, p: Promise<unknown>, code: Code, what: string): Promise<void> {
  const err = await t.throwsAsync(p, undefined, what);
  t.true(hasCode(err, code), `${what}: expected ${code}, got ${(err as { code?: string } | undefined)?.code}`);
}

async function collect(sn: Snapshotter, filters?: string[]): Promise<Info[]> {
  const out: Info[] = [];
  await sn.walk((i) => void out.push(i), filters);
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

/** prepare key on parent, run fill() on the mounted tree, commit as name. */
async function layer(t: ExecutionContext, c: Ctx, name: string, parent: string, fill: (dir: string) => Promise<void>): Promise<void> {
  const key = `${name}-active`;
  const m = await withMounted(t, c.work, await c.sn.prepare(key, parent));
  await fill(m.dir);
  await m.done();
  await c.sn.commit(name, key);
}

export function snapshotterSuite(test: TestFn, name: string, factory: SnapshotterFactory, tempDir: (t: ExecutionContext) => string): void {
  const setup = async (t: ExecutionContext): Promise<Ctx> => {
    const base = tempDir(t);
    const work = join(base, 'work');
    await mkdir(work);
    const sn = await factory(t, join(base, 'root'));
    return { sn, work };
  };

  test(`${name}: basic prepare/commit/view through real mounts`, async (t) => {
    const c = await setup(t);
    const m1 = await c.sn.prepare('ns/1/prepare-1', '');
    t.is(m1.length, 1);
    t.is(m1[0]!.type, 'bind');
    t.true(m1[0]!.options.includes('rw'));
    const a = await withMounted(t, c.work, m1);
    await mkdir(join(a.dir, 'a'));
    await writeFile(join(a.dir, 'a/foo'), 'foo\n');
    await writeFile(join(a.dir, 'bar'), 'bar\n');
    await a.done();
    await c.sn.commit('committed-1', 'ns/1/prepare-1', { labels: { 'containerd.io/snapshot/l': 'v' } });
    await rejectsCode(t, c.sn.stat('ns/1/prepare-1'), 'SL_ERR_SNAPSHOT_NOT_FOUND', 'key gone after commit');
    const ci = await c.sn.stat('committed-1');
    t.is(ci.kind, 'committed');
    t.is(ci.parent, '');
    t.deepEqual(ci.labels, { 'containerd.io/snapshot/l': 'v' });

    const m2 = await c.sn.prepare('ns/2/prepare-2', 'committed-1');
    t.is(m2[0]!.type, 'overlay');
    const b = await withMounted(t, c.work, m2);
    t.is(await readFile(join(b.dir, 'a/foo'), 'utf8'), 'foo\n');
    await writeFile(join(b.dir, 'a/foo'), 'foo2\n');
    await rm(join(b.dir, 'bar'));
    await writeFile(join(b.dir, 'baz'), 'baz\n');
    await b.done();
    await c.sn.commit('committed-2', 'ns/2/prepare-2');
    t.is((await c.sn.stat('committed-2')).parent, 'committed-1');

    const v = await withMounted(t, c.work, await c.sn.view('ns/3/view', 'committed-2'));
    t.deepEqual((await readdir(v.dir)).sort(), ['a', 'baz']);
    t.is(await readFile(join(v.dir, 'a/foo'), 'utf8'), 'foo2\n');
    const err = await t.throwsAsync(writeFile(join(v.dir, 'new'), 'x'));
    t.is((err as NodeJS.ErrnoException).code, 'EROFS', 'views are read-only');
    const vi = await c.sn.stat('ns/3/view');
    t.is(vi.kind, 'view');
    t.is(vi.parent, 'committed-2');
    t.deepEqual((await collect(c.sn)).map((i) => i.name), ['committed-1', 'committed-2', 'ns/3/view']);
    await v.done();
  });

  test(`${name}: mounts follow containerd's overlay rules`, async (t) => {
    const c = await setup(t);
    await c.sn.prepare('a', '');
    t.deepEqual((await c.sn.view('v0', ''))[0]!.options, ['ro', 'rbind'], 'view without parent: ro bind');
    await c.sn.commit('base', 'a');
    const one = await c.sn.view('v1', 'base');
    t.is(one[0]!.type, 'bind', 'view of a single layer: bind');
    t.true(one[0]!.options.includes('ro'));
    await c.sn.prepare('b', 'base');
    await c.sn.commit('second', 'b');
    const two = await c.sn.view('v2', 'second');
    t.is(two[0]!.type, 'overlay', 'view of two layers: overlay');
    t.false(two[0]!.options.some((o) => o.startsWith('upperdir=')), 'views have no upperdir');
    t.is(two[0]!.options.find((o) => o.startsWith('lowerdir='))!.split(':').length, 2);
    const act = await c.sn.prepare('c', 'second');
    const opts = act[0]!.options;
    t.truthy(opts.find((o) => o.startsWith('upperdir=')));
    t.truthy(opts.find((o) => o.startsWith('workdir=')));
    t.deepEqual(await c.sn.mounts('c'), act, 'Mounts returns the same as Prepare');
    t.deepEqual(await c.sn.mounts('v2'), two);
  });

  test(`${name}: misuse fails with containerd's error classes`, async (t) => {
    const c = await setup(t);
    await c.sn.prepare('p', '');
    await rejectsCode(t, c.sn.prepare('p', ''), 'SL_ERR_SNAPSHOT_EXISTS', 'prepare existing key');
    await rejectsCode(t, c.sn.prepare('q', 'missing'), 'SL_ERR_SNAPSHOT_NOT_FOUND', 'missing parent');
    await rejectsCode(t, c.sn.prepare('q', 'p'), 'SL_ERR_SNAPSHOT_INVALID', 'active parent');
    await rejectsCode(t, c.sn.view('q', 'p'), 'SL_ERR_SNAPSHOT_INVALID', 'view of active parent');
    await rejectsCode(t, c.sn.commit('x', 'missing'), 'SL_ERR_SNAPSHOT_NOT_FOUND', 'commit missing key');
    await c.sn.view('v', '');
    await rejectsCode(t, c.sn.commit('x', 'v'), 'SL_ERR_SNAPSHOT_PRECONDITION', 'commit a view');
    await c.sn.commit('c', 'p');
    await rejectsCode(t, c.sn.commit('y', 'c'), 'SL_ERR_SNAPSHOT_PRECONDITION', 'commit a committed');
    await c.sn.prepare('p2', 'c');
    await rejectsCode(t, c.sn.commit('c', 'p2'), 'SL_ERR_SNAPSHOT_EXISTS', 'commit onto an existing name');
    t.is((await c.sn.stat('p2')).kind, 'active', 'failed commit leaves the active snapshot');
    await rejectsCode(t, c.sn.remove('c'), 'SL_ERR_SNAPSHOT_PRECONDITION', 'remove a parent');
    await rejectsCode(t, c.sn.remove('nope'), 'SL_ERR_SNAPSHOT_NOT_FOUND', 'remove missing');
    await rejectsCode(t, c.sn.mounts('c'), 'SL_ERR_SNAPSHOT_PRECONDITION', 'mounts of committed');
    await rejectsCode(t, c.sn.mounts('nope'), 'SL_ERR_SNAPSHOT_NOT_FOUND', 'mounts of missing');
    await rejectsCode(t, c.sn.stat('nope'), 'SL_ERR_SNAPSHOT_NOT_FOUND', 'stat missing');
    await rejectsCode(t, c.sn.usage('nope'), 'SL_ERR_SNAPSHOT_NOT_FOUND', 'usage missing');
    await rejectsCode(t, c.sn.update({ name: 'c', labels: {} }, ['name']), 'SL_ERR_SNAPSHOT_INVALID', 'update immutable field');
    await rejectsCode(t, c.sn.update({ name: 'nope', labels: {} }), 'SL_ERR_SNAPSHOT_NOT_FOUND', 'update missing');
    await rejectsCode(t, c.sn.walk(() => {}, ['labels."x'], ), 'SL_ERR_SNAPSHOT_INVALID', 'bad filter');
    await rejectsCode(t, c.sn.prepare('', ''), 'SL_ERR_SNAPSHOT_INVALID', 'empty key');
  });

  test(`${name}: update replaces or patches labels only`, async (t) => {
    const c = await setup(t);
    await c.sn.prepare('k', '', { labels: { 'containerd.io/snapshot/a': '1', 'containerd.io/snapshot/b': '2' } });
    await c.sn.commit('n', 'k', { labels: { 'containerd.io/snapshot/a': '1', 'containerd.io/snapshot/b': '2' } });
    const before = await c.sn.stat('n');
    const all = await c.sn.update({ name: 'n', labels: { 'containerd.io/snapshot/c': '3' } });
    t.deepEqual(all.labels, { 'containerd.io/snapshot/c': '3' }, 'no mask: replace all');
    t.is(all.created, before.created);
    // Times are ns (containerd's precision), so even an update within the same ms moves `updated`.
    t.true(all.updated > before.updated, `updated ${all.updated} > ${before.updated}`);
    const one = await c.sn.update({ name: 'n', labels: { 'containerd.io/snapshot/d': '4' } }, ['labels.containerd.io/snapshot/d']);
    t.deepEqual(one.labels, { 'containerd.io/snapshot/c': '3', 'containerd.io/snapshot/d': '4' });
    const del = await c.sn.update({ name: 'n', labels: {} }, ['labels.containerd.io/snapshot/c']);
    t.deepEqual(del.labels, { 'containerd.io/snapshot/d': '4' }, 'absent value deletes the label');
    t.deepEqual((await c.sn.stat('n')).labels, del.labels);
    t.is((await c.sn.stat('n')).kind, 'committed');
  });

  test(`${name}: walk with containerd filters`, async (t) => {
    const c = await setup(t);
    const ref = 'containerd.io/snapshot.ref';
    await c.sn.prepare('k1', '');
    await c.sn.commit('sha256:aaa', 'k1', { labels: { [ref]: 'sha256:aaa' } });
    await c.sn.prepare('k2', 'sha256:aaa');
    await c.sn.commit('sha256:bbb', 'k2', { labels: { [ref]: 'sha256:bbb' } });
    await c.sn.prepare('k3', 'sha256:bbb');
    await c.sn.view('v', 'sha256:aaa');
    const names = async (f?: string[]) => (await collect(c.sn, f)).map((i) => i.name);
    t.deepEqual(await names(), ['k3', 'sha256:aaa', 'sha256:bbb', 'v']);
    t.deepEqual(await names([`labels."${ref}"==sha256:bbb,parent==sha256:aaa`]), ['sha256:bbb'], 'containerd after AlreadyExists');
    t.deepEqual(await names([`labels."${ref}"==sha256:bbb,parent==sha256:xxx`]), []);
    t.deepEqual(await names(['kind==active']), ['k3']);
    t.deepEqual(await names(['kind==view', 'name==k3']), ['k3', 'v'], 'filters OR');
    t.deepEqual(await names(['parent==sha256:aaa']), ['sha256:bbb', 'v']);
    t.deepEqual(await names([`labels."${ref}"`]), ['sha256:aaa', 'sha256:bbb'], 'presence');
    t.deepEqual(await names(['name~=^sha256:']), ['sha256:aaa', 'sha256:bbb']);
    t.deepEqual(await names(['kind!=committed']), ['k3', 'v']);
    const stopped = await t.throwsAsync(c.sn.walk(() => Promise.reject(new Error('stop'))));
    t.truthy(stopped, 'a failing callback stops the walk');
  });

  test(`${name}: usage of active, committed and view snapshots`, async (t) => {
    const c = await setup(t);
    const m = await withMounted(t, c.work, await c.sn.prepare('k', ''));
    await writeFile(join(m.dir, 'big'), Buffer.alloc(1 << 20, 1));
    await mkdir(join(m.dir, 'd'));
    await writeFile(join(m.dir, 'd/small'), 'x');
    await m.done();
    const active = await c.sn.usage('k');
    t.true(active.size >= 1 << 20, `size ${active.size} covers the 1 MiB file`);
    t.true(active.inodes >= 4, `inodes ${active.inodes}: root, big, d, d/small`);
    await c.sn.commit('n', 'k');
    t.deepEqual(await c.sn.usage('n'), active, 'committed usage recorded at commit');
    await c.sn.view('v', 'n');
    t.is((await c.sn.usage('v')).size, 0);
  });

  test(`${name}: remove deletes any kind once childless`, async (t) => {
    const c = await setup(t);
    await c.sn.prepare('k', '');
    await c.sn.commit('base', 'k');
    await c.sn.prepare('act', 'base');
    await c.sn.view('view', 'base');
    await c.sn.remove('act');
    await c.sn.remove('view');
    await c.sn.remove('base');
    t.deepEqual(await collect(c.sn), []);
    await rejectsCode(t, c.sn.stat('base'), 'SL_ERR_SNAPSHOT_NOT_FOUND', 'removed');
    await c.sn.prepare('k', '');
    t.is((await c.sn.stat('k')).kind, 'active', 'a removed key can be reused');
  });

  test(`${name}: overlay file semantics (delete dir, rename, chown, perms, whiteouts)`, async (t) => {
    const c = await setup(t);
    await layer(t, c, 'l1', '', async (d) => {
      await mkdir(join(d, 'dir/sub'), { recursive: true });
      await writeFile(join(d, 'dir/sub/f'), 'f');
      await writeFile(join(d, 'keep'), 'k');
      await writeFile(join(d, 'moved'), 'm');
      await mkdir(join(d, 'perm'));
      await chmod(join(d, 'perm'), 0o700);
      await writeFile(join(d, 'owned'), 'o');
    });
    await layer(t, c, 'l2', 'l1', async (d) => {
      await rm(join(d, 'dir'), { recursive: true });
      await rename(join(d, 'moved'), join(d, 'renamed'));
      await chown(join(d, 'owned'), 1000, 1000);
    });
    await layer(t, c, 'l3', 'l2', async (d) => {
      await mkdir(join(d, 'dir'));
      await writeFile(join(d, 'dir/new'), 'n');
    });
    const v = await withMounted(t, c.work, await c.sn.view('v', 'l3'));
    t.deepEqual((await readdir(v.dir)).sort(), ['dir', 'keep', 'owned', 'perm', 'renamed']);
    t.deepEqual(await readdir(join(v.dir, 'dir')), ['new'], 'recreated dir hides the removed lower contents');
    t.is(await readFile(join(v.dir, 'renamed'), 'utf8'), 'm');
    const st = await stat(join(v.dir, 'owned'));
    t.is(st.uid, 1000);
    t.is(st.gid, 1000);
    t.is((await stat(join(v.dir, 'perm'))).mode & 0o777, 0o700, 'permissions survive commit');
  });

  test(`${name}: many layers mount`, async (t) => {
    const c = await setup(t);
    const LAYERS = 20;
    let parent = '';
    for (let i = 0; i < LAYERS; i++) {
      await layer(t, c, `layer-${i}`, parent, async (d) => writeFile(join(d, 'n'), String(i)));
      parent = `layer-${i}`;
    }
    const m = await withMounted(t, c.work, await c.sn.prepare('top', parent));
    t.is(await readFile(join(m.dir, 'n'), 'utf8'), String(LAYERS - 1));
  });

  test(`${name}: close is idempotent and later calls fail`, async (t) => {
    const c = await setup(t);
    await c.sn.prepare('k', '');
    await c.sn.close();
    await c.sn.close();
    await t.throwsAsync(c.sn.stat('k'));
  });
}
