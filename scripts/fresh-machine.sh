#!/usr/bin/env bash
# Proves the README on a bare machine: builds a minimal Debian 12 (debootstrap --variant=minbase
# bookworm) in a temporary folder, clones this repository into it, runs the README's two commands
# inside it with chroot, and prints each command's exit status and wall time. Run it (as root)
# after any change to the install steps.
#
#   scripts/fresh-machine.sh [--ref REF] [--keep] [--mirror URL] [--only quickstart|test]
#
#   --ref REF     what to clone (default HEAD: the last commit; uncommitted changes are NOT seen)
#   --keep        keep the chroot folder afterwards (printed), e.g. to look at build/Testing
#   --mirror URL  the Debian mirror (default http://deb.debian.org/debian)
#   --only CMD    run only one of the two commands
#
# The full logs (debootstrap.log, quickstart.log, test.log) are kept in /var/tmp/mechlens-fresh-logs/
# (replaced by the next run); their last lines are printed. Mounts (proc, sys, dev, dev/pts) are undone on every exit path.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
ref=HEAD
keep=0
mirror=http://deb.debian.org/debian
only=
while [ $# -gt 0 ]; do
  case $1 in
    --ref) ref=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --mirror) mirror=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    *) echo "fresh-machine.sh: unknown argument '$1' (see the comment at the top of the script)" >&2; exit 2 ;;
  esac
done
case $only in ''|quickstart|test) ;; *) echo "fresh-machine.sh: --only takes quickstart or test, not '$only'" >&2; exit 2 ;; esac
[ "$(id -u)" -eq 0 ] || { echo "fresh-machine.sh: must run as root (debootstrap, chroot and mount need it)" >&2; exit 1; }

if ! command -v debootstrap >/dev/null; then
  echo "fresh-machine: installing debootstrap" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null ||
    { DEBIAN_FRONTEND=noninteractive apt-get update -q && apt-get install -y -q --no-install-recommends debootstrap; }
fi
command -v git >/dev/null || { echo "fresh-machine.sh: git is needed on this machine to clone the repository" >&2; exit 1; }

work="$(mktemp -d /var/tmp/mechlens-fresh.XXXXXX)"
root="$work/root"
logs=/var/tmp/mechlens-fresh-logs
rm -rf "$logs"; mkdir -p "$logs"
mounted=()
cleanup() {
  local rc=$?
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount -l "${mounted[$i]}" 2>/dev/null || echo "fresh-machine: could not unmount ${mounted[$i]}" >&2
  done
  if [ "$keep" -eq 1 ]; then
    echo "fresh-machine: kept $work" >&2
  else
    # Only remove the tree once nothing is mounted below it any more.
    if ! grep -q " $root" /proc/mounts; then rm -rf "$work"; else echo "fresh-machine: $root still has mounts; left in place" >&2; fi
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

secs() { date +%s; }
t0=$(secs)
echo "fresh-machine: debootstrap --variant=minbase bookworm into $root" >&2
debootstrap --variant=minbase bookworm "$root" "$mirror" > "$logs/debootstrap.log" 2>&1 ||
  { tail -n 30 "$logs/debootstrap.log" >&2; echo "fresh-machine: debootstrap failed (log: $logs/debootstrap.log)" >&2; keep=1; exit 1; }
echo "fresh-machine: bare system ready in $(( $(secs) - t0 )) s ($(du -sh "$root" | cut -f1))" >&2

bind() { mkdir -p "$root$1"; mount "${@:2}" "$root$1"; mounted+=("$root$1"); }
bind /proc -t proc proc
bind /sys -t sysfs sys
bind /dev --bind /dev
bind /dev/pts --bind /dev/pts
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
# The network's own trust anchors: where https goes through a TLS-inspecting proxy (as here), every
# machine on that network carries its certificate authority; a bare system from debootstrap does
# not. Certificates added locally (/usr/local/share/ca-certificates, and regular .pem files in
# /etc/ssl/certs that no package installed) go to the same place inside, where the
# ca-certificates package (installed by `install-deps.sh --tests`) adds them to the system store.
# Nothing of the project is installed this way.
mkdir -p "$root/usr/local/share/ca-certificates"
anchors=0
for f in /usr/local/share/ca-certificates/*.crt /etc/ssl/certs/*.pem; do
  [ -f "$f" ] && [ ! -L "$f" ] || continue
  case $f in /etc/ssl/certs/*) dpkg -S "$f" >/dev/null 2>&1 && continue ;; esac
  base=$(basename "$f"); cp "$f" "$root/usr/local/share/ca-certificates/${base%.*}.crt"; anchors=$((anchors + 1))
done
echo "fresh-machine: $anchors local trust anchor(s) of this network copied in" >&2

# The clone happens from the outside (the bare system has no git; the README's commands don't need it).
git clone -q --no-local "$repo" "$root/root/mechlens"
git -C "$root/root/mechlens" checkout -q --detach "$ref"
commit=$(git -C "$root/root/mechlens" rev-parse --short HEAD)
echo "fresh-machine: cloned $repo at $commit" >&2

# Inside: a login-like environment with nothing inherited from this machine.
inside() {
  chroot "$root" /usr/bin/env -i HOME=/root USER=root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash -c "cd /root/mechlens && $1"
}

declare -A status times
run_step() {  # name command
  local name=$1 cmd=$2 start rc
  echo "fresh-machine: [$name] $cmd" >&2
  start=$(secs)
  set +e
  inside "$cmd" > "$logs/$name.log" 2>&1
  rc=$?
  set -e
  status[$name]=$rc
  times[$name]=$(( $(secs) - start ))
  echo "----- last lines of $name.log -----"
  tail -n 25 "$logs/$name.log"
  echo "-----"
}
[ "$only" = test ] || run_step quickstart "bash scripts/quickstart.sh"
[ "$only" = quickstart ] || run_step test "bash scripts/test.sh"

echo
echo "fresh-machine: bare Debian 12 (minbase bookworm), $(nproc) cores, commit $commit"
fail=0
for name in quickstart test; do
  [ -n "${status[$name]+x}" ] || continue
  printf 'fresh-machine: %-10s exit %s  %4d s  (%s)\n' "$name" "${status[$name]}" "${times[$name]}" \
    "$([ "$name" = quickstart ] && echo 'bash scripts/quickstart.sh' || echo 'bash scripts/test.sh')"
  [ "${status[$name]}" -eq 0 ] || fail=1
done
if [ -n "${status[test]+x}" ]; then
  summary=$(grep -E 'tests passed|tests failed' "$logs/test.log" | tail -n 1 || true)
  notrun=$(grep -c 'Not Run' "$logs/test.log" || true)
  echo "fresh-machine: ctest: ${summary:-no summary line}; tests 'Not Run': $notrun"
  [ "$notrun" -eq 0 ] || fail=1
fi
echo "fresh-machine: total $(( $(secs) - t0 )) s"
echo "fresh-machine: full logs in $logs"
exit $fail
