/**
 * Early items (src/proxy/early-items.ts, session/early-sender.ts): the per-path rank from the image
 * config, the feed's order and byte bound, and the header without the delivered items.
 */
import test from 'ava';
import { brotliDecompressSync } from 'node:zlib';
import { EarlyFeed, EarlyRank } from '../../../src/proxy/early-items.js';
import { withoutDelivered } from '../../../src/proxy/session/early-sender.js';
import type { DeltaHeader } from '../../../src/protocol/index.js';
import type { ImageConfig } from '../../../src/oci/types.js';

const config: ImageConfig = {
  architecture: 'amd64',
  os: 'linux',
  config: { Entrypoint: ['/usr/local/bin/python3'], Cmd: ['app.py'], WorkingDir: '/app' },
  rootfs: { type: 'layers', diff_ids: [] },
};

test('rank: loader, libc and the entrypoint first; its library and the workdir; top-level compiled modules; other libraries; the rest not at all', (t) => {
  const er = new EarlyRank(config);
  const rank = (p: string, size: number): number | undefined => er.rank(p, size);
  const tierOf = (p: string, size = 1000): number | undefined => {
    const r = rank(p, size);
    return r === undefined ? undefined : Math.floor(r / 2 ** 32);
  };
  t.is(tierOf('lib64/ld-linux-x86-64.so.2'), 0);
  t.is(tierOf('usr/lib/x86_64-linux-gnu/libc.so.6'), 0);
  t.is(tierOf('usr/local/bin/python3'), 0);
  t.is(tierOf('usr/local/lib/libpython3.11.so.1.0'), 1);
  t.is(tierOf('app/app.py'), 1);
  t.is(tierOf('usr/local/lib/python3.11/__pycache__/os.cpython-311.pyc'), 2);
  t.is(tierOf('usr/local/lib/python3.11/encodings/__pycache__/utf_8.cpython-311.pyc'), 2);
  t.is(tierOf('usr/local/lib/python3.11/site-packages/x/__pycache__/y.cpython-311.pyc'), undefined);
  t.is(tierOf('usr/lib/x86_64-linux-gnu/libz.so.1.2.13'), 3);
  t.is(tierOf('usr/lib/x86_64-linux-gnu/gconv/BIG5.so'), undefined, 'not in subdirectories of the lib dirs');
  t.is(tierOf('usr/lib/x86_64-linux-gnu/libbig.so.1', 2 * 1024 * 1024), undefined);
  t.is(tierOf('usr/share/doc/readme.txt'), undefined);
  t.is(tierOf('usr/lib/x86_64-linux-gnu/libc.so.6', 64 * 1024 * 1024), undefined, 'larger than one EARLY frame');
  t.true(rank('usr/lib/x86_64-linux-gnu/libc.so.6', 10)! < rank('usr/lib/x86_64-linux-gnu/libc.so.6', 20)!, 'small first within a tier');
});

test('rank: a first-tier script names more first-tier commands and paths; the directory of the entrypoint is tier 1', (t) => {
  const er = new EarlyRank({ ...config, config: { Entrypoint: ['/srv/start.sh'], WorkingDir: '/' } });
  const tierOf = (p: string): number | undefined => {
    const r = er.rank(p, 100);
    return r === undefined ? undefined : Math.floor(r / 2 ** 32);
  };
  t.is(tierOf('srv/start.sh'), 0);
  t.is(tierOf('srv/server.py'), 1);
  t.is(tierOf('usr/bin/bash'), undefined);
  t.is(tierOf('srv/run'), 1);
  er.learnScript('usr/share/not-first.sh', Buffer.from('#!/bin/sh\nexec /usr/bin/evil\n'));
  t.is(tierOf('usr/bin/evil'), undefined, 'only first-tier scripts teach');
  er.learnScript('srv/start.sh', Buffer.from('#!/bin/bash\nport=$(cat /srv/port)\n/srv/run &\n'));
  t.is(tierOf('usr/bin/bash'), 0);
  t.is(tierOf('bin/cat'), 0);
  t.is(tierOf('srv/run'), 0);
  er.learnScript('srv/run', Buffer.from('#!/bin/sh\nexec python3 /srv/server.py\n'));
  t.is(tierOf('usr/bin/python3'), 0);
  t.is(tierOf('srv/server.py'), 0);
});

test('feed: best rank first, each digest once per stream, bounded bytes (worse evicted), nothing after close', async (t) => {
  const feed = new EarlyFeed(3500);
  feed.configure(config, 'sha256:m');
  const stop = new AbortController();
  const sent = new Set<string>();
  const waiting = feed.next(sent, stop.signal); // waits for an offer
  feed.offer('sha256:lib', 'usr/lib/x86_64-linux-gnu/libz.so.1', Buffer.alloc(1000, 1));
  t.is((await waiting)!.digest, 'sha256:lib');
  feed.offer('sha256:doc', 'usr/share/doc/x', Buffer.alloc(10)); // not wanted
  feed.offer('sha256:libc', 'usr/lib/x86_64-linux-gnu/libc.so.6', Buffer.from('libc '.repeat(300)));
  feed.offer('sha256:pyc', 'usr/local/lib/python3.11/__pycache__/os.cpython-311.pyc', Buffer.alloc(1000, 2));
  // Over the 3500-byte bound: the worst-ranked (the tier 3 library) makes room for the loader.
  feed.offer('sha256:ld', 'lib64/ld-linux-x86-64.so.2', Buffer.alloc(900, 3));
  const order: string[] = [];
  for (;;) {
    const c = await feed.next(sent, stop.signal);
    if (c === undefined) break;
    order.push(c.digest);
    sent.add(c.digest);
    if (order.length === 2) {
      // Another stream of the same image, after the loader: the same content, encoded once.
      const libc = await (await feed.next(new Set(['sha256:ld']), stop.signal))!.encoded();
      t.is(libc.encoding, 'br');
      t.is(brotliDecompressSync(libc.data).toString(), 'libc '.repeat(300));
      feed.close();
    }
  }
  t.deepEqual(order, ['sha256:ld', 'sha256:libc'], 'the pyc is left to the plan: the passes ended');
  t.is(await feed.next(new Set(), stop.signal), undefined);
  const open = new EarlyFeed();
  open.configure(config, 'sha256:m');
  const stop2 = new AbortController();
  const waiting2 = open.next(new Set(), stop2.signal);
  stop2.abort();
  t.is(await waiting2, undefined, 'stop ends a wait');
});

test('withoutDelivered: the delivered items leave the table and the sources, deferred indices follow', (t) => {
  const item = (d: string) => ({ digest: d, size: 1, encodedSize: 1, encoding: 'identity' as const });
  const h = { items: [item('a'), item('b'), item('c'), item('d')], firstItem: 0, deferred: [0, 1, 3] } as unknown as DeltaHeader;
  const r = withoutDelivered(h, ['L0', 'L1', 'L2', 'L3'], new Set(['b', 'x']));
  t.deepEqual(
    r.header.items.map((i) => i.digest),
    ['a', 'c', 'd'],
  );
  t.deepEqual(r.sources, ['L0', 'L2', 'L3']);
  t.deepEqual(r.header.deferred, [0, 2]);
  t.is(withoutDelivered(h, ['L0', 'L1', 'L2', 'L3'], new Set()).header, h);
  t.is(withoutDelivered(h, ['L0', 'L1', 'L2', 'L3'], new Set(['a', 'b', 'd'])).header.deferred, undefined);
});
