#!/usr/bin/env bash
# Installs the eStargz baseline of the benchmark (bench/drivers/estargz.ts), idempotently:
#   ctr-remote              from Debian's `stargz-snapshotter` package (0.12: image optimize, rpull)
#   containerd-stargz-grpc  built offline from Debian's stargz-snapshotter library sources by
#                           ../shared/tools/estargz-grpc/build.sh beside this repo (or $ESTARGZ_BUILD),
#                           ~60 s cold
# Does nothing for a tool already on PATH. Run as root. `npm run bench` (scripts/bench.sh) runs it; the
# bench itself skips the estargz mode, saying why, when either tool is still missing.
#
# Usage: scripts/build-estargz.sh [PREFIX]    (default PREFIX /usr/local/bin)
set -euo pipefail
prefix=${1:-/usr/local/bin}
repo=$(cd "$(dirname "$0")/.." && pwd)
build_script=${ESTARGZ_BUILD:-$repo/../shared/tools/estargz-grpc/build.sh}

log() { printf '[build-estargz] %s\n' "$*" >&2; }
[[ $EUID -eq 0 ]] || { log "must run as root (apt-get install)"; exit 1; }

if ! command -v ctr-remote >/dev/null; then
  log "installing apt package stargz-snapshotter (ctr-remote)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends stargz-snapshotter >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends stargz-snapshotter >/dev/null; }
fi
command -v ctr-remote >/dev/null || { log "ctr-remote still missing after installing stargz-snapshotter"; exit 1; }

if ! command -v containerd-stargz-grpc >/dev/null; then
  [[ -x $build_script || -f $build_script ]] || { log "no build script at $build_script (set ESTARGZ_BUILD)"; exit 1; }
  log "building containerd-stargz-grpc into $prefix (Go, offline, ~60 s)"
  mkdir -p "$prefix"
  bash "$build_script" "$prefix/containerd-stargz-grpc" >&2
fi
log "ready: $(command -v ctr-remote) $(command -v containerd-stargz-grpc)"
