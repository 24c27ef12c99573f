/**
 * The delta stream's HTTP transport (src/worker/stream/http-stream.ts): the body arrives intact
 * whatever the framing (chunked, Content-Length, until close) and however the bytes are split into
 * socket reads; a connection that ends early, malformed framing or a stall is an error, never a
 * short body passed off as complete.
 */
import test from 'ava';
import { createServer as createHttpServer } from 'node:http';
import type { Server, Socket } from 'node:net';
import { streamGet } from '../../../src/worker/stream/http-stream.js';
import { rawHttpServer } from '../../helpers/raw-http-server.js';

/** Deterministic body bytes. */
function bodyBytes(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + 7) & 0xff;
  return b;
}

/** A TCP server answering every connection with `answer(socket)` once the request head is in. */
async function rawServer(answer: (s: Socket) => void): Promise<{ server: Server; url: URL; sockets: Set<Socket> }> {
  const srv = await rawHttpServer((s) => answer(s));
  return { server: srv.server, url: new URL(`${srv.base}/v1/delta?to=x`), sockets: srv.sockets };
}

function stop(srv: { server: Server; sockets: Set<Socket> }): void {
  for (const s of srv.sockets) s.destroy();
  srv.server.close();
}

const opts = { headersTimeoutMs: 10_000, idleTimeoutMs: 10_000, onIdle: () => new Error('stalled') };

async function readAll(body: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of body) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** Writes `bytes` in pieces of the given sizes (cycled), each in its own turn (reads usually see them apart). */
async function writeSplit(s: Socket, bytes: Buffer, sizes: number[]): Promise<void> {
  let off = 0;
  for (let k = 0; off < bytes.length; k++) {
    const n = sizes[k % sizes.length]!;
    s.write(bytes.subarray(off, off + n));
    off += n;
    await new Promise((r) => setImmediate(r));
  }
}

function chunked(body: Buffer, pieces: number[]): Buffer {
  const out: Buffer[] = [];
  let off = 0;
  for (let k = 0; off < body.length; k++) {
    const n = Math.min(pieces[k % pieces.length]!, body.length - off);
    out.push(Buffer.from(`${n.toString(16)}${k % 3 === 0 ? ';ext=1' : ''}\r\n`, 'latin1'), body.subarray(off, off + n), Buffer.from('\r\n'));
    off += n;
  }
  out.push(Buffer.from('0\r\nx-trailer: 1\r\n\r\n'));
  return Buffer.concat(out);
}

test('a chunked body split at every kind of boundary arrives intact, trailers and extensions skipped', async (t) => {
  const body = bodyBytes(50_000);
  const head = Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: x\r\nTransfer-Encoding: chunked\r\nX-Session: abc\r\n\r\n', 'latin1');
  const wire = Buffer.concat([head, chunked(body, [1, 7, 4096, 2, 10_000])]);
  for (const sizes of [[1, 2, 3, 997], [3, 5, 4000], [17, 1500], [wire.length]]) {
    const srv = await rawServer((s) => void writeSplit(s, wire, sizes).then(() => s.end()));
    try {
      const res = await streamGet(srv.url, opts);
      t.is(res.status, 200);
      t.is(res.headers['x-session'], 'abc');
      t.true((await readAll(res.body)).equals(body), `split ${sizes.join(',')}`);
    } finally {
      stop(srv);
    }
  }
});

test('Content-Length and read-until-close bodies arrive intact; a 1xx answer is skipped', async (t) => {
  const body = bodyBytes(20_000);
  const cases = [
    Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`), body]),
    Buffer.concat([Buffer.from('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\n'), body]),
  ];
  for (const wire of cases) {
    const srv = await rawServer((s) => void writeSplit(s, wire, [333, 4000]).then(() => s.end()));
    try {
      const res = await streamGet(srv.url, opts);
      t.is(res.status, 200);
      t.true((await readAll(res.body)).equals(body));
    } finally {
      stop(srv);
    }
  }
});

test('a body cut short, malformed chunk framing or a bad head fails; nothing short passes as complete', async (t) => {
  const body = bodyBytes(10_000);
  const cases: [string, Buffer][] = [
    ['chunked, closed mid-chunk', Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'), chunked(body, [4000]).subarray(0, 5000)])],
    ['chunked, closed before the last chunk', Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'), chunked(body, [4000]).subarray(0, 8200)])],
    ['content-length, closed early', Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length + 1}\r\n\r\n`), body])],
    ['bad chunk size', Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n')],
    ['chunk not followed by CRLF', Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n')],
  ];
  for (const [what, wire] of cases) {
    const srv = await rawServer((s) => void writeSplit(s, wire, [1000]).then(() => s.end()));
    try {
      // Either the request or the body fails (bytes that came with the head are parsed at once).
      const err = await t.throwsAsync(streamGet(srv.url, opts).then((res) => readAll(res.body)), undefined, what);
      // Mid-body failures are typed (the receiver reconnects on them); failures before the head are the caller's to map.
      if ((err as { code?: string }).code !== 'ERR_HTTP_STREAM') t.is((err as { code?: string }).code, 'SL_ERR_PROXY_UNREACHABLE', what);
    } finally {
      stop(srv);
    }
  }
  const bad = await rawServer((s) => s.end('SPDY/9 200 OK\r\n\r\n'));
  try {
    await t.throwsAsync(streamGet(bad.url, opts), { message: /bad status line/ });
  } finally {
    stop(bad);
  }
  const none = await rawServer((s) => s.end());
  try {
    await t.throwsAsync(streamGet(none.url, opts), { message: /closed before a response/ });
  } finally {
    stop(none);
  }
});

test('node:http as the server: request head, status and a streamed chunked body; abort and stall end the body with an error', async (t) => {
  const body = bodyBytes(300_000);
  let seen: { url?: string; auth?: string } = {};
  const server = createHttpServer((req, res) => {
    seen = { url: req.url, auth: req.headers.authorization };
    if (req.url?.startsWith('/stall')) {
      res.writeHead(200);
      res.write(body.subarray(0, 1000));
      return;
    }
    res.writeHead(req.url?.startsWith('/missing') ? 404 : 200, { 'content-type': 'application/octet-stream' });
    for (let off = 0; off < body.length; off += 7000) res.write(body.subarray(off, off + 7000));
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const { port } = server.address() as { port: number };
  const base = `http://127.0.0.1:${port}`;

  const res = await streamGet(new URL(`${base}/v1/delta?to=a%2Fb&have=x`), { ...opts, headers: { authorization: 'Bearer t' } });
  t.is(res.status, 200);
  t.true((await readAll(res.body)).equals(body));
  t.deepEqual(seen, { url: '/v1/delta?to=a%2Fb&have=x', auth: 'Bearer t' });

  const missing = await streamGet(new URL(`${base}/missing`), opts);
  t.is(missing.status, 404);
  t.is((await readAll(missing.body)).length, body.length);

  const stalled = await streamGet(new URL(`${base}/stall`), { ...opts, idleTimeoutMs: 300 });
  let got = 0;
  await t.throwsAsync(
    (async () => {
      for await (const c of stalled.body) got += (c as Buffer).length;
    })(),
    { message: 'stalled' },
  );
  t.is(got, 1000);

  const ac = new AbortController();
  const aborted = await streamGet(new URL(`${base}/stall`), { ...opts, signal: ac.signal });
  const reading = readAll(aborted.body);
  ac.abort();
  await t.throwsAsync(reading);
});
