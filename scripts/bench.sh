#!/usr/bin/env bash
# `npm run bench -- [options]`: installs what the benchmark needs (scripts/install-deps.sh; the eStargz
# baseline via scripts/build-estargz.sh — if that cannot be built here, the bench still runs and lists
# the estargz mode as skipped, with the reason), then runs bench/run.ts. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build-estargz.sh || echo "bench: eStargz tools could not be installed; the estargz mode will be skipped" >&2
exec node dist/bench/run.js "$@"
