/**
 * StartupService.factsSink (issue 10): the facts a layer pass learns from the bytes going by give the
 * same prediction as reading the staged files afterwards, with no read rounds left for the files it
 * saw (ELF objects, `#!` scripts, executables); other files are not held.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mergeLayers } from '../../../src/layers/merge.js';
import { TOC_VERSION, type TocEntry } from '../../../src/layers/toc.js';
import { createLogger } from '../../../src/log.js';
import { StartupService } from '../../../src/proxy/startup-service.js';
import { bufferReader, piecesReader } from '../../../src/proxy/startup/facts.js';
import { buildElf } from '../../helpers/elf-fixture.js';
import { tempDir } from '../../helpers/tmp.js';

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

const files: [string, number, Buffer][] = [
  ['app/run', 0o755, Buffer.from('#!/bin/sh\nexec /usr/bin/prog /app/data.conf\n')],
  ['bin/sh', 0o755, buildElf({ bits: 64, interp: '/lib64/ld-linux-x86-64.so.2', needed: ['libc.so.6'] })],
  ['usr/bin/prog', 0o755, buildElf({ bits: 64, interp: '/lib64/ld-linux-x86-64.so.2', needed: ['libprog.so.1', 'libc.so.6'], strings: ['/usr/share/prog/table.dat'] })],
  ['usr/lib/x86_64-linux-gnu/libprog.so.1', 0o644, buildElf({ bits: 64, needed: ['libc.so.6'] })],
  ['usr/lib/x86_64-linux-gnu/libc.so.6', 0o644, buildElf({ bits: 64 })],
  ['lib64/ld-linux-x86-64.so.2', 0o755, buildElf({ bits: 64 })],
  ['usr/share/prog/table.dat', 0o644, Buffer.from('table')],
  ['app/data.conf', 0o644, Buffer.from('key = value\n')],
  ['usr/share/doc/readme', 0o644, Buffer.from('plain text that nobody executes')],
];

function image(): { entries: TocEntry[]; blob: Buffer; at: Map<string, number> } {
  const entries: TocEntry[] = [];
  const at = new Map<string, number>();
  const parts: Buffer[] = [];
  let off = 0;
  for (const [path, mode, b] of files) {
    entries.push({ path, type: 'reg', mode, uid: 0, gid: 0, size: b.length, mtime: 0, digest: sha(b) });
    at.set(sha(b), off);
    parts.push(b);
    off += b.length;
  }
  return { entries, blob: Buffer.concat(parts), at };
}

async function predict(t: { teardown: (f: () => void) => void }, feed: boolean): Promise<{ files: string[]; reads: number }> {
  const { entries, blob, at } = image();
  const stageFile = join(tempDir(t as never), 'stage');
  writeFileSync(stageFile, blob);
  const logs: { msg: string; reads?: number }[] = [];
  const svc = new StartupService({
    cache: { has: () => false, pathOf: () => '/nonexistent' },
    store: { content: () => undefined },
    // The staged bytes: what a prediction reads when it has no facts yet.
    staging: { lookup: (d) => (at.has(d) ? { path: stageFile, offset: at.get(d)!, size: entries.find((e) => e.digest === d)!.size } : undefined) },
    logger: createLogger({ level: 'info', sink: (l) => logs.push(JSON.parse(l) as { msg: string; reads?: number }) }),
  });
  if (feed) {
    for (const e of entries) {
      const sink = svc.factsSink({ path: e.path, size: e.size, mode: e.mode });
      if (sink === undefined) continue;
      const b = files.find(([p]) => p === e.path)![2];
      // 3-byte pieces: the ELF magic is split across pieces.
      for (let i = 0; i < b.length; i += 3) void sink.write(b.subarray(i, i + 3));
      sink.end?.({ ...e });
    }
    await new Promise((r) => setImmediate(r));
  }
  const merged = mergeLayers([{ version: TOC_VERSION, diffID: 'sha256:' + '0'.repeat(64), uncompressedSize: blob.length, entries }]);
  const pr = await svc.ensure({ manifestDigest: 'sha256:' + '1'.repeat(64), config: { architecture: 'amd64', os: 'linux', config: { Entrypoint: ['/app/run'] }, rootfs: { type: 'layers', diff_ids: [] } } as never, merged });
  const line = logs.find((l) => l.msg === 'startup-predicted')!;
  return { files: pr.files.map((f) => f.path), reads: line.reads! };
}

test('facts learned in the pass give the read prediction, without reading the files it saw', async (t) => {
  const read = await predict(t, false);
  const fed = await predict(t, true);
  t.true(read.files.includes('usr/lib/x86_64-linux-gnu/libprog.so.1'), 'the reading prediction follows the ELF chain');
  t.true(read.reads >= 4, `the reading prediction read files (${read.reads})`);
  t.deepEqual(fed.files, read.files, 'same prediction');
  // Only app/data.conf (a non-executable argument) is left to read.
  t.log(`reads: ${read.reads} without, ${fed.reads} with the facts of the pass`);
  t.true(fed.reads <= 1, `reads left: ${fed.reads}`);
});

test('factsSink takes no empty file', (t) => {
  const svc = new StartupService({ cache: { has: () => false, pathOf: () => '' }, store: { content: () => undefined } });
  t.is(svc.factsSink({ path: 'x', size: 0, mode: 0o755 }), undefined);
});

test('piecesReader reads any range of the pieces as bufferReader reads the whole', async (t) => {
  const whole = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 7) & 0xff));
  const pieces = [whole.subarray(0, 1), whole.subarray(1, 4), whole.subarray(4, 300), whole.subarray(300, 301), whole.subarray(301)];
  const a = piecesReader(pieces);
  const b = bufferReader(whole);
  for (const [off, len] of [[0, 1], [0, 4], [2, 5], [3, 297], [299, 3], [300, 1], [301, 699], [10, 5000], [999, 1], [1000, 1], [5, 0]] as const) {
    t.deepEqual(await a(off, len), len === 0 ? undefined : await b(off, len), `range ${off}+${len}`);
  }
});
