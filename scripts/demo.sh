#!/usr/bin/env bash
# The local demo on a Debian 12 machine, as root: installs what is needed (scripts/install-deps.sh:
# apt packages, npm ci, build; idempotent), then runs dist/scripts/demo.js, which starts a registry,
# the Starlight proxy, the snapshotter daemon and a private containerd on 127.0.0.1, pulls and runs a
# Debian python3 web app through Starlight, updates it to v2, prints a summary and removes everything
# it started (also on Ctrl-C). Options: --skip-install, --keep, --rtt MS, --bandwidth RATE, --help.
set -euo pipefail
cd "$(dirname "$0")/.."

skip_install=0
args=()
for a in "$@"; do
  case $a in
    --skip-install) skip_install=1 ;;
    -h|--help) skip_install=1; args+=("$a") ;;
    *) args+=("$a") ;;
  esac
done
if [[ $EUID -ne 0 && $skip_install -eq 0 ]]; then
  echo "demo.sh: run as root (apt, containerd, runc, FUSE and overlay mounts): sudo bash scripts/demo.sh" >&2
  exit 77
fi
# Node.js ≥ 20 comes from outside Debian 12 (its own nodejs is 18): say so instead of failing later.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if ((node_major < 20)) || ! command -v npm >/dev/null; then
  echo "demo.sh: needs Node.js >= 20 with npm (found: $(node --version 2>/dev/null || echo none)); Debian 12 ships 18: install a Node 20 nodejs package, then rerun" >&2
  exit 69
fi
if ((!skip_install)); then
  [[ -t 2 ]] && echo "… checking dependencies (scripts/install-deps.sh: apt, npm ci, build)" >&2
  bash scripts/install-deps.sh
fi

# The demo runs in its own session (setsid: no fork here, as a non-interactive shell's background job
# is not a process-group leader), so a Ctrl-C on the terminal reaches only this script, which passes
# it on to the demo; the demo then stops containers, containerd, the daemon, the proxy and the
# registry in order. Without this, the terminal's SIGINT would hit every child at once.
setsid node dist/scripts/demo.js "${args[@]}" &
pid=$!
trap 'kill -INT "$pid" 2>/dev/null || true' INT
trap 'kill -TERM "$pid" 2>/dev/null || true' TERM HUP
rc=0
while :; do
  wait "$pid" && rc=0 || rc=$?
  # wait returns early (status > 128) when a trapped signal arrives; go on until the demo exited.
  kill -0 "$pid" 2>/dev/null || break
done
exit "$rc"
