/**
 * The IMAGE frame (docs/protocol.md "Image first"): the image of the HEADER to come, first in the
 * stream; an ERROR after it ends the stream before any header; an IMAGE that is not the first frame,
 * or one after the header, is malformed; the encoder refuses a header of another image.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { DeltaDecoder, type DeltaEvent, type DeltaHeader, type DeltaImage } from '../../../src/protocol/index.js';
import { imageFrame, preamble } from '../../../src/protocol/frames.js';
import { deltaHeader, identityItems, streamBytes } from '../../helpers/delta-header.js';

const digest = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

const manifest = Buffer.from('{"config":{"digest":"sha256:c"},"layers":[{},{}]}');
const image: DeltaImage = {
  ref: 'registry.test/app:v1',
  platform: 'linux/amd64',
  manifestDigest: digest(manifest),
  manifestMediaType: 'application/vnd.oci.image.manifest.v1+json',
  manifest,
  config: Buffer.from('{"rootfs":{"diff_ids":["sha256:a","sha256:b"]}}'),
  diffIDs: ['sha256:a', 'sha256:b'],
};
const content = Buffer.from('a file');

function header(im: DeltaImage = image): DeltaHeader {
  return { ...deltaHeader(identityItems([content]), 0), ...im, layers: [] };
}

test('IMAGE first, then the HEADER: the image decodes to the fields sent, in any split of the input', async (t) => {
  const bytes = await streamBytes(async (enc) => {
    t.false(enc.started);
    await enc.writeImage(image);
    t.true(enc.started);
    t.false(enc.headerSent);
    await enc.writeHeader(header());
    t.true(enc.headerSent);
    await enc.writeItem(0, content);
    await enc.writeEnd();
  });
  for (let cut = 1; cut < bytes.length; cut += 5) {
    const dec = new DeltaDecoder({ splitFrames: true });
    const evs: DeltaEvent[] = [...dec.push(bytes.subarray(0, cut)), ...dec.push(bytes.subarray(cut))];
    t.deepEqual([...new Set(evs.map((e) => e.type))], ['image', 'header', 'chunk', 'end']);
    const im = (evs[0] as Extract<DeltaEvent, { type: 'image' }>).image;
    t.deepEqual({ ...im, manifest: Buffer.from(im.manifest), config: Buffer.from(im.config) }, image);
  }
});

test('an ERROR frame after the IMAGE frame (the index failed) is the error it carries, resume at item 0', async (t) => {
  const bytes = await streamBytes(async (enc) => {
    await enc.writeImage(image);
    await enc.writeError({ code: 'SL_ERR_OCI_NOT_FOUND', message: 'index app: layer sha256:b: blob not found', detail: { layer: 'sha256:b' } });
  });
  // In one chunk (a failure right after the image resolved): the IMAGE event first, then the error.
  const dec = new DeltaDecoder();
  t.deepEqual(dec.push(bytes).map((e) => e.type), ['image']);
  const err = t.throws(() => dec.finish()) as { code?: string; details?: Record<string, unknown> };
  t.is(err.code, 'SL_ERR_OCI_NOT_FOUND');
  t.is(err.details?.nextItem, 0);
  t.is((t.throws(() => dec.push(Buffer.alloc(1))) as { code?: string }).code, 'SL_ERR_OCI_NOT_FOUND', 'and again at the next push');
  // Frame by frame: the error at the push that brings it.
  const split = new DeltaDecoder();
  const imageEnd = (await streamBytes(async (enc) => enc.writeImage(image))).length; // preamble + IMAGE frame
  t.deepEqual(split.push(bytes.subarray(0, imageEnd)).map((e) => e.type), ['image']);
  t.is((t.throws(() => split.push(bytes.subarray(imageEnd))) as { code?: string }).code, 'SL_ERR_OCI_NOT_FOUND');
});

test('an IMAGE frame after the HEADER, or a second one, is malformed', async (t) => {
  const afterHeader = await streamBytes(async (enc) => {
    await enc.writeHeader(header());
  });
  const dec2 = new DeltaDecoder();
  dec2.push(afterHeader);
  t.is((t.throws(() => dec2.push(imageFrame(image))) as { code?: string }).code, 'SL_ERR_PROTOCOL_MALFORMED');

  // Two IMAGE frames: the second is not first.
  const dec3 = new DeltaDecoder();
  dec3.push(Buffer.concat([preamble(), imageFrame(image)]));
  t.is((t.throws(() => dec3.push(imageFrame(image))) as { code?: string }).code, 'SL_ERR_PROTOCOL_MALFORMED');
});

test('the encoder writes IMAGE only first, and no header of another image after it', async (t) => {
  await streamBytes(async (enc) => {
    await enc.writeImage(image);
    await t.throwsAsync(enc.writeImage(image), { code: 'SL_ERR_INTERNAL' });
    await t.throwsAsync(enc.writeHeader(header({ ...image, manifestDigest: 'sha256:' + 'f'.repeat(64) })), { code: 'SL_ERR_INTERNAL' });
  });
});
