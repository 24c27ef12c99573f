import test from 'ava';
import { hasCode } from '../../../src/errors.js';
import { formatPlatform, hostPlatform, normalizePlatform, parsePlatform, platformEquals, selectPlatform } from '../../../src/oci/platform.js';
import type { Descriptor, Platform } from '../../../src/oci/types.js';

function entry(n: number, platform?: Platform): Descriptor {
  const d: Descriptor = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${String(n).repeat(64).slice(0, 64)}`, size: 1 };
  if (platform) d.platform = platform;
  return d;
}

test('parsePlatform normalizes names', (t) => {
  t.deepEqual(parsePlatform('linux/amd64'), { os: 'linux', architecture: 'amd64' });
  t.deepEqual(parsePlatform('linux/x86_64'), { os: 'linux', architecture: 'amd64' });
  t.deepEqual(parsePlatform('linux/aarch64'), { os: 'linux', architecture: 'arm64' });
  t.deepEqual(parsePlatform('linux/arm64/8'), { os: 'linux', architecture: 'arm64', variant: 'v8' });
  t.deepEqual(parsePlatform('linux/armhf'), { os: 'linux', architecture: 'arm', variant: 'v7' });
  t.deepEqual(parsePlatform('Linux/ARM/7'), { os: 'linux', architecture: 'arm', variant: 'v7' });
  t.is(parsePlatform('linux').architecture, hostPlatform().architecture);
  t.is(formatPlatform(parsePlatform('linux/arm/v6')), 'linux/arm/v6');
  for (const s of ['', 'linux/amd64/v1/x', 'linux//amd64', 'linux/amd 64']) {
    t.true(hasCode(t.throws(() => parsePlatform(s)), 'SL_ERR_INVALID_ARGUMENT'), s);
  }
});

test('hostPlatform maps process.arch', (t) => {
  const p = hostPlatform();
  t.is(p.os, process.platform);
  const expected: Record<string, string> = { x64: 'amd64', arm64: 'arm64', ia32: '386' };
  if (expected[process.arch]) t.is(p.architecture, expected[process.arch]);
  else t.truthy(p.architecture);
});

test('arm64 without variant equals arm64/v8; default variants fill in', (t) => {
  t.true(platformEquals({ os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 'arm64', variant: 'v8' }));
  t.true(platformEquals({ os: 'linux', architecture: 'arm' }, { os: 'linux', architecture: 'arm', variant: 'v7' }));
  t.false(platformEquals({ os: 'linux', architecture: 'arm64', variant: 'v9' }, { os: 'linux', architecture: 'arm64' }));
  t.false(platformEquals({ os: 'linux', architecture: 'amd64' }, { os: 'windows', architecture: 'amd64' }));
  t.deepEqual(normalizePlatform({ os: 'linux', architecture: 'aarch64', variant: 'v8' }), { os: 'linux', architecture: 'arm64', variant: 'v8' });
});

test('selectPlatform picks exact, then best compatible, skipping entries without platform', (t) => {
  const amd = entry(1, { os: 'linux', architecture: 'amd64' });
  const arm64 = entry(2, { os: 'linux', architecture: 'arm64', variant: 'v8' });
  const armv6 = entry(3, { os: 'linux', architecture: 'arm', variant: 'v6' });
  const armv7 = entry(4, { os: 'linux', architecture: 'arm', variant: 'v7' });
  const attestation = entry(5, { os: 'unknown', architecture: 'unknown' });
  const list = [attestation, entry(6), amd, armv6, armv7, arm64];
  t.is(selectPlatform(list, { os: 'linux', architecture: 'amd64' }), amd);
  t.is(selectPlatform(list, { os: 'linux', architecture: 'arm64' }), arm64);
  t.is(selectPlatform(list, { os: 'linux', architecture: 'arm', variant: 'v7' }), armv7);
  t.is(selectPlatform([armv6, amd], { os: 'linux', architecture: 'arm', variant: 'v7' }), armv6, 'v7 runs v6');
  t.is(selectPlatform([armv7], { os: 'linux', architecture: 'arm', variant: 'v6' }), undefined, 'v6 cannot run v7');
  t.is(selectPlatform([armv7, armv6], { os: 'linux', architecture: 'arm64' }), armv7, 'arm64 falls back to arm/v7');
  t.is(selectPlatform([amd], { os: 'linux', architecture: 's390x' }), undefined);
  const amdV2 = entry(7, { os: 'linux', architecture: 'amd64', variant: 'v2' });
  t.is(selectPlatform([amd, amdV2], { os: 'linux', architecture: 'amd64', variant: 'v3' }), amdV2);
  t.is(selectPlatform([amdV2], { os: 'linux', architecture: 'amd64' }), undefined, 'v1 host cannot run v2');
});
