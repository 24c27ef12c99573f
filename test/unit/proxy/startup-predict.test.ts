/**
 * Startup prediction (src/proxy/startup/): the ELF reader on fixtures it builds (64/32-bit, LE/BE,
 * static, hostile) and on real binaries (the host's, and those of the Debian bench images when
 * /var/cache/starlight/bench-images holds them: skipped with a message otherwise), shebang and PATH
 * resolution on a small tree, and the order predicted for the bench images: the loader, libc and the
 * program's own libraries before anything else.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { TocEntry } from '../../../src/layers/toc.js';
import type { ImageConfig } from '../../../src/oci/types.js';
import { readElf } from '../../../src/proxy/startup/elf.js';
import { bufferReader, readFacts } from '../../../src/proxy/startup/facts.js';
import { type FileFacts, StartupTree, predictStartup, predictWith } from '../../../src/proxy/startup/predict.js';
import { parseShebang, scriptWords } from '../../../src/proxy/startup/script.js';
import { type BenchImage, loadBenchImage, skipReason } from '../../helpers/bench-image-tree.js';
import { buildElf } from '../../helpers/elf-fixture.js';

// ---------------------------------------------------------------------------------------------------
// ELF fixtures

const elfOf = (b: Buffer) => readElf(bufferReader(b), b.length);

for (const [bits, bigEndian] of [[64, false], [64, true], [32, false], [32, true]] as const) {
  test(`readElf: ${bits}-bit ${bigEndian ? 'BE' : 'LE'} interp, needed, runpath, rpath`, async (t) => {
    const got = await elfOf(buildElf({ bits, bigEndian, interp: '/lib/ld.so.1', needed: ['liba.so.1', 'libc.so.6'], runpath: '$ORIGIN/../lib:/opt/x', rpath: '/r' }));
    t.truthy(got);
    t.is(got!.bits, bits);
    t.is(got!.bigEndian, bigEndian);
    t.is(got!.interp, '/lib/ld.so.1');
    t.deepEqual(got!.needed, ['liba.so.1', 'libc.so.6']);
    t.deepEqual(got!.runpath, ['$ORIGIN/../lib', '/opt/x']);
    t.deepEqual(got!.rpath, ['/r']);
  });
}

test('readElf: a static executable has no loader and needs nothing', async (t) => {
  const got = await elfOf(buildElf({ bits: 64, needed: ['ignored.so'], noDynamic: true }));
  t.truthy(got);
  t.is(got!.interp, undefined);
  t.deepEqual(got!.needed, []);
});

test('readElf: hostile or broken input gives undefined or a partial answer, never a throw', async (t) => {
  const good = buildElf({ bits: 64, interp: '/lib/ld.so', needed: ['libc.so.6'] });
  t.is(await elfOf(Buffer.from('#!/bin/sh\n')), undefined, 'not ELF');
  t.is(await elfOf(good.subarray(0, 40)), undefined, 'truncated header');
  const badClass = Buffer.from(good);
  badClass[4] = 9;
  t.is(await elfOf(badClass), undefined, 'unknown class');
  const hugePh = Buffer.from(good);
  hugePh.writeUInt16LE(0xffff, 56);
  t.is(await elfOf(hugePh), undefined, 'phnum past the bound');
  const farPh = Buffer.from(good);
  farPh.writeBigUInt64LE(0xffffffffffffff00n, 32);
  t.is(await elfOf(farPh), undefined, 'phoff past 2^53');
  const farDyn = Buffer.from(good);
  farDyn.writeBigUInt64LE(0x7fff0000n, 64 + 56 * 2 + 8); // PT_DYNAMIC offset beyond the file
  const partial = await elfOf(farDyn);
  t.is(partial?.interp, '/lib/ld.so');
  t.deepEqual(partial?.needed, []);
  const badStr = Buffer.from(good);
  badStr.writeBigUInt64LE(0x12345678n, 0x800 + 8); // DT_NEEDED offset beyond DT_STRSZ
  t.deepEqual((await elfOf(badStr))?.needed, []);
  // Fuzz: random bytes after a valid ident; random flips of a good file.
  for (let i = 0; i < 300; i++) {
    const b = i % 2 === 0 ? Buffer.concat([good.subarray(0, 6), randomBytes(200 + (i % 700))]) : Buffer.from(good);
    if (i % 2 === 1) for (let k = 0; k < 8; k++) b[(i * 7919 + k * 104729) % b.length] = randomBytes(1)[0]!;
    await t.notThrowsAsync(() => elfOf(b));
  }
});

test('readElf: absolute path strings in the read-only data (a printf suffix cut, non-paths dropped)', async (t) => {
  const got = await elfOf(buildElf({ bits: 64, interp: '/lib/ld.so', strings: ['/etc/tool.conf', '/etc/pam.d/%s', 'relative/x', '/bad path', '/usr/share/tool/', 'no', '/etc/tool.conf'] }));
  t.deepEqual(got!.paths, ['/lib/ld.so', '/etc/tool.conf', '/etc/pam.d/', '/usr/share/tool/']);
  t.is((await elfOf(buildElf({ bits: 32, bigEndian: true })))!.paths, undefined, 'no path strings: no list');
});

test('readElf: a path string cut by the 1 MiB read pieces is found whole', async (t) => {
  const big = Buffer.alloc(2 << 20);
  buildElf({ bits: 64 }).copy(big);
  big.writeBigUInt64LE(BigInt(big.length), 64 + 32); // the PT_LOAD covers the whole file
  big.write('\0/etc/cut-across.conf\0', (1 << 20) - 6, 'latin1');
  t.deepEqual((await elfOf(big))!.paths, ['/etc/cut-across.conf']);
});

test('readElf: real binaries of this host (node, /bin/ls) name the loader and libc', async (t) => {
  for (const file of [process.execPath, '/bin/ls']) {
    const b = readFileSync(file);
    const got = await elfOf(b);
    t.truthy(got, file);
    t.regex(got!.interp ?? '', /ld-linux|ld-musl|ld\.so/, file);
    t.true(got!.needed.some((n) => /^libc\.(so|musl)/.test(n)), `${file} needs libc: ${got!.needed.join(',')}`);
  }
});

// ---------------------------------------------------------------------------------------------------
// Scripts

test('parseShebang: Linux semantics (one argument, env, none)', (t) => {
  t.deepEqual(parseShebang(Buffer.from('#!/bin/sh\necho')), { interpreter: '/bin/sh' });
  t.deepEqual(parseShebang(Buffer.from('#! /usr/bin/env  python3 -u\r\n')), { interpreter: '/usr/bin/env', arg: 'python3 -u' });
  t.is(parseShebang(Buffer.from('echo hi')), undefined);
  t.is(parseShebang(Buffer.from('#!')), undefined);
});

test('scriptWords: paths and command words, comments skipped, bounded', (t) => {
  const w = scriptWords('#!/bin/bash\n# comment /not/this\nport=$(cat /app/port)\nexec runuser -u pg -- /usr/lib/pg/$v/bin/postgres -c f=/etc/x.conf\n', true);
  t.deepEqual(w, ['port', 'cat', '/app/port', 'exec', 'runuser', 'u', 'pg', '/usr/lib/pg/$v/bin/postgres', 'c', 'f', '/etc/x.conf'].filter((x) => w.includes(x)));
  t.false(w.includes('/not/this'));
  t.true(w.includes('/usr/lib/pg/$v/bin/postgres'));
  t.deepEqual(scriptWords("open('/app/port').read()", false), ['/app/port']);
  t.true(scriptWords('a '.repeat(100_000), true).length <= 256);
});

// ---------------------------------------------------------------------------------------------------
// A small tree: PATH, symlinks, shebang via env, $ORIGIN, ld.so.conf includes, missing interpreter

const dg = (b: Buffer | string): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

function fixtureTree(files: Record<string, Buffer | string | { link: string }>, execs: string[]): { entries: TocEntry[]; facts: Map<string, Buffer> } {
  const entries = new Map<string, TocEntry>();
  const facts = new Map<string, Buffer>();
  const dir = (p: string): void => {
    if (entries.has(p)) return;
    entries.set(p, { path: p, type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0 });
    if (p !== '') dir(p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '');
  };
  for (const [p, v] of Object.entries(files)) {
    dir(p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '');
    if (typeof v === 'object' && !Buffer.isBuffer(v)) {
      entries.set(p, { path: p, type: 'symlink', mode: 0o777, uid: 0, gid: 0, size: 0, mtime: 0, linkname: v.link });
      continue;
    }
    const b = Buffer.isBuffer(v) ? v : Buffer.from(v);
    entries.set(p, { path: p, type: 'reg', mode: execs.includes(p) ? 0o755 : 0o644, uid: 0, gid: 0, size: b.length, mtime: 0, digest: dg(b) });
    facts.set(dg(b), b);
  }
  return { entries: [...entries.values()].sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path))), facts };
}

async function predictFixture(tree: ReturnType<typeof fixtureTree>, config: ImageConfig['config']) {
  const cfg: ImageConfig = { architecture: 'amd64', os: 'linux', config, rootfs: { type: 'layers', diff_ids: [] } };
  return predictWith(new StartupTree(tree.entries), cfg, (d) => readFacts(bufferReader(tree.facts.get(d)!), tree.facts.get(d)!.length));
}

const LD = '/lib64/ld-linux-x86-64.so.2';

test('predict: shebang via env + PATH + symlinks, loader, $ORIGIN runpath, ld.so.conf include, then process-start files', async (t) => {
  const tree = fixtureTree(
    {
      'app/main.py': "#!/usr/bin/env python3\nopen('/app/data.json')\n",
      'app/data.json': '{}',
      'app/lib/libapp.so': buildElf({ bits: 64, needed: ['libextra.so.1'] }),
      'usr/bin/env': buildElf({ bits: 64, interp: LD, needed: ['libc.so.6'] }),
      'usr/bin/python3': { link: 'python3.11' },
      'usr/bin/python3.11': buildElf({ bits: 64, interp: LD, needed: ['libm.so.6', 'libapp.so'], runpath: '$ORIGIN/../../app/lib' }),
      'lib64/ld-linux-x86-64.so.2': { link: '/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2' },
      'usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2': 'loader bytes',
      'usr/lib/x86_64-linux-gnu/libc.so.6': buildElf({ bits: 64 }),
      'usr/lib/x86_64-linux-gnu/libm.so.6': buildElf({ bits: 64, needed: ['libc.so.6'] }),
      'opt/extra/libextra.so.1': buildElf({ bits: 64 }),
      'etc/ld.so.conf': 'include /etc/ld.so.conf.d/*.conf\n',
      'etc/ld.so.conf.d/extra.conf': '# extra\n/opt/extra\n',
      'etc/ld.so.cache': 'cache',
      'etc/passwd': 'root:x:0:0::/root:/bin/sh\n',
      'etc/unrelated.conf': 'x',
      'usr/lib/python3.11/os.py': 'import sys',
      'usr/lib/python3.11/__pycache__/os.cpython-311.pyc': 'pyc',
      'srv/big.bin': 'b'.repeat(5000),
    },
    ['app/main.py', 'usr/bin/env', 'usr/bin/python3.11'],
  );
  const pr = await predictFixture(tree, { Entrypoint: ['main.py'], WorkingDir: '/app', Env: ['PATH=/app:/usr/bin'] });
  t.deepEqual(pr.need, []);
  const order = pr.files.map((f) => `${f.signal}:${f.path}`);
  t.deepEqual(order.slice(0, 12), [
    'entrypoint:app/main.py',
    'shebang:usr/bin/env',
    'interp:usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2',
    'ld-cache:etc/ld.so.cache',
    'needed-lib:usr/lib/x86_64-linux-gnu/libc.so.6',
    'process-start:etc/passwd',
    'shebang:usr/bin/python3.11',
    'needed-lib:usr/lib/x86_64-linux-gnu/libm.so.6',
    'needed-lib:app/lib/libapp.so',
    'needed-lib:opt/extra/libextra.so.1',
    'argument:app/data.json',
    'home:usr/lib/python3.11/__pycache__/os.cpython-311.pyc',
  ]);
  t.true(pr.files.every((f) => f.path !== 'srv/big.bin'), 'nothing names srv/');
  const rest = pr.files.findIndex((f) => !f.core);
  t.true(pr.files.slice(rest).every((f) => !f.core), 'core files all come before the rest');
});

test('predict: a missing interpreter, a dangling entrypoint and a static binary are handled', async (t) => {
  const tree = fixtureTree(
    {
      'bin/start': '#!/nonexistent/interp\n/bin/tool\n',
      'bin/tool': buildElf({ bits: 64, noDynamic: true }),
      'bin/dangling': { link: '/nowhere' },
    },
    ['bin/start', 'bin/tool'],
  );
  const pr = await predictFixture(tree, { Cmd: ['/bin/start'] });
  t.deepEqual(pr.files.map((f) => `${f.signal}:${f.path}`), ['entrypoint:bin/start', 'script-command:bin/tool']);
  t.deepEqual((await predictFixture(tree, { Cmd: ['dangling'], Env: ['PATH=/bin'] })).files, []);
  t.deepEqual((await predictFixture(tree, {})).files, [], 'no Entrypoint or Cmd: nothing predicted');
});

test('predict: without facts it asks for them (need) and ranks only what it knows', (t) => {
  const tree = fixtureTree({ 'bin/app': buildElf({ bits: 64, interp: LD, needed: ['libc.so.6'] }) }, ['bin/app']);
  const pr = predictStartup(new StartupTree(tree.entries), { architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/app'] }, rootfs: { type: 'layers', diff_ids: [] } }, (): FileFacts | undefined => undefined);
  t.deepEqual(pr.files.map((f) => f.path), ['bin/app']);
  t.deepEqual(pr.need, [tree.entries.find((e) => e.path === 'bin/app')!.digest]);
});

test('predict: files and directories an ELF names by path; plugins bring their libraries; the rest is shallow first across groups', async (t) => {
  const tree = fixtureTree(
    {
      'usr/bin/tool': buildElf({ bits: 64, interp: LD, needed: ['libc.so.6'], strings: ['/etc/tool.conf', '/etc/tool.d', '/usr/share', '/usr/lib/x86_64-linux-gnu', '/srv/huge.db', '/nonexistent'] }),
      'usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2': 'loader bytes',
      'usr/lib/x86_64-linux-gnu/libc.so.6': buildElf({ bits: 64, strings: ['/usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache'] }),
      'usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache': 'cache',
      'usr/lib/x86_64-linux-gnu/libplugdep.so.1': buildElf({ bits: 64 }),
      'usr/lib/x86_64-linux-gnu/libunrelated.so.1': buildElf({ bits: 64 }),
      'etc/tool.conf': 'x=1',
      'etc/tool.d/sub/deep.conf': 'deep',
      'etc/tool.d/plugin.so': buildElf({ bits: 64, needed: ['libplugdep.so.1'], strings: ['/opt/plug/plugin.conf'] }),
      'opt/plug/plugin.conf': 'p',
      'usr/share/unrelated.txt': 'u',
      'srv/huge.db': 'h'.repeat(2 * 1024 * 1024),
      'work/data/top.dat': 'top',
      'work/data/a/b/deep.dat': 'deep',
    },
    ['usr/bin/tool'],
  );
  const pr = await predictFixture(tree, { Entrypoint: ['/usr/bin/tool', '/work/data'] });
  t.deepEqual(pr.need, []);
  const at = (p: string): string | undefined => {
    const f = pr.files.find((x) => x.path === p);
    return f === undefined ? undefined : `${f.signal}${f.core ? '' : ' (rest)'} via ${f.via ?? '-'}`;
  };
  t.is(at('etc/tool.conf'), 'elf-path via usr/bin/tool');
  t.is(at('usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache'), 'elf-path via usr/lib/x86_64-linux-gnu/libc.so.6');
  t.is(at('etc/tool.d/plugin.so'), 'elf-dir (rest) via usr/bin/tool');
  t.is(at('usr/lib/x86_64-linux-gnu/libplugdep.so.1'), 'needed-lib (rest) via etc/tool.d/plugin.so');
  t.is(at('opt/plug/plugin.conf'), 'elf-path (rest) via etc/tool.d/plugin.so');
  t.is(at('srv/huge.db'), undefined, 'a named file over 1 MiB is not ranked');
  t.is(at('usr/share/unrelated.txt'), undefined, 'usr/share is too broad to say anything');
  t.is(at('usr/lib/x86_64-linux-gnu/libunrelated.so.1'), undefined, 'a library directory is not a plugin directory');
  const order = pr.files.map((f) => f.path);
  const idx = (p: string): number => order.indexOf(p);
  t.true(idx('etc/tool.d/plugin.so') < idx('usr/lib/x86_64-linux-gnu/libplugdep.so.1') && idx('usr/lib/x86_64-linux-gnu/libplugdep.so.1') < idx('etc/tool.d/sub/deep.conf'), order.join(' '));
  // Depth 1 of the argument dir before depth 2 of the elf dir, before depth 3 of the argument dir.
  t.true(idx('work/data/top.dat') < idx('etc/tool.d/sub/deep.conf') && idx('etc/tool.d/sub/deep.conf') < idx('work/data/a/b/deep.dat'), order.join(' '));
  const rest = pr.files.findIndex((f) => !f.core);
  t.true(pr.files.slice(rest).every((f) => !f.core), 'core files all come before the rest');
});

// ---------------------------------------------------------------------------------------------------
// Incremental rounds (issue 10): predictWith's answer equals the fixed point of whole walks

/** The fixed point as predictWith found it before issue 10: every round a whole new walk from scratch. */
async function wholeWalkFixedPoint(tree: StartupTree, config: ImageConfig, read: (d: string) => Promise<FileFacts>) {
  const known = new Map<string, FileFacts>();
  let pr = predictStartup(tree, config, (d) => known.get(d));
  for (let round = 1; pr.need.length > 0 && round < 24; round++) {
    for (const d of pr.need) known.set(d, await read(d));
    pr = predictStartup(tree, config, (d) => known.get(d));
  }
  return pr;
}

/**
 * A tree that takes many rounds and exercises every rest group: a script running a program whose
 * libraries chain six deep, plugins (in a directory the program names) that need libraries of their
 * own, a program home and argument directories of files with equal sizes (ties broken by path), with
 * __pycache__ at several depths.
 */
function richTree(seed: number): ReturnType<typeof fixtureTree> {
  let x = seed;
  const rnd = (n: number): number => ((x = (x * 1103515245 + 12345) % 2 ** 31), x % n);
  const libs = 'usr/lib/x86_64-linux-gnu';
  const files: Record<string, Buffer | string | { link: string }> = {
    'start.sh': '#!/bin/sh\nexec /usr/bin/app --data /srv/data /etc/app.conf\ncat /etc/motd\n',
    'bin/sh': buildElf({ bits: 64, interp: LD, needed: ['libc.so.6'] }),
    'bin/cat': buildElf({ bits: 64, interp: LD, needed: ['libc.so.6', 'libchain0.so'] }),
    'usr/bin/app': buildElf({ bits: 64, interp: LD, needed: ['libchain0.so', 'libc.so.6'], strings: ['/etc/app.d', '/etc/app.conf', '/usr/share/app'] }),
    [`${libs}/ld-linux-x86-64.so.2`]: 'loader bytes',
    'lib64/ld-linux-x86-64.so.2': { link: `/${libs}/ld-linux-x86-64.so.2` },
    [`${libs}/libc.so.6`]: buildElf({ bits: 64, strings: ['/etc/nsswitch.conf'] }),
    'etc/ld.so.cache': 'cache',
    'etc/ld.so.conf': 'include /etc/ld.so.conf.d/*.conf\n',
    'etc/ld.so.conf.d/opt.conf': '/opt/lib\n',
    'etc/passwd': 'root:x:0:0::/root:/bin/sh\n',
    'etc/nsswitch.conf': 'passwd: files\n',
    'etc/app.conf': 'plugins=/etc/app.d\n',
    'etc/motd': 'hi',
  };
  for (let k = 0; k < 6; k++) files[`${k % 2 === 0 ? libs : 'opt/lib'}/libchain${k}.so`] = buildElf({ bits: 64, needed: k < 5 ? [`libchain${k + 1}.so`] : ['libc.so.6'] });
  for (let k = 0; k < 12; k++) {
    files[`etc/app.d/plugin${String(k).padStart(2, '0')}.so`] = buildElf({ bits: 64, needed: [`libplug${k % 5}.so`, 'libchain3.so'], runpath: '$ORIGIN', strings: [`/etc/plug/p${k}.conf`] });
    files[`etc/plug/p${k}.conf`] = 'c'.repeat(1 + rnd(3));
  }
  // Some plugin libraries beside the plugins (taken by the elf-dir group already), some in the lib dir.
  for (let k = 0; k < 5; k++) files[`${k < 2 ? 'etc/app.d' : libs}/libplug${k}.so`] = buildElf({ bits: 64, needed: [`libplugdep${k}.so`] });
  for (let k = 0; k < 5; k++) files[`opt/lib/libplugdep${k}.so`] = buildElf({ bits: 64 });
  for (const root of ['usr/share/app', 'srv/data', 'usr/lib/app']) {
    for (let k = 0; k < 60; k++) {
      const depth = rnd(4);
      const dir = [root, ...Array.from({ length: depth }, (_, i) => (rnd(3) === 0 ? '__pycache__' : `d${i}${rnd(2)}`))].join('/');
      files[`${dir}/f${k}.${rnd(2) === 0 ? 'pyc' : 'dat'}`] = 'z'.repeat(1 + rnd(6) * 100);
    }
  }
  return fixtureTree(files, ['start.sh', 'bin/sh', 'bin/cat', 'usr/bin/app']);
}

test('predictWith: the incremental rounds give the whole-walk fixed point, file for file (generated trees)', async (t) => {
  for (const seed of [1, 7, 42, 1234]) {
    const tree = richTree(seed);
    const cfg: ImageConfig = { architecture: 'amd64', os: 'linux', config: { Entrypoint: ['/start.sh'], Env: ['PATH=/usr/bin:/bin'] }, rootfs: { type: 'layers', diff_ids: [] } };
    const read = (d: string): Promise<FileFacts> => readFacts(bufferReader(tree.facts.get(d)!), tree.facts.get(d)!.length);
    const st = new StartupTree(tree.entries);
    const want = await wholeWalkFixedPoint(st, cfg, read);
    const got = await predictWith(st, cfg, read);
    t.deepEqual(got.files, want.files, `seed ${seed}`);
    t.deepEqual(got.need, []);
    t.true(got.rounds > 1, `several rounds (${got.rounds})`);
    const signals = new Set(got.files.map((f) => `${f.signal}${f.core ? '' : ' (rest)'}`));
    for (const s of ['needed-lib (rest)', 'elf-path (rest)', 'elf-dir (rest)', 'home (rest)', 'argument-dir (rest)']) t.true(signals.has(s), `seed ${seed}: ${s} in ${[...signals].join(', ')}`);
  }
});

// ---------------------------------------------------------------------------------------------------
// The Debian bench images (real binaries)

/** Per image: the program its start script runs (resolved path) and libraries it alone needs. */
const BENCH: Record<string, { program: string; ownLibs: RegExp[] }> = {
  'python-web': { program: 'usr/bin/python3.11', ownLibs: [/libexpat\.so/, /libz\.so/] },
  redis: { program: 'usr/bin/redis-check-rdb', ownLibs: [/libjemalloc\.so/, /liblzf\.so/] },
  nginx: { program: 'usr/sbin/nginx', ownLibs: [/libpcre2-8\.so/, /libcrypt\.so/] },
  'node-app': { program: 'usr/bin/node', ownLibs: [/libnode\.so/, /libuv\.so/] },
  postgres: { program: 'usr/lib/postgresql/15/bin/postgres', ownLibs: [/libpq|libxml2\.so/, /libicuuc\.so/] },
};

/** The bench image, closed at teardown; undefined (the test passes with a log line) when it is not built. */
async function benchImageOrSkip(t: ExecutionContext, name: string): Promise<BenchImage | undefined> {
  const why = skipReason(name);
  if (why !== undefined) {
    t.log(`skipped: ${why}`);
    t.pass();
    return undefined;
  }
  const img = await loadBenchImage(name);
  t.teardown(() => img.close());
  return img;
}

async function benchPrediction(img: BenchImage) {
  const byDigest = new Map(img.merged.entries.filter((e) => e.digest !== undefined).map((e) => [e.digest!, e]));
  return predictWith(new StartupTree(img.merged.entries), img.config, (d) => readFacts(img.reader(byDigest.get(d)!.path), byDigest.get(d)!.size));
}

for (const [name, want] of Object.entries(BENCH)) {
  test.serial(`bench image ${name}: ${want.program} is ELF with the system loader; it, the loader, libc and its own libraries come before anything else`, async (t) => {
    const why = skipReason(name);
    if (why !== undefined) {
      t.log(`skipped: ${why}`);
      t.pass();
      return;
    }
    const img = await loadBenchImage(name);
    t.teardown(() => img.close());
    const entry = img.merged.entries.find((e) => e.path === want.program)!;
    t.truthy(entry, `${want.program} in the image`);
    const elf = await readElf(img.reader(want.program), entry.size);
    t.is(elf?.interp, LD);
    t.true(elf!.needed.includes('libc.so.6') || elf!.needed.some((n) => n.startsWith('libnode')), elf!.needed.join(','));

    const pr = await benchPrediction(img);
    t.deepEqual(pr.need, []);
    const rank = (re: RegExp | string): number => pr.files.findIndex((f) => (typeof re === 'string' ? f.path === re : re.test(f.path)));
    const firstRest = pr.files.findIndex((f) => !f.core);
    const bound = firstRest < 0 ? pr.files.length : firstRest;
    const must = [want.program, 'usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 'usr/lib/x86_64-linux-gnu/libc.so.6', 'etc/ld.so.cache', ...want.ownLibs];
    for (const m of must) {
      const r = rank(m);
      t.true(r >= 0 && r < bound, `${String(m)} ranked among the core files (rank ${r}, first non-core ${bound})`);
    }
    t.is(pr.files[0]!.path, 'app/start.sh', 'the entrypoint first');
    // Every library the program needs directly is ranked (found through the multiarch dirs).
    for (const n of elf!.needed) t.true(pr.files.some((f) => f.signal === 'needed-lib' && (f.path.endsWith(`/${n}`) || f.path.includes(`/${n}.`))), `${n} resolved`);
  });
}

test.serial('bench images: predictWith\'s incremental rounds give the whole-walk fixed point, file for file', async (t) => {
  for (const name of Object.keys(BENCH)) {
    const img = await benchImageOrSkip(t, name);
    if (img === undefined) continue;
    const byDigest = new Map(img.merged.entries.filter((e) => e.digest !== undefined).map((e) => [e.digest!, e]));
    const read = (d: string): Promise<FileFacts> => readFacts(img.reader(byDigest.get(d)!.path), byDigest.get(d)!.size);
    const tree = new StartupTree(img.merged.entries);
    const want = await wholeWalkFixedPoint(tree, img.config, read);
    const got = await predictWith(tree, img.config, read);
    t.deepEqual(want.need, [], name);
    t.is(got.files.length, want.files.length, name);
    const firstDiff = got.files.findIndex((f, i) => JSON.stringify(f) !== JSON.stringify(want.files[i]));
    t.is(firstDiff, -1, `${name}: first difference at rank ${firstDiff}`);
  }
});

test.serial('bench image: a statically linked binary (ldconfig) is ELF without loader or libraries', async (t) => {
  const why = skipReason('redis');
  if (why !== undefined) {
    t.log(`skipped: ${why}`);
    t.pass();
    return;
  }
  const img = await loadBenchImage('redis');
  t.teardown(() => img.close());
  const e = img.merged.entries.find((x) => x.path === 'usr/sbin/ldconfig')!;
  const elf = await readElf(img.reader(e.path), e.size);
  t.truthy(elf);
  t.is(elf!.interp, undefined);
  t.deepEqual(elf!.needed, []);
});

test.serial('bench image postgres: what runuser (PAM), libc (gconv) and postgres (its share dir) name by path is ranked before the planner\'s rest', async (t) => {
  const img = await benchImageOrSkip(t, 'postgres');
  if (img === undefined) return;
  const pam = img.merged.entries.find((e) => e.path === 'usr/lib/x86_64-linux-gnu/libpam.so.0.85.1')!;
  const elf = await readElf(img.reader(pam.path), pam.size);
  t.true(elf!.paths!.includes('/etc/pam.d/'), elf!.paths!.join(' '));
  const pr = await benchPrediction(img);
  t.deepEqual(pr.need, []);
  const sig = (p: string): string | undefined => pr.files.find((f) => f.path === p)?.signal;
  // Files the container reads before it is ready (strace of its start) that only these signals find.
  t.is(sig('usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache'), 'elf-path');
  t.is(sig('etc/login.defs'), 'elf-path');
  t.is(sig('etc/pam.d/runuser'), 'elf-dir');
  t.is(sig('usr/lib/x86_64-linux-gnu/security/pam_unix.so'), 'elf-dir');
  t.is(sig('usr/lib/x86_64-linux-gnu/libcrypt.so.1.1.0'), 'needed-lib', 'pam_unix.so needs libcrypt');
  t.is(sig('usr/share/postgresql/15/timezonesets/Default'), 'elf-dir');
  t.is(sig('etc/ssl/openssl.cnf'), 'elf-dir', 'libcrypto names /usr/lib/ssl; openssl.cnf is a link there');
  t.is(sig('usr/share/locale/locale.alias') ?? sig('etc/locale.alias'), 'locale');
  const rank = (p: string): number => pr.files.findIndex((f) => f.path === p);
  t.true(rank('var/lib/postgresql/15/main/global/pg_control') < rank('usr/lib/postgresql/15/lib/plpgsql.so'), 'the data dir\'s top files before libraries deep in another dir');
});

test.serial('bench image node-app: the JS files libnode (47 MB) names by path are ranked among the core files', async (t) => {
  const img = await benchImageOrSkip(t, 'node-app');
  if (img === undefined) return;
  const pr = await benchPrediction(img);
  for (const p of ['usr/share/nodejs/cjs-module-lexer/lexer.js', 'usr/share/nodejs/acorn/dist/acorn.js', 'usr/share/nodejs/undici/undici-fetch.js']) {
    const f = pr.files.find((x) => x.path === p);
    t.is(f?.signal, 'elf-path', p);
    t.true(f!.core, p);
    t.regex(f!.via ?? '', /libnode\.so/);
  }
});
