/**
 * `starlight image inspect|toc` end to end: the real CLI (child process) against a real
 * docker-registry on 127.0.0.1. Success output (platform, manifest digest, layers; per-layer TOC) and
 * every bad input of issue 2: unknown image/tag, a blob whose bytes do not match its digest, a
 * truncated gzip layer, a tar entry escaping the root with `../`, an unreachable registry. Bad inputs
 * assert the exit code (src/cli/exit-codes.ts), the `[SL_ERR_…]` code and that stderr names the
 * image or registry.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { buildLayerToc } from '../../src/layers/indexer.js';
import { buildLayer, ociImage, type LayerSpec } from '../../fixtures/image-writer.js';
import { RegistryClient } from '../../src/oci/client.js';
import { pushImage } from '../../fixtures/push-image.js';
import { blobDataPath, freePort, startRegistry } from '../helpers/registry.js';
import { tocEntryFromJson } from '../helpers/tree-shape.js';

const CLI = fileURLToPath(new URL('../../../bin/starlight.js', import.meta.url));
/** Bound for one CLI run, ms (an unreachable registry costs its retries' backoff, ~2 s). */
const CLI_TIMEOUT_MS = 60_000;
const supported = existsSync('/usr/bin/docker-registry');
const reg = supported ? test : test.skip;

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(...args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: CLI_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const payload = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => `line ${i} of the payload\n`).join(''));

const GOOD: LayerSpec[] = [
  {
    compression: 'gzip',
    entries: [
      { path: 'etc', type: 'dir' },
      { path: 'etc/hostname', type: 'reg', content: Buffer.from('cli\n') },
      { path: 'data.txt', type: 'reg', content: payload(20_000) },
    ],
  },
  { compression: 'zstd', entries: [{ path: 'etc/motd', type: 'reg', content: Buffer.from('hi\n') }] },
];

async function push(ref: string, layers: { data: Buffer; mediaType: string }[], diffIDs: string[]) {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: diffIDs } }));
  return pushImage(new RegistryClient(), ref, { config, layers });
}

async function pushSpec(ref: string, specs: LayerSpec[]) {
  const image = await ociImage(specs);
  const pushed = await pushImage(new RegistryClient(), ref, { config: image.config, layers: image.layers.map((l) => ({ data: l.data, mediaType: l.mediaType })) });
  return { image, pushed };
}

/** Asserts a failure: exit code, `[code]` on stderr, and that stderr names `subject` (image or registry). */
function assertFails(t: ExecutionContext, r: CliResult, exit: number, code: string, subject: string): void {
  t.is(r.code, exit, r.stderr);
  t.true(r.stderr.includes(`[${code}]`), `stderr lacks [${code}]: ${r.stderr}`);
  t.true(r.stderr.includes(subject), `stderr does not name ${subject}: ${r.stderr}`);
  t.is(r.stdout, '');
}

reg('image inspect prints platform, manifest digest and layers', async (t) => {
  const r0 = await startRegistry(t);
  const ref = `${r0.host}/cli/good:v1`;
  const { image, pushed } = await pushSpec(ref, GOOD);

  const json = await cli('image', 'inspect', ref, '--json');
  t.is(json.code, 0, json.stderr);
  const doc = JSON.parse(json.stdout) as { reference: string; platform: string; manifestDigest: string; config: { digest: string }; layers: { digest: string; size: number; mediaType: string; diffID: string }[] };
  t.is(doc.reference, ref);
  t.is(doc.platform, 'linux/amd64');
  t.is(doc.manifestDigest, pushed.digest);
  t.is(doc.config.digest, image.configDigest);
  t.deepEqual(
    doc.layers.map((l) => [l.digest, l.size, l.mediaType, l.diffID]),
    image.layers.map((l) => [l.digest, l.size, l.mediaType, l.diffID]),
  );

  const text = await cli('image', 'inspect', ref);
  t.is(text.code, 0, text.stderr);
  t.true(text.stdout.includes(pushed.digest));
  t.true(text.stdout.includes('linux/amd64'));
  for (const l of image.layers) t.true(text.stdout.includes(l.digest));
});

reg('image toc --layer N --json equals the indexer on that blob; misuse is a usage error', async (t) => {
  const r0 = await startRegistry(t);
  const ref = `${r0.host}/cli/good:v1`;
  const { image } = await pushSpec(ref, GOOD);
  for (const [i, l] of image.layers.entries()) {
    const r = await cli('image', 'toc', ref, '--layer', String(i), '--json');
    t.is(r.code, 0, r.stderr);
    const want = await buildLayerToc(Readable.from([l.data]), { mediaType: l.mediaType });
    t.deepEqual((JSON.parse(r.stdout) as Record<string, unknown>[]).map(tocEntryFromJson), want.entries);
  }
  const listing = await cli('image', 'toc', ref);
  t.is(listing.code, 0, listing.stderr);
  t.regex(listing.stdout, /etc\/motd/);
  t.regex(listing.stdout, /data\.txt/);

  const outOfRange = await cli('image', 'toc', ref, '--layer', '2');
  assertFails(t, outOfRange, 64, 'SL_ERR_INVALID_ARGUMENT', '--layer');
  const both = await cli('image', 'toc', ref, '--layer', '0', '--merged');
  assertFails(t, both, 64, 'SL_ERR_INVALID_ARGUMENT', '--merged');
  const unknown = await cli('image', 'frobnicate', ref);
  assertFails(t, unknown, 64, 'SL_ERR_INVALID_ARGUMENT', 'frobnicate');
});

reg('unknown tag and unknown repository: not found, exit 66', async (t) => {
  const r0 = await startRegistry(t);
  await pushSpec(`${r0.host}/cli/good:v1`, GOOD);
  for (const ref of [`${r0.host}/cli/good:nope`, `${r0.host}/cli/absent:v1`]) {
    for (const sub of ['inspect', 'toc']) assertFails(t, await cli('image', sub, ref), 66, 'SL_ERR_OCI_NOT_FOUND', ref);
  }
});

reg('a blob whose bytes do not match its digest: data loss, exit 65', async (t) => {
  const r0 = await startRegistry(t);
  const ref = `${r0.host}/cli/corrupt:v1`;
  const { image } = await pushSpec(ref, GOOD);
  // Flip bytes early in the gzip layer: inflate or the tar checksum break long before the blob ends,
  // and the CLI must still report the digest mismatch (the real cause), not "bad gzip/tar".
  const path = blobDataPath(r0, image.layers[0]!.digest);
  const bytes = await readFile(path);
  for (const i of [40, 200, 1000]) bytes[i] = bytes[i]! ^ 0x5a;
  await writeFile(path, bytes);
  assertFails(t, await cli('image', 'toc', ref, '--merged'), 65, 'SL_ERR_OCI_DIGEST_MISMATCH', ref);
  // inspect reads no layer blob, so it still works
  t.is((await cli('image', 'inspect', ref)).code, 0);
});

reg('a truncated gzip layer: bad compression, exit 65', async (t) => {
  const r0 = await startRegistry(t);
  const ref = `${r0.host}/cli/truncated:v1`;
  const layer = await buildLayer(GOOD[0]!);
  const truncated = layer.data.subarray(0, Math.floor(layer.data.length / 2));
  await push(ref, [{ data: truncated, mediaType: layer.mediaType }], [layer.diffID]);
  assertFails(t, await cli('image', 'toc', ref, '--merged'), 65, 'SL_ERR_IMAGE_BAD_COMPRESSION', ref);
});

reg('a tar entry escaping the root with ../: refused, exit 64', async (t) => {
  const r0 = await startRegistry(t);
  const ref = `${r0.host}/cli/escape:v1`;
  await pushSpec(ref, [
    { compression: 'gzip', entries: [{ path: 'ok', type: 'reg', content: Buffer.from('ok') }] },
    {
      compression: 'gzip',
      entries: [
        { path: 'fine', type: 'reg', content: Buffer.from('fine') },
        { path: 'a/../../etc/evil', type: 'reg', content: Buffer.from('evil') },
      ],
    },
  ]);
  assertFails(t, await cli('image', 'toc', ref, '--merged'), 64, 'SL_ERR_IMAGE_PATH_ESCAPE', ref);
  assertFails(t, await cli('image', 'toc', ref, '--layer', '1'), 64, 'SL_ERR_IMAGE_PATH_ESCAPE', ref);
  t.is((await cli('image', 'toc', ref, '--layer', '0')).code, 0, 'the clean layer alone still lists');
});

test('registry unreachable (closed port): unavailable, exit 69', async (t) => {
  const port = await freePort(); // nothing listens there any more
  const host = `127.0.0.1:${port}`;
  for (const sub of ['inspect', 'toc']) assertFails(t, await cli('image', sub, `${host}/cli/any:v1`), 69, 'SL_ERR_OCI_UNREACHABLE', host);
});
