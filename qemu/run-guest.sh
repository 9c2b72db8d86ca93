#!/usr/bin/env bash
# Tier-3 BLE test bed: real BlueZ on two virtual LE controllers (hci0, hci1 on one air) inside a
# QEMU guest (TCG), running a command of the caller against it. See qemu/README.md.
#
#   qemu/run-guest.sh --smoke                 # BLE end to end with BlueZ's own tools
#   qemu/run-guest.sh [options] -- CMD ARGS   # CMD runs in the guest, in a chroot of the host's /
#
# Exit status: the scenario's own exit status; 77 = SKIPPED (this machine cannot boot the guest:
# no root, qemu or packages not installable, kernel does not reach /init; 1 instead with
# BEETS_REQUIRE_TIER3=1, as CI sets it); 124 = timeout;
# 125 = the guest booted but the BLE stack did not come up (or another infrastructure error).
set -euo pipefail

EX_SKIP=77
EX_TIMEOUT=124
EX_INFRA=125

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${BEETS_QEMU_CACHE:-/var/cache/beets-qemu}
TIMEOUT=${BEETS_QEMU_TIMEOUT:-180}
BOOT_TIMEOUT=${BEETS_QEMU_BOOT_TIMEOUT:-45}
MEM=${BEETS_QEMU_MEM:-1024}
SMP=${BEETS_QEMU_SMP:-1}
ACCEL=${BEETS_QEMU_ACCEL:-tcg}
BTD_ARGS=${BEETS_QEMU_BTD_ARGS:--E}
BTVIRT_ARGS=${BEETS_QEMU_BTVIRT_ARGS:--L -l2}
KERNEL_PKG=${BEETS_QEMU_KERNEL_PKG:-}
WORKDIR=$PWD
KEEP=0
VERBOSE=0
BTMON=0
SMOKE=0
OUTDIR=""
ENVS=()

usage() {
  cat <<'EOF'
usage: qemu/run-guest.sh [options] --smoke
       qemu/run-guest.sh [options] -- COMMAND [ARGS...]

Boots a QEMU guest (TCG) with BlueZ on two virtual LE controllers (hci0, hci1 on one air) and
runs COMMAND there, as root, in a chroot of this machine's / (read-only, writes go to a tmpfs
overlay), with DBUS_SYSTEM_BUS_ADDRESS set to the guest's system bus where bluetoothd -n -E runs.
Exits with COMMAND's exit status.

options:
  --smoke          run qemu/smoke.sh (advertise on hci0, scan on hci1, with BlueZ's tools)
  -C DIR           working directory of COMMAND (default: the current directory)
  -e NAME=VALUE    export NAME=VALUE to COMMAND (repeatable; RUST_LOG, RUST_BACKTRACE and
                   BEETS_* variables of the caller are passed on anyway)
  --timeout SECS   hard limit for the whole guest run (default 180, env BEETS_QEMU_TIMEOUT)
  --btmon          record HCI traffic with btmon into the job folder (logs/btmon.txt, 200
                   columns); the scenario finds it at $BEETS_QEMU_BTMON
  --btvirt ARGS    btvirt's options (default "-L -l2": two LE-only controllers with legacy
                   advertising; "-l2": two dual-mode 5.x controllers with extended advertising;
                   env BEETS_QEMU_BTVIRT_ARGS). It must create hci0 and hci1
  --out DIR        copy what COMMAND wrote to $BEETS_QEMU_OUT into DIR on the host
  --keep           keep the job folder (console, daemon logs, scenario output) and print its path
  -v               print the guest console and daemon logs at the end
  --prepare        only install/fetch/build everything (no boot)
  -h, --help       this text

environment: BEETS_QEMU_CACHE (default /var/cache/beets-qemu), BEETS_QEMU_MEM (MiB, 1024),
BEETS_QEMU_SMP (2), BEETS_QEMU_BTD_ARGS (bluetoothd options, default -E; e.g. "-E -d"),
BEETS_QEMU_BOOT_TIMEOUT (45, one retry), BEETS_QEMU_KERNEL_PKG (default: what linux-image-amd64 depends on).
In COMMAND's environment: BEETS_QEMU=1, BEETS_QEMU_OUT=<writable folder shared with the host>.
exit: COMMAND's status; 77 SKIPPED (cannot boot here; 1 with BEETS_REQUIRE_TIER3=1); 124 timeout;
125 BLE stack/infra failure.
EOF
}

PREPARE_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
  --smoke) SMOKE=1 ;;
  -C) WORKDIR=$(cd "$2" && pwd); shift ;;
  -e) ENVS+=("$2"); shift ;;
  --timeout) TIMEOUT=$2; shift ;;
  --btmon) BTMON=1 ;;
  --btvirt) BTVIRT_ARGS=$2; shift ;;
  --keep) KEEP=1 ;;
  --out) mkdir -p "$2" && OUTDIR=$(cd "$2" && pwd); shift ;;
  -v | --verbose) VERBOSE=1 ;;
  --prepare) PREPARE_ONLY=1 ;;
  -h | --help) usage; exit 0 ;;
  --) shift; break ;;
  *) echo "run-guest: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$SMOKE" = 1 ]; then
  [ $# -eq 0 ] || { echo "run-guest: --smoke takes no command" >&2; exit 2; }
  set -- /bin/bash "$HERE/smoke.sh"
elif [ "$PREPARE_ONLY" = 0 ] && [ $# -eq 0 ]; then
  usage >&2
  exit 2
fi

T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
log() { echo "run-guest: [+$(elapsed)s] $*" >&2; }
skip() {
  echo "SKIPPED: $*"
  if [ "${BEETS_REQUIRE_TIER3:-0}" = 1 ]; then
    echo "run-guest: BEETS_REQUIRE_TIER3=1: a skipped tier-3 run is a failure" >&2
    exit 1
  fi
  exit $EX_SKIP
}
die() {
  echo "run-guest: ERROR: $*" >&2
  exit $EX_INFRA
}

[ "$(id -u)" = 0 ] || skip "the QEMU BLE guest needs root (apt, and a 9p export of /)"
[ "$(uname -m)" = x86_64 ] || skip "the QEMU BLE guest needs an x86_64 host"
command -v apt-get >/dev/null || skip "no apt-get: the QEMU BLE guest needs a Debian host"

# ---------------------------------------------------------------------------------------------
# 1. host packages
# ---------------------------------------------------------------------------------------------
APT_UPDATED=0
apt_update() {
  [ "$APT_UPDATED" = 1 ] && return 0
  log "apt-get update"
  apt-get update -qq >/dev/null 2>&1 || log "apt-get update failed (going on with the lists there are)"
  APT_UPDATED=1
}
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-remove "$@" \
    >"$CACHE/apt-install.log" 2>&1
}

# qemu-system-x86. Machines of this project's kind carry qemu-utils from bookworm-backports, and
# Debian 12's own qemu-system-x86 7.2 would make apt remove it: install the same backports version
# instead, through a private sources list (the machine's apt configuration is left as it is).
install_qemu() {
  local st ver codename d
  st=$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}' qemu-utils 2>/dev/null || true)
  ver=${st##* }
  if [[ $st == ii* && $ver == *bpo* ]]; then
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    d=$CACHE/apt-backports
    mkdir -p "$d/parts" "$d/lists/partial"
    cp /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list "$d/parts/" 2>/dev/null || true
    [ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$d/parts/main.list"
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$codename" >"$d/parts/beets-qemu-backports.sources"
    local o=(-o Dir::Etc::sourcelist=- -o "Dir::Etc::sourceparts=$d/parts" -o "Dir::State::lists=$d/lists")
    log "installing qemu-system-x86 $ver from $codename-backports (to match the installed qemu-utils)"
    apt-get "${o[@]}" update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get "${o[@]}" install -y -qq --no-install-recommends --no-remove \
      -t "$codename-backports" "qemu-system-x86=$ver" >"$CACHE/apt-install.log" 2>&1 && return 0
    log "backports install failed (see $CACHE/apt-install.log); trying the release's qemu"
  fi
  apt_update
  apt_install qemu-system-x86
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 # one preparation at a time; released when this script exits

T_PKG0=$(elapsed)
if ! command -v qemu-system-x86_64 >/dev/null; then
  install_qemu || skip "qemu-system-x86 is not installed and apt could not install it (see $CACHE/apt-install.log)"
fi
need=()
# A static busybox for the initramfs: the host's if it is static; else busybox-static, installed,
# or (when Debian's dynamic busybox is installed, which it would have to replace) unpacked.
BUSYBOX=/bin/busybox
BUSYBOX_UNPACK=0
if ! { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; }; then
  if dpkg-query -W -f='${db:Status-Abbrev}' busybox 2>/dev/null | grep -q '^ii'; then
    BUSYBOX_UNPACK=1
  else
    need+=(busybox-static)
  fi
fi
command -v depmod >/dev/null || need+=(kmod)
command -v dbus-daemon >/dev/null || need+=(dbus-daemon)
command -v dbus-send >/dev/null || need+=(dbus-bin)
[ -f /usr/share/dbus-1/system.conf ] || need+=(dbus-system-bus-common)
# shared libraries of bluetoothd, bluetoothctl, btmgmt, btmon, btvirt (the BlueZ tree is only
# extracted, not installed, so its library dependencies must be on the host)
for p in libglib2.0-0 libdbus-1-3 libreadline8 libasound2 libdw1 libudev1; do
  dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt_update
  log "apt-get install ${need[*]}"
  apt_install "${need[@]}" || skip "apt could not install ${need[*]} (see $CACHE/apt-install.log)"
fi

# Kernel package (what linux-image-amd64 depends on) and the candidate versions, in two apt-cache
# calls (each costs ~1.5 s here).
resolve_versions() {
  KPKG=$KERNEL_PKG
  if [ -z "$KPKG" ]; then
    KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null |
      awk '/Depends: linux-image-[0-9].*-amd64$/ { print $2; exit }')
  fi
  [ -n "$KPKG" ] || return 1
  eval "$(apt-cache policy "$KPKG" bluez 2>/dev/null | awk -v k="$KPKG" '
    /^[^ ].*:$/ { p = substr($1, 1, length($1) - 1) }
    /Candidate:/ && $2 != "(none)" { if (p == k) print "KVER=" $2; if (p == "bluez") print "BVER=" $2 }')"
  [ -n "${KVER:-}" ] && [ -n "${BVER:-}" ]
}
KVER='' BVER=''
if ! resolve_versions; then
  apt_update
  resolve_versions || true
fi
if [ -z "${KVER:-}" ] || [ -z "${BVER:-}" ]; then
  # no apt lists at all: fall back to what an earlier run fetched
  if [ -f "$CACHE/last-versions" ]; then
    # shellcheck disable=SC1091
    . "$CACHE/last-versions"
    log "apt cannot tell versions; using the cached $KPKG $KVER, bluez $BVER"
  else
    skip "apt cannot find linux-image-amd64 / bluez (no package lists and nothing cached)"
  fi
fi
case "$KPKG" in *-cloud-amd64 | *-rt-amd64) die "$KPKG lacks what is needed; use a plain -amd64 kernel" ;; esac

DEBS=$CACHE/debs
mkdir -p "$DEBS"
fetch() { # package version
  local f
  f=$(ls "$DEBS/$1_${2/:/%3a}_"*.deb 2>/dev/null | head -1 || true)
  if [ -z "$f" ]; then
    log "apt-get download $1=$2"
    (cd "$DEBS" && apt-get download -qq "$1=$2" >/dev/null 2>"$CACHE/apt-download.log") ||
      { apt_update && (cd "$DEBS" && apt-get download -qq "$1=$2" >/dev/null 2>"$CACHE/apt-download.log"); } ||
      skip "cannot download $1=$2 (see $CACHE/apt-download.log)"
    f=$(ls "$DEBS/$1_${2/:/%3a}_"*.deb | head -1)
  fi
  echo "$f"
}

# Kernel: keep only vmlinuz and the modules the guest needs (the package unpacks to ~400 MB).
KDIR=$CACHE/kernel-$KPKG-$KVER
if [ ! -f "$KDIR/ok" ]; then
  deb=$(fetch "$KPKG" "$KVER")
  log "extracting $KPKG"
  tmp=$CACHE/tmp-kernel
  rm -rf "$tmp" "$KDIR"
  mkdir -p "$tmp/x" "$KDIR"
  dpkg-deb -x "$deb" "$tmp/x"
  kv=$(ls "$tmp/x/lib/modules" | head -1)
  grep -q '^CONFIG_BT=m' "$tmp/x/boot/config-$kv" || die "$KPKG has no CONFIG_BT=m"
  depmod -b "$tmp/x" "$kv"
  # Wanted modules; modprobe lists their dependencies first. ecdh_generic/cmac/ecb: Bluetooth
  # SMP and btvirt's AF_ALG crypto (btvirt fails with "Failed to open Virtual HCI device" without
  # algif_*); drbg with ctr and sha512: the default RNG that ECDH key generation needs (without
  # it the ecdh self-test fails and the kernel logs "Unable to create ECDH crypto context" for
  # each controller; jitterentropy_rng is left out: it refuses TCG's timer); virtio_rng: entropy.
  modprobe -d "$tmp/x" -S "$kv" --show-depends -a \
    virtio_pci 9pnet_virtio 9p overlay virtio_rng \
    sha512_generic ctr drbg crc16 ecdh_generic rfkill bluetooth hci_vhci \
    af_alg algif_hash algif_skcipher cmac ecb \
    | awk '$1 == "insmod" { print $2 }' >"$tmp/mods"
  mkdir -p "$KDIR/lib/modules/$kv"
  : >"$KDIR/modules.list"
  while read -r m; do
    rel=${m#"$tmp/x/lib/modules/$kv/"}
    grep -qxF "$kv/$rel" "$KDIR/modules.list" && continue
    mkdir -p "$KDIR/lib/modules/$kv/$(dirname "$rel")"
    cp "$m" "$KDIR/lib/modules/$kv/$rel"
    echo "$kv/$rel" >>"$KDIR/modules.list"
  done <"$tmp/mods"
  cp "$tmp/x/lib/modules/$kv"/modules.{order,builtin,builtin.modinfo} "$KDIR/lib/modules/$kv/"
  cp "$tmp/x/boot/vmlinuz-$kv" "$KDIR/vmlinuz"
  # Under TCG the bzImage spends ~8 s decompressing itself. With CONFIG_PVH QEMU boots the
  # uncompressed ELF vmlinux directly (PVH entry): unpack it once here.
  if grep -q '^CONFIG_PVH=y' "$tmp/x/boot/config-$kv" && command -v xz >/dev/null; then
    off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$KDIR/vmlinuz" | head -1 | cut -d: -f1 || true)
    if [ -n "$off" ] &&
      xz -dc --single-stream < <(tail -c +$((off + 1)) "$KDIR/vmlinuz") >"$KDIR/vmlinux" 2>/dev/null &&
      [ "$(head -c 4 "$KDIR/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
      :
    else
      rm -f "$KDIR/vmlinux"
    fi
  fi
  echo "$kv" >"$KDIR/release"
  rm -rf "$tmp"
  touch "$KDIR/ok"
fi

# BlueZ: bluez + bluez-test-tools (btvirt) of one version, unpacked (not installed) and laid out
# for a merged-/usr root (it is stacked over the host's / in the guest).
BDIR=$CACHE/bluez-$BVER
if [ ! -f "$BDIR/ok" ]; then
  d1=$(fetch bluez "$BVER")
  d2=$(fetch bluez-test-tools "$BVER")
  log "extracting bluez $BVER"
  rm -rf "$BDIR"
  mkdir -p "$BDIR/root"
  dpkg-deb -x "$d1" "$BDIR/root"
  dpkg-deb -x "$d2" "$BDIR/root"
  r=$BDIR/root
  rm -rf "$r/etc/init.d" "$r/lib/systemd" "$r/lib/udev" "$r/usr/share/man" "$r/usr/share/doc" \
    "$r/usr/share/zsh" "$r/usr/share/dbus-1/system-services"
  for top in bin sbin lib; do # /bin, /lib ... are symlinks on the host: a real folder would hide them
    if [ -d "$r/$top" ] && [ ! -L "$r/$top" ]; then
      mkdir -p "$r/usr/$top"
      cp -a "$r/$top/." "$r/usr/$top/"
      rm -rf "${r:?}/$top"
    fi
  done
  for b in usr/libexec/bluetooth/bluetoothd usr/bin/btvirt usr/bin/btmgmt usr/bin/bluetoothctl; do
    [ -x "$r/$b" ] || die "bluez $BVER has no $b"
    if ldd "$r/$b" | grep -q 'not found'; then
      die "$b misses host libraries: $(ldd "$r/$b" | grep 'not found' | tr -s ' \n\t' ' ')"
    fi
  done
  touch "$BDIR/ok"
fi
if [ "$BUSYBOX_UNPACK" = 1 ]; then
  if [ ! -x "$CACHE/busybox-static/bin/busybox" ]; then
    bver=$(apt-cache policy busybox-static 2>/dev/null | awk '/Candidate:/ { print $2; exit }')
    [ -n "$bver" ] && [ "$bver" != "(none)" ] || skip "no busybox-static package"
    d=$(fetch busybox-static "$bver")
    rm -rf "$CACHE/busybox-static"
    dpkg-deb -x "$d" "$CACHE/busybox-static"
  fi
  BUSYBOX=$CACHE/busybox-static/bin/busybox
fi
printf 'KPKG=%q\nKVER=%q\nBVER=%q\n' "$KPKG" "$KVER" "$BVER" >"$CACHE/last-versions"
T_PKG1=$(elapsed)

# ---------------------------------------------------------------------------------------------
# 2. initramfs: busybox, the modules, /init (cached by content)
# ---------------------------------------------------------------------------------------------
T_INI0=$(elapsed)
key=$( { sha256sum "$HERE/init.sh" "$BUSYBOX" "$KDIR/modules.list"; echo "$KDIR"; } | sha256sum | cut -c1-16)
INITRD=$CACHE/initramfs-$key.cpio.gz
if [ ! -f "$INITRD" ]; then
  log "building initramfs"
  st=$CACHE/tmp-initramfs
  rm -rf "$st"
  mkdir -p "$st/bin" "$st/etc/beets-qemu" "$st/lib/modules"
  cp "$BUSYBOX" "$st/bin/busybox"
  cp -a "$KDIR/lib/modules/." "$st/lib/modules/"
  depmod -b "$st" "$(cat "$KDIR/release")" # lets busybox modprobe serve request_module() too
  mkdir -p "$st/sbin"
  ln -s ../bin/busybox "$st/sbin/modprobe"
  cp "$KDIR/modules.list" "$st/etc/beets-qemu/modules.list"
  cp "$HERE/init.sh" "$st/init"
  chmod 755 "$st/init"
  (cd "$st" && find . -print0 | sort -z | "$BUSYBOX" cpio -o -H newc -0 2>/dev/null | gzip -1 >"$INITRD.tmp")
  mv "$INITRD.tmp" "$INITRD"
  rm -rf "$st"
  # keep only the newest few initramfs images
  ls -t "$CACHE"/initramfs-*.cpio.gz | tail -n +4 | xargs -r rm -f
fi
T_INI1=$(elapsed)
flock -u 9

if [ "$PREPARE_ONLY" = 1 ]; then
  log "prepared: kernel $KPKG $KVER, bluez $BVER, $(du -h "$INITRD" | cut -f1) initramfs (packages $(awk -v a="$T_PKG0" -v b="$T_PKG1" 'BEGIN{printf "%.1f", b-a}')s)"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# 3. the job folder (the writable share) and the scenario command
# ---------------------------------------------------------------------------------------------
JOB=$(mktemp -d "${TMPDIR:-/tmp}/beets-qemu.XXXXXX")
JOB=$(cd "$JOB" && pwd -P)
cleanup() {
  [ -n "${TAIL_PID:-}" ] && kill "$TAIL_PID" 2>/dev/null
  [ -n "${QEMU_PID:-}" ] && kill "$QEMU_PID" 2>/dev/null
  [ -n "$OUTDIR" ] && cp -a "$JOB/out/." "$OUTDIR/" 2>/dev/null
  if [ "$KEEP" = 1 ]; then
    echo "run-guest: job folder kept: $JOB" >&2
  else
    rm -rf "$JOB"
  fi
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$JOB/out" "$JOB/logs"

{
  printf 'JOB_PATH=%q\n' "$JOB"
  printf 'TOTAL_TIMEOUT=%q\n' "$TIMEOUT"
  printf 'BTD_ARGS=%q\n' "$BTD_ARGS"
  printf 'BTMON=%q\n' "$BTMON"
  printf 'BTVIRT_ARGS=%q\n' "$BTVIRT_ARGS"
} >"$JOB/guest.conf"
{
  echo '# generated by qemu/run-guest.sh: the scenario, run in the guest by /bin/bash'
  printf 'cd -- %q || exit 126\n' "$WORKDIR"
  printf 'export PATH=%q\n' "$PATH"
  printf 'export HOME=%q\n' "${HOME:-/root}"
  printf 'export BEETS_QEMU=1 BEETS_QEMU_OUT=%q\n' "$JOB/out"
  [ "$BTMON" = 1 ] && printf 'export BEETS_QEMU_BTMON=%q\n' "$JOB/logs/btmon.txt"
  printf 'export BEETS_QEMU_BTVIRT_ARGS=%q\n' "$BTVIRT_ARGS"
  printf 'export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket\n'
  while IFS='=' read -r name _; do
    case "$name" in
    RUST_LOG | RUST_BACKTRACE | BEETS_*)
      case "$name" in BEETS_QEMU*) continue ;; esac
      printf 'export %s=%q\n' "$name" "${!name}"
      ;;
    esac
  done < <(env)
  for kv in "${ENVS[@]+"${ENVS[@]}"}"; do
    printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
  done
  printf 'exec'
  printf ' %q' "$@"
  printf '\n'
} >"$JOB/cmd.sh"
: >"$JOB/scenario.out"

# ---------------------------------------------------------------------------------------------
# 4. boot
# ---------------------------------------------------------------------------------------------
KERNEL=$KDIR/vmlinuz
[ -f "$KDIR/vmlinux" ] && [ "${BEETS_QEMU_BZIMAGE:-0}" != 1 ] && KERNEL=$KDIR/vmlinux
qemu=(
  qemu-system-x86_64 -accel "$ACCEL" -cpu max -smp "$SMP" -m "$MEM"
  -nodefaults -no-user-config -display none -no-reboot -monitor none
  -serial "file:$JOB/console.log"
  -kernel "$KERNEL" -initrd "$INITRD"
  -append "console=ttyS0 rdinit=/init panic=-1 loglevel=4 random.trust_cpu=on ${BEETS_QEMU_APPEND:-}"
  -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
  -virtfs "local,path=$BDIR/root,mount_tag=bluez,security_model=none,readonly=on,multidevs=remap"
  -virtfs "local,path=$JOB,mount_tag=job,security_model=none,multidevs=remap"
  -device virtio-rng-pci
  -nic none
)
[ "$ACCEL" = tcg ] || qemu[4]=host
# One boot. Sets booted (the kernel reached /init), reason (why the host stopped it), qrc.
boot_once() {
  rm -f "$JOB/console.log" "$JOB/qemu.log" "$JOB/stage" "$JOB/reason" "$JOB/exit_code" "$JOB/timings"
  : >"$JOB/scenario.out"
  T_BOOT0=$(elapsed)
  "${qemu[@]}" >"$JOB/qemu.log" 2>&1 &
  QEMU_PID=$!
  tail -n +1 -F --pid="$QEMU_PID" "$JOB/scenario.out" 2>/dev/null &
  TAIL_PID=$!
  reason=""
  booted=0
  local deadline_boot=$((SECONDS + BOOT_TIMEOUT)) deadline=$((SECONDS + TIMEOUT))
  while kill -0 "$QEMU_PID" 2>/dev/null; do
    if [ "$booted" = 0 ] && grep -q BEETS_QEMU_INIT_STARTED "$JOB/console.log" 2>/dev/null; then
      booted=1
      T_INIT=$(elapsed)
    fi
    if [ "$booted" = 0 ] && [ $SECONDS -ge $deadline_boot ]; then
      reason="boot: the kernel did not reach /init within ${BOOT_TIMEOUT}s"
      break
    fi
    if [ $SECONDS -ge $deadline ]; then
      reason="timeout: the guest was still running after ${TIMEOUT}s (stage $(cat "$JOB/stage" 2>/dev/null || echo '?'))"
      break
    fi
    sleep 0.2
  done
  if [ -n "$reason" ]; then
    kill "$QEMU_PID" 2>/dev/null || true
    sleep 1
    kill -9 "$QEMU_PID" 2>/dev/null || true
  fi
  qrc=0
  wait "$QEMU_PID" 2>/dev/null || qrc=$?
  QEMU_PID=
  wait "$TAIL_PID" 2>/dev/null || true
  TAIL_PID=
  T_END=$(elapsed)
  if [ "$booted" = 0 ] && grep -q BEETS_QEMU_INIT_STARTED "$JOB/console.log" 2>/dev/null; then
    booted=1
    T_INIT=$T_END
  fi
  return 0
}

log "booting the guest (kernel $(cat "$KDIR/release"), bluez $BVER, ${ACCEL}, ${SMP} cpu, ${MEM} MiB, timeout ${TIMEOUT}s)"
T_INIT=""
boot_once
if [ "$booted" = 0 ] && [ -n "$reason" ]; then
  # A TCG guest on a busy host occasionally stalls early in boot (RCU stall warnings on the
  # console): one more try before giving up.
  log "$reason; console: $(tail -n 2 "$JOB/console.log" 2>/dev/null | tr '\n' ' ' | cut -c1-200)"
  log "booting again"
  boot_once
fi

show_logs() {
  echo "---- guest console (last 40 lines) ----" >&2
  tail -n 40 "$JOB/console.log" >&2 2>/dev/null || true
  [ -s "$JOB/qemu.log" ] && { echo "---- qemu ----" >&2; cat "$JOB/qemu.log" >&2; }
  for f in "$JOB/guest.log" "$JOB"/logs/*; do
    [ -s "$f" ] || continue
    echo "---- ${f#"$JOB"/} (last 30 lines) ----" >&2
    tail -n 30 "$f" >&2
  done
  echo "----" >&2
}

# Guest-side timings (guest uptime per stage) -> one line
tline=""
if [ -f "$JOB/timings" ]; then
  tline=$(awk '{ printf "%s%s %ss", (NR>1?", ":""), $1, $2 }' "$JOB/timings")
fi
span() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
summary="packages $(span "$T_PKG0" "$T_PKG1")s, initramfs $(span "$T_INI0" "$T_INI1")s, qemu start to /init $([ -n "$T_INIT" ] && span "$T_BOOT0" "$T_INIT" || echo '?')s, qemu run $(span "$T_BOOT0" "$T_END")s, total $(elapsed)s"

if [ "$booted" = 0 ]; then
  [ "$VERBOSE" = 1 ] && show_logs
  if [ -z "$reason" ]; then
    reason="qemu exited with status $qrc before the guest reached /init: $(tail -n 3 "$JOB/qemu.log" 2>/dev/null | tr '\n' ' ')"
  fi
  tail -n 20 "$JOB/console.log" >&2 2>/dev/null || true
  skip "$reason"
fi
if [ -f "$JOB/exit_code" ]; then
  rc=$(cat "$JOB/exit_code")
  log "guest stages (guest uptime): $tline"
  log "$summary"
  if [ "$rc" = 124 ] && [ -f "$JOB/reason" ]; then
    echo "run-guest: TIMEOUT: $(cat "$JOB/reason")" >&2
  fi
  [ "$VERBOSE" = 1 ] && show_logs
  log "scenario exit status $rc"
  exit "$rc"
fi
# booted but no exit code: BLE stack failure, guest timeout or crash
show_logs
log "guest stages (guest uptime): $tline"
log "$summary"
if [ -f "$JOB/reason" ]; then
  echo "run-guest: ERROR: guest: $(cat "$JOB/reason")" >&2
  exit $EX_INFRA
fi
if [ -n "$reason" ]; then
  echo "run-guest: TIMEOUT: $reason" >&2
  exit $EX_TIMEOUT
fi
echo "run-guest: ERROR: the guest stopped at stage '$(cat "$JOB/stage" 2>/dev/null || echo '?')' without a result (qemu status $qrc)" >&2
exit $EX_INFRA
