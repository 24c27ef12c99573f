#!/usr/bin/env bash
# Runs a FUSE view workload under valgrind (memcheck) and fails if any error or definite/indirect
# leak has a stack through the addon (starlight_fuse.node); V8/Node's own reports are ignored (like
# sharp's test/leak). Needs root, /dev/fuse and a built tree (npm run build). Takes a few minutes.
#
# Why a driver and not the ava tests: valgrind does not release its big lock around stat(2), so a
# process that stats its own FUSE mount under valgrind deadlocks (seen here). The driver process only
# serves; every syscall on the mount is made by child processes (find, cat, getfattr, sha256sum).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
work=$(mktemp -d /tmp/starlight-valgrind-XXXXXX)
cleanup() {
  grep -q " $work/mnt " /proc/self/mountinfo && fusermount3 -u -z "$work/mnt"
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/mnt" "$work/cas"

cat > "$work/driver.mjs" <<JS
import { spawnSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { FuseViewManager } from '$PWD/dist/src/worker/fs/fuse-views.js';
const sh = (cmd) => { const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' }); if (r.status !== 0) throw new Error(cmd + ': ' + r.stderr); return r.stdout; };
const base = { uid: 0, gid: 0, mtime: 1700000000.5 };
const entries = [{ ...base, path: '', type: 'dir', mode: 0o755, size: 0 }, { ...base, path: 'd', type: 'dir', mode: 0o755, size: 0 }];
const files = new Map(); const missing = new Set(); const waiters = [];
function add(path, bytes, lazy = false) {
  const digest = 'sha256:' + createHash('sha256').update(bytes).digest('hex');
  const file = '$work/cas/' + digest.slice(7); writeFileSync(file, bytes); files.set(digest, file);
  if (lazy) missing.add(digest);
  entries.push({ ...base, path, type: 'reg', mode: 0o644, size: bytes.length, digest, xattrs: { 'user.x': Buffer.from('v') } });
  return digest;
}
for (let i = 0; i < 300; i++) add('d/f' + String(i).padStart(3, '0'), randomBytes(100 + i * 50));
const lazy = [0, 1, 2, 3].map((i) => add('lazy' + i, randomBytes(70000), true));
entries.push({ ...base, path: 'l', type: 'symlink', mode: 0o777, size: 0, linkname: 'd/f001' });
entries.sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
const content = {
  locate: (d) => (missing.has(d) ? null : files.get(d) ?? null),
  waitFor: (d, o, l, signal) => missing.has(d)
    ? new Promise((res, rej) => { waiters.push({ d, res }); signal?.addEventListener('abort', () => rej(new Error('aborted'))); })
    : Promise.resolve(files.get(d)),
};
const release = (d) => { missing.delete(d); for (const w of waiters.filter((w) => w.d === d)) w.res(files.get(d)); };
const views = new FuseViewManager({ handleSignals: false, probeMount: false });
const accessed = [];
await views.mount('$work/mnt', { tree: { diffIDs: [], entries }, content, onFirstAccess: (p) => accessed.push(p) });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const n = sh('find $work/mnt -printf "%p %s %n\\\\n" | wc -l').trim();
if (Number(n) !== entries.length) throw new Error('find saw ' + n);
sh('cat $work/mnt/d/* | sha256sum; getfattr -d $work/mnt/d/f010; readlink $work/mnt/l; stat -f $work/mnt');
const readers = lazy.map((_, i) => spawn('cat', ['$work/mnt/lazy' + i], { stdio: 'ignore' }));
const exited = readers.map((c) => new Promise((r) => c.on('exit', r)));
await sleep(3000);
readers[3].kill('SIGKILL');
release(lazy[0]); release(lazy[1]);
await Promise.all(exited.slice(0, 2));
await views.unmount('$work/mnt'); // lazy2 is still parked: EIO
await Promise.all(exited);
console.log('driver done: ' + accessed.length + ' inodes accessed');
JS

status=0
valgrind --tool=memcheck --fair-sched=yes --leak-check=full --show-leak-kinds=definite,indirect \
  --num-callers=30 --log-file="$work/vg.log" node "$work/driver.mjs" || status=$?

# A valgrind report is a block of "==pid== ..." lines ended by an "==pid== " line.
bad=$(awk '
  /^==[0-9]+== $/ { if (blk ~ /starlight_fuse/ && blk ~ /(Invalid|uninitialised|definitely lost|indirectly lost|Mismatched|overlap)/) print blk "\n"; blk = ""; next }
  { blk = blk "\n" $0 }
  END { if (blk ~ /starlight_fuse/ && blk ~ /(Invalid|uninitialised|definitely lost|indirectly lost|Mismatched|overlap)/) print blk }
' "$work/vg.log")
if [[ -n "$bad" ]]; then
  echo "valgrind found problems in the FUSE addon:" >&2
  echo "$bad" >&2
  exit 1
fi
if ((status != 0)); then
  echo "the valgrind driver failed (exit $status); see above" >&2
  exit "$status"
fi
echo "valgrind: no errors or leaks in starlight_fuse.node"
