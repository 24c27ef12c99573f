#!/usr/bin/env bash
# Installs what Starlight needs on a Debian 12 machine, idempotently: apt packages (registry, containerd,
# runc, FUSE, build tools, debootstrap for the demo/bench images) and the npm packages (npm ci builds
# the native addon). Run as root. Quiet unless something fails.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  docker-registry containerd runc fuse3 libfuse3-dev pkg-config g++ make python3
  debootstrap attr zstd iproute2 ca-certificates
  # g++ above also brings gcc and libc6-dev (static libc.a): the CRI e2e test builds its pause binary
  # with gcc -static (test/fixtures/pause.c); htpasswd files are made with python3's crypt, no apache2-utils.
  # containerd's own snapshotter test suite, built offline (test/e2e/containerd-snapshot-suite.test.ts)
  golang-go golang-github-containerd-containerd-dev
  # proxy replicas' shared store (--db postgres://); tests run initdb from /usr/lib/postgresql/<major>/bin
  postgresql
  # ISA-L: the proxy's layer inflate (native/inflate.cc, build/Release/starlight_inflate.node)
  libisal-dev
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing apt packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's docker-registry package starts a registry on :5000 by default; we start our own per test.
if systemctl is-active --quiet docker-registry 2>/dev/null; then systemctl stop docker-registry || true; fi

# A symlinked node_modules is shared with another checkout (a git worktree): `npm ci` would wipe it
# for both, so it is left to the checkout that owns it.
if [[ -L node_modules ]]; then
  echo "node_modules is a symlink (shared with another checkout): not running npm ci here" >&2
elif [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
