#!/usr/bin/env bash
# Builds the Debian bookworm bench/test images as plain layer tars, cached and idempotent.
#
# Per image NAME and version V (v1, v2) it produces, under $CACHE/r$REV/:
#   layers/base.tar            debootstrap --variant=minbase bookworm (shared by every image)
#   layers/NAME-pkgs-V.tar     the apt-get install layer: upper dir of an overlay on the base,
#                              whiteouts (char 0/0) -> `.wh.NAME`, opaque dirs -> `.wh..wh..opq`
#   layers/NAME-app-V.tar      /app: start script printing a READY line once the port answers
#   images/NAME-V.json         {"layers":[...],"entrypoint":[...],"env":[...],"ready":..,"port":..}
# v2 = the package layer rebuilt with one extra package (same files otherwise, new digest: the
# "rebuilt layer" update case) + an app layer with one changed file and one new file.
#
# Every tar has an entry for every parent directory (design.md: layers without them break
# `ctr-remote optimize`), names without a leading "./", entries sorted, numeric owners, xattrs, and no
# atime/ctime so rebuilding the same tree gives the same bytes.
#
# Mounts (overlay, proc, tmpfs /dev, binds) live in a private mount namespace (unshare) and are also
# unmounted by a trap, so nothing stays mounted even if the build is killed. Runs of this script
# are serialised by a lock on the cache dir.
#
# Not here: compression, OCI config/manifest, pushing (bench/images/push.ts does that).
#
# Usage: build-rootfs.sh [--cache DIR] [--mirror URL] [--versions "v1 v2"] IMAGE...
#   IMAGE: python-web redis nginx node-app postgres | all
# Prints the paths of the image JSON files it built or reused, one per line, on stdout.
set -euo pipefail

# Bump when the layout or content recipe changes: old cached layers are then ignored.
REV=2
SUITE=bookworm
CACHE=${STARLIGHT_IMAGE_CACHE:-/var/cache/starlight/bench-images}
MIRROR=""
VERSIONS="v1 v2"
# Waits at most this long for another build holding the cache lock (seconds).
LOCK_WAIT_S=3600
# Fixed mtime of the app layer files so the app layer digest is reproducible.
APP_MTIME=@1700000000
ALL_IMAGES=(python-web redis nginx node-app postgres)

log() { printf '[build-rootfs %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

images=()
while (($#)); do
  case $1 in
    --cache) CACHE=$2; shift 2 ;;
    --mirror) MIRROR=$2; shift 2 ;;
    --versions) VERSIONS=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
    all) images+=("${ALL_IMAGES[@]}"); shift ;;
    -*) die "unknown option $1" ;;
    *) images+=("$1"); shift ;;
  esac
done
((${#images[@]})) || die "no image named; choose from: ${ALL_IMAGES[*]} (or all)"
[[ $EUID -eq 0 ]] || die "must run as root (debootstrap, chroot, overlay mounts)"
for tool in debootstrap unshare chroot tar getfattr setfattr flock; do
  command -v "$tool" >/dev/null || die "$tool not found; run scripts/install-deps.sh"
done

# The mirror the machine's apt uses (deb822 sources first, then the one-line format).
if [[ -z $MIRROR ]]; then
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    MIRROR=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [[ -z $MIRROR && -f /etc/apt/sources.list ]]; then
    MIRROR=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
  fi
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

# Per image: packages of v1, the extra package of v2, the app command, its TCP port.
pkgs_of() {
  case $1 in
    python-web) echo python3 ;;
    redis) echo redis-server ;;
    nginx) echo nginx ;;
    node-app) echo nodejs ;;
    postgres) echo postgresql ;;
    *) die "unknown image $1; choose from: ${ALL_IMAGES[*]}" ;;
  esac
}
V2_EXTRA_PKG=less
port_of() {
  case $1 in
    python-web|node-app) echo 8080 ;;
    redis) echo 6379 ;;
    nginx) echo 80 ;;
    postgres) echo 5432 ;;
  esac
}
for img in "${images[@]}"; do pkgs_of "$img" >/dev/null; done

R=$CACHE/r$REV
mkdir -p "$CACHE/rootfs" "$CACHE/apt-cache/archives/partial" "$CACHE/apt-lists/partial" \
  "$R/layers" "$R/images" "$R/work"
exec 9>"$CACHE/.lock"
flock -w "$LOCK_WAIT_S" 9 || die "another build holds $CACHE/.lock for more than ${LOCK_WAIT_S}s"

# rm -rf that refuses a tree with anything mounted below it (a leftover bind of /dev would be fatal).
safe_rm() {
  local d
  for d in "$@"; do
    [[ -e $d ]] || continue
    if findmnt -rn -o TARGET | grep -qF -- "$(realpath "$d")"; then
      die "refusing to delete $d: something is mounted below it (see findmnt)"
    fi
    rm -rf -- "$d"
  done
}

# tar_tree SRC OUT: every entry below SRC (parents included, /dev /proc /sys contents excluded).
tar_tree() {
  local src=$1 out=$2
  (cd "$src" && find . -mindepth 1 \( -path './dev/*' -o -path './proc/*' -o -path './sys/*' \) -prune \
      -o -print0 | sed -z 's|^\./||' | LC_ALL=C sort -z) >"$out.list"
  tar --create --file "$out.tmp" --directory "$src" --null --no-recursion --files-from "$out.list" \
    --numeric-owner --xattrs --xattrs-include='*' --xattrs-exclude='trusted.overlay.*' \
    --format=posix --pax-option='exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime'
  rm -f "$out.list"
  mv "$out.tmp" "$out"
}

build_base() {
  local base=$CACHE/rootfs/$SUITE-minbase
  if [[ ! -f $base.done ]]; then
    log "debootstrap --variant=minbase $SUITE from $MIRROR (cold: a few minutes)"
    local t0=$SECONDS
    safe_rm "$base.tmp" "$base"
    # debootstrap mounts proc/sys in the target; a private namespace drops them even if it is killed.
    unshare --mount --propagation private -- debootstrap --variant=minbase "$SUITE" "$base.tmp" "$MIRROR" \
      >"$CACHE/debootstrap.log" 2>&1 \
      || die "debootstrap failed; see $CACHE/debootstrap.log"
    # Images carry no host identity and no apt lists/caches (as Docker's debian images).
    : >"$base.tmp/etc/resolv.conf"
    echo localhost >"$base.tmp/etc/hostname"
    rm -rf "$base.tmp/var/lib/apt/lists/"* "$base.tmp/var/cache/apt/"*.bin "$base.tmp/var/cache/apt/archives/"*.deb
    mv "$base.tmp" "$base"
    touch "$base.done"
    log "base rootfs ready in $((SECONDS - t0))s"
  fi
  if [[ ! -f $R/layers/base.tar ]]; then
    tar_tree "$base" "$R/layers/base.tar"
  fi
}

# Runs in a private mount namespace: overlay(base, upper) + proc/dev/tmp/run + apt caches, then apt.
# Args: BASE UPPER WORK MERGED APT_CACHE APT_LISTS PKG...
overlay_install() {
  unshare --mount --propagation private -- bash -euo pipefail -c '
    base=$1 upper=$2 work=$3 m=$4 aptc=$5 aptl=$6; shift 6
    trap "umount -R \"\$m\" 2>/dev/null || umount -lR \"\$m\" 2>/dev/null || true" EXIT
    mount -t overlay overlay \
      -o "lowerdir=$base,upperdir=$upper,workdir=$work,redirect_dir=off,metacopy=off,index=off,xino=off" "$m"
    mount -t proc proc "$m/proc"
    mount -t tmpfs -o mode=755,size=16m devtmp "$m/dev"
    for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
      IFS=: read -r n ma mi <<<"$d"; mknod -m 666 "$m/dev/$n" c "$ma" "$mi"
    done
    mount -t tmpfs -o mode=1777 tmp "$m/tmp"
    mount -t tmpfs -o mode=755 run "$m/run"
    mount --bind "$aptc" "$m/var/cache/apt"
    mount --bind "$aptl" "$m/var/lib/apt/lists"
    mount --bind /etc/resolv.conf "$m/etc/resolv.conf"
    # No service starts inside the build (policy-rc.d exit 101); the file exists only in this run.
    printf "#!/bin/sh\nexit 101\n" >"$m/usr/sbin/policy-rc.d"; chmod 755 "$m/usr/sbin/policy-rc.d"
    export DEBIAN_FRONTEND=noninteractive LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin
    chroot "$m" apt-get -qq update
    chroot "$m" apt-get -qq -y install --no-install-recommends "$@"
    rm -f "$m/usr/sbin/policy-rc.d"
    # Exercise the whiteout paths of readers: a deleted file, a deleted dir, an emptied (opaque) dir.
    rm -f "$m/usr/share/common-licenses/GFDL-1.2"
    rm -rf "$m/usr/share/doc/debian-archive-keyring"
    rm -rf "$m/var/log/apt"; mkdir -p "$m/var/log/apt"
  ' overlay-install "$@"
}

# Converts an overlayfs upper dir into OCI layer form in place: whiteouts and opaque dirs.
# Linux marks every new directory in a merged parent opaque as a lookup optimisation; only dirs
# that hide a real lower directory keep the marker (the others would be noise in the layer).
convert_upper() {
  local upper=$1 lower=$2 f d rel
  while IFS= read -r -d '' f; do
    if [[ $(stat -c '%t:%T' "$f") == 0:0 ]]; then
      rm -f "$f"
      : >"$(dirname "$f")/.wh.$(basename "$f")"
    fi
  done < <(find "$upper" -type c -print0)
  while IFS= read -r -d '' d; do
    if [[ $(getfattr --only-values -h -n trusted.overlay.opaque "$d" 2>/dev/null) == y ]]; then
      setfattr -h -x trusted.overlay.opaque "$d"
      rel=${d#"$upper"}
      if [[ -d $lower$rel && ! -L $lower$rel ]]; then : >"$d/.wh..wh..opq"; fi
    fi
  done < <(find "$upper" -type d -print0)
}

build_pkgs_layer() {
  local img=$1 ver=$2 out=$R/layers/$1-pkgs-$2.tar
  [[ -f $out ]] && return 0
  # shellcheck disable=SC2207
  local pkgs=($(pkgs_of "$img"))
  [[ $ver == v1 ]] || pkgs+=("$V2_EXTRA_PKG")
  local w=$R/work/$img-pkgs-$ver t0=$SECONDS
  safe_rm "$w"; mkdir -p "$w/upper" "$w/work" "$w/merged"
  log "$img $ver: apt-get install ${pkgs[*]}"
  overlay_install "$CACHE/rootfs/$SUITE-minbase" "$w/upper" "$w/work" "$w/merged" \
    "$CACHE/apt-cache" "$CACHE/apt-lists" "${pkgs[@]}" >"$w.log" 2>&1 \
    || { tail -n 20 "$w.log" >&2; die "apt-get install for $img $ver failed; see $w.log"; }
  convert_upper "$w/upper" "$CACHE/rootfs/$SUITE-minbase"
  tar_tree "$w/upper" "$out"
  safe_rm "$w"
  log "$img $ver: package layer in $((SECONDS - t0))s ($(du -m "$out" | cut -f1) MiB)"
}

app_command() {
  case $1 in
    python-web) echo 'exec python3 /app/server.py' ;;
    node-app) echo 'exec node /app/server.js' ;;
    redis) echo 'exec redis-server --port 6379 --bind 127.0.0.1 --save "" --appendonly no --protected-mode no' ;;
    nginx) echo 'exec nginx -g "daemon off;"' ;;
    postgres) printf '%s\n' 'mkdir -p /run/postgresql && chown postgres:postgres /run/postgresql' \
      'v=$(ls /usr/lib/postgresql | sort -n | tail -n 1)' \
      'exec runuser -u postgres -- /usr/lib/postgresql/$v/bin/postgres -D /var/lib/postgresql/$v/main -c config_file=/etc/postgresql/$v/main/postgresql.conf -c listen_addresses=127.0.0.1' ;;
  esac
}

write_app_files() {
  local img=$1 ver=$2 dir=$3/app port
  port=$(port_of "$img")
  mkdir -p "$dir/static"
  echo "$img $ver" >"$dir/VERSION"
  echo "$port" >"$dir/port"
  printf '#!/bin/bash\n%s\n' "$(app_command "$img")" >"$dir/run"
  cat >"$dir/start.sh" <<'EOF'
#!/bin/bash
# Starts /app/run, prints "READY <image> <version>" once its TCP port answers, then waits for it.
port=$(cat /app/port)
/app/run &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
for ((i = 0; i < 12000; i++)); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "READY $(cat /app/VERSION)"; break; fi
  kill -0 "$child" 2>/dev/null || break
  sleep 0.01
done
wait "$child"
EOF
  cat >"$dir/server.py" <<'EOF'
# Serves /app/static over HTTP on the port in /app/port.
import functools, http.server
port = int(open('/app/port').read())
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory='/app/static')
http.server.ThreadingHTTPServer(('0.0.0.0', port), handler).serve_forever()
EOF
  cat >"$dir/server.js" <<'EOF'
// Serves /app/static/index.html over HTTP on the port in /app/port.
const fs = require('fs'); const http = require('http');
const port = Number(fs.readFileSync('/app/port', 'utf8'));
http.createServer((req, res) => res.end(fs.readFileSync('/app/static/index.html'))).listen(port);
EOF
  echo "<h1>starlight bench $img $ver</h1>" >"$dir/static/index.html"
  if [[ $ver != v1 ]]; then
    echo "added in $ver" >"$dir/static/new-in-$ver.txt"
  fi
  chmod 755 "$dir/run" "$dir/start.sh"
  find "$dir" -exec touch -h -d "$APP_MTIME" {} +
}

build_app_layer() {
  local img=$1 ver=$2 out=$R/layers/$1-app-$2.tar
  [[ -f $out ]] && return 0
  local w=$R/work/$img-app-$ver
  rm -rf "$w"; mkdir -p "$w"
  write_app_files "$img" "$ver" "$w"
  tar_tree "$w" "$out"
  rm -rf "$w"
}

write_image_json() {
  local img=$1 ver=$2 out=$R/images/$1-$2.json
  cat >"$out.tmp" <<EOF
{
  "name": "$img",
  "version": "$ver",
  "layers": ["$R/layers/base.tar", "$R/layers/$img-pkgs-$ver.tar", "$R/layers/$img-app-$ver.tar"],
  "entrypoint": ["/app/start.sh"],
  "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
  "ready": "READY $img $ver",
  "port": $(port_of "$img")
}
EOF
  mv "$out.tmp" "$out"
  echo "$out"
}

t_start=$SECONDS
build_base
for img in "${images[@]}"; do
  for ver in $VERSIONS; do
    build_pkgs_layer "$img" "$ver"
    build_app_layer "$img" "$ver"
    write_image_json "$img" "$ver"
  done
done
log "done in $((SECONDS - t_start))s"
