#!/usr/bin/env bash
# Runs the FUSE view tests under valgrind (memcheck) and fails if any error or definite/indirect leak
# has a stack through the addon (starlight_fuse.node). V8/Node's own reports are ignored: only frames
# in our code count (like sharp's test/leak). Slow (minutes); needs root, /dev/fuse and a built tree:
#   npm run build && scripts/valgrind-fs.sh [dist/test/e2e/fs-view.test.js ...]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
tests=("$@")
((${#tests[@]})) || tests=(dist/test/e2e/fs-view.test.js dist/test/e2e/fs-lifecycle.test.js)
logdir=$(mktemp -d /tmp/starlight-valgrind-XXXXXX)
trap 'rm -rf "$logdir"' EXIT

# ava forks one process per test file; --trace-children follows them (and the node children the
# lifecycle test spawns). Timeouts are generous: everything runs ~30x slower under memcheck.
# --fair-sched=yes: with the default pipe lock, valgrind deadlocked here once the FUSE threads and
# the JS thread all waited (seen 2026-11: every thread in epoll_wait/pipe_read, a stat pending).
valgrind --tool=memcheck --fair-sched=yes --trace-children=yes --trace-children-skip='*/cat,*/getfattr,*/fusermount3' \
  --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
  --num-callers=30 --log-file="$logdir/vg.%p.log" \
  node node_modules/ava/entrypoints/cli.mjs --serial --timeout=20m "${tests[@]}" || status=$?

# A valgrind report is a block of lines "==pid== ..." separated by "==pid== " blank lines.
bad=$(awk '
  /^==[0-9]+== $/ { if (blk ~ /starlight_fuse/ && blk ~ /(Invalid|uninitialised|definitely lost|indirectly lost|Mismatched|overlap)/) print blk "\n"; blk = ""; next }
  { blk = blk "\n" $0 }
  END { if (blk ~ /starlight_fuse/ && blk ~ /(Invalid|uninitialised|definitely lost|indirectly lost|Mismatched|overlap)/) print blk }
' "$logdir"/vg.*.log)
if [[ -n "$bad" ]]; then
  echo "valgrind found problems in the FUSE addon:" >&2
  echo "$bad" >&2
  exit 1
fi
echo "valgrind: no errors or leaks in starlight_fuse.node (test exit status ${status:-0})"
exit "${status:-0}"
