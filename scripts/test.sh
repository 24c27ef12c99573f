#!/usr/bin/env bash
# Installs what is needed and runs the whole test suite (unit + end-to-end against a real registry,
# containerd, runc and FUSE). Run as root: the e2e tests mount FUSE and overlay filesystems.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
npx ava "$@"
