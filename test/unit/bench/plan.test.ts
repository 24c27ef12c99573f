import test from 'ava';
import { containerdConfig } from '../../../bench/drivers/containerd.js';
import { mountPointsUnder } from '../../../src/worker/fs/mount-table.js';
import type { BenchImage } from '../../../bench/drivers/types.js';
import { parseOptions, planTrials } from '../../../bench/run.js';

function image(name: string): BenchImage {
  const v = { tag: 'v1', digest: 'sha256:1', ready: 'ready', layers: [] };
  return { name, repository: `bench/${name}`, versions: { v1: v, v2: { ...v, tag: 'v2' } }, hasPython: false };
}

const shared = { registry: '127.0.0.1:5000', workDir: '/tmp/x' };

test('default options: 5 images, RTT 0 and 150, 100mbit, both scenarios, every mode incl. the three starlight modes', (t) => {
  const o = parseOptions([]);
  if (o === 'help') return t.fail();
  t.deepEqual(o.images, ['python-web', 'redis', 'nginx', 'postgres', 'node-app']);
  t.deepEqual(o.rtts, [0, 150]);
  t.deepEqual(o.bandwidths, [100e6]);
  t.deepEqual(o.scenarios, ['fresh', 'update']);
  t.deepEqual(o.modes.map((m) => m.name), ['overlayfs', 'estargz', 'starlight', 'starlight-cold', 'starlight+prior', 'starlight+traces', 'download-only']);
});

test('bad options fail with SL_ERR_INVALID_ARGUMENT', (t) => {
  for (const argv of [['--rtt', '-1'], ['--rtt=-1'], ['--bogus'], ['--modes', 'nope'], ['--images', 'nope'], ['--runs', '0'], ['--scenarios', 'warm'], ['--trial-timeout', '0']]) {
    t.is(t.throws(() => parseOptions(argv))?.['code' as keyof Error], 'SL_ERR_INVALID_ARGUMENT' as never, argv.join(' '));
  }
});

test('plan: modes innermost, runs inside each link/scenario; overhead at RTT 0 without download-only', (t) => {
  const o = parseOptions(['--images', 'python-web', '--rtt', '0,150', '--runs', '2', '--modes', 'overlayfs,starlight,download-only', '--overhead']);
  if (o === 'help') return t.fail();
  const plan = planTrials(o, [image('python-web')], o.modes.map((m) => m.name), shared);
  const startup = plan.filter((p) => p.workload === 'startup');
  t.is(startup.length, 2 * 2 * 2 * 3);
  t.deepEqual(startup.slice(0, 6).map((p) => `${p.rttMs}/${p.scenario}/${p.run}/${p.mode}`), [
    '0/fresh/1/overlayfs', '0/fresh/1/starlight', '0/fresh/1/download-only',
    '0/fresh/2/overlayfs', '0/fresh/2/starlight', '0/fresh/2/download-only',
  ]);
  const over = plan.filter((p) => p.workload === 'overhead');
  t.is(over.length, 2 * 2);
  t.true(over.every((p) => p.rttMs === 0 && p.bandwidthBps === 0 && p.mode !== 'download-only'));
  // Counterbalanced: a load ramp during the run does not always penalise the same mode.
  t.deepEqual(over.map((p) => `${p.run}/${p.mode}`), ['1/overlayfs', '1/starlight', '2/starlight', '2/overlayfs']);
});

test('containerd config: private root/state/sockets under dir, CRI off, one proxy plugin per snapshotter', (t) => {
  const c = containerdConfig('/tmp/slb-x/cd', { starlight: '/tmp/slb-x/w/s.sock' });
  t.regex(c, /^version = 2$/m);
  t.regex(c, /^root = "\/tmp\/slb-x\/cd\/root"$/m);
  t.regex(c, /^state = "\/tmp\/slb-x\/cd\/state"$/m);
  t.regex(c, /^  address = "\/tmp\/slb-x\/cd\/c\.sock"$/m);
  t.regex(c, /"io\.containerd\.grpc\.v1\.cri"/);
  t.regex(c, /\[proxy_plugins\."starlight"\]\n  type = "snapshot"\n  address = "\/tmp\/slb-x\/w\/s\.sock"/);
  t.notRegex(containerdConfig('/d'), /proxy_plugins/);
});

test('mountPointsUnder: mount points at or below dir, deepest first, octal escapes decoded, siblings excluded', (t) => {
  const mi = [
    '22 1 0:21 / / rw - ext4 /dev/root rw',
    '30 22 0:40 / /tmp/slb-a rw - tmpfs tmpfs rw',
    '31 30 0:41 / /tmp/slb-a/w/r/v\\0401/fs rw - fuse.starlight x rw',
    '32 31 0:42 / /tmp/slb-a/cd/state/rootfs rw - overlay overlay rw',
    '33 22 0:43 / /tmp/slb-ab rw - tmpfs tmpfs rw',
  ].join('\n');
  t.deepEqual(mountPointsUnder('/tmp/slb-a', mi), ['/tmp/slb-a/cd/state/rootfs', '/tmp/slb-a/w/r/v 1/fs', '/tmp/slb-a']);
  t.deepEqual(mountPointsUnder('/tmp/none', mi), []);
});

test('plan: starlight+prior trials carry the OTHER images of the run (never their own)', (t) => {
  const o = parseOptions(['--images', 'python-web,redis', '--rtt', '150', '--modes', 'starlight,starlight+prior', '--scenarios', 'fresh']);
  if (o === 'help') return t.fail();
  const plan = planTrials(o, [image('python-web'), image('redis')], o.modes.map((m) => m.name), shared);
  const prior = plan.filter((p) => p.mode === 'starlight+prior');
  t.deepEqual(prior.map((p) => [p.image, (p.otherImages ?? []).map((i) => i.name)]), [['python-web', ['redis']], ['redis', ['python-web']]]);
  t.true(plan.filter((p) => p.mode === 'starlight').every((p) => p.otherImages === undefined));
});

test('plan: --prior-images sets what starlight+prior trains on (still never the timed image); a bad name is refused', (t) => {
  const o = parseOptions(['--images', 'python-web,redis', '--prior-images', 'python-web,redis,postgres,node-app', '--modes', 'starlight+prior', '--scenarios', 'fresh']);
  if (o === 'help') return t.fail();
  t.deepEqual(o.priorImages, ['python-web', 'redis', 'postgres', 'node-app']);
  const pool = ['python-web', 'redis', 'postgres', 'node-app'].map(image);
  const plan = planTrials(o, pool.slice(0, 2), o.modes.map((m) => m.name), shared, pool);
  t.deepEqual(
    plan.filter((p) => p.rttMs === 150).map((p) => [p.image, (p.otherImages ?? []).map((i) => i.name)]),
    [
      ['python-web', ['redis', 'postgres', 'node-app']],
      ['redis', ['python-web', 'postgres', 'node-app']],
    ],
  );
  t.is(parseOptions([]) !== 'help' && (parseOptions([]) as { priorImages?: unknown }).priorImages, undefined);
  t.is(t.throws(() => parseOptions(['--prior-images', 'nope']))?.['code' as keyof Error], 'SL_ERR_INVALID_ARGUMENT' as never);
});
