#!/usr/bin/env bash
# Installs what is needed and runs the whole test suite (unit + end-to-end against a real registry,
# containerd, runc and FUSE). Run as root: the e2e tests mount FUSE and overlay filesystems.
# A test file whose process is still alive 60 s after its tests finished is killed and fails the run,
# named on stderr (test/helpers/exit-watchdog.ts, loaded by package.json "ava"."require").
# containerd's own snapshotter suite runs when Go is present (test/e2e/containerd-snapshot-suite.test.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
npx ava "$@"
