#!/usr/bin/env bash
# Builds (or reuses) the Debian bench images and pushes them to a registry as bench/<name>:<version>.
#
# Usage: bench/images/build.sh --registry 127.0.0.1:5000 [--cache DIR] [--versions "v1 v2"] IMAGE...|all
#   IMAGE: python-web redis nginx node-app postgres
# Needs root (build-rootfs.sh) and a built tree (`npm run build`: push uses dist/bench/images/push.js).
# Prints one "<ref>@<digest>" line per pushed image.
#
# Not here: the build recipe (build-rootfs.sh), OCI details (push.ts).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
registry=""
rootfs_args=()
while (($#)); do
  case $1 in
    --registry) registry=$2; shift 2 ;;
    --cache|--versions|--mirror) rootfs_args+=("$1" "$2"); shift 2 ;;
    *) rootfs_args+=("$1"); shift ;;
  esac
done
[[ -n $registry ]] || { echo "build.sh: --registry host:port is required" >&2; exit 2; }
push_js=$root/dist/bench/images/push.js
[[ -f $push_js ]] || { echo "build.sh: $push_js missing; run npm run build first" >&2; exit 2; }

mapfile -t images < <(bash "$here/build-rootfs.sh" "${rootfs_args[@]}")
for json in "${images[@]}"; do
  node "$push_js" --registry "$registry" --image-json "$json"
done
