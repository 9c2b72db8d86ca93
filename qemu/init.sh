#!/bin/busybox sh
# /init of the BeeTS tier-3 BLE guest (copied as is into the initramfs by run-guest.sh).
#
# Runs as PID 1 with only busybox and a few kernel modules. It mounts three 9p shares that
# run-guest.sh exports (hostroot: the host's / read-only; bluez: the extracted BlueZ tree
# read-only; job: the per-run folder, writable), stacks them with overlayfs into a writable
# view of the host (writes go to tmpfs and vanish), starts BlueZ on two virtual LE controllers
# (hci0, hci1 on one virtual air) and runs the caller's command in a chroot of that view.
# Everything it reports goes to files in the job share: stage, reason, exit_code, timings,
# guest.log, logs/*.log, scenario.out.

PATH=/bin:/sbin
export PATH
/bin/busybox mkdir -p /bin /sbin /proc /sys /dev /tmp /job /host /bluez /ovl /newroot
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1

up() { cut -d' ' -f1 /proc/uptime; }
JOBOK=0
say() {
  echo "BEETS_QEMU[$(up)] $*"
  [ "$JOBOK" = 1 ] && echo "[$(up)] $*" >>/job/guest.log
  return 0
}
stage() {
  say "stage $1"
  if [ "$JOBOK" = 1 ]; then
    echo "$1" >/job/stage
    echo "$1 $(up)" >>/job/timings
  fi
}

# Stop everything and power off; never returns. /init must not exit (that panics the kernel).
finish() {
  say "shutting down"
  for p in $BTMON_PID $BTD_PID $BTVIRT_PID $DBUS_PID; do kill "$p" 2>/dev/null; done
  sleep 0.3
  kill -TERM -1 2>/dev/null
  sleep 0.3
  kill -KILL -1 2>/dev/null
  [ "$JOBOK" = 1 ] && echo "poweroff $(up)" >>/job/timings
  sync
  umount /newroot"${JOB_PATH:-/nonexistent}" 2>/dev/null
  umount /job 2>/dev/null
  sync
  poweroff -f
  sleep 5
  echo o >/proc/sysrq-trigger
  while :; do sleep 1; done
}
fail() {
  say "FAILED: $*"
  [ "$JOBOK" = 1 ] && echo "$*" >/job/reason
  finish
}

echo "BEETS_QEMU_INIT_STARTED uptime=$(up)"

# --- kernel modules (order computed on the host with modprobe --show-depends) -------------------
while read -r m; do
  [ -n "$m" ] || continue
  n=${m##*/}
  n=${n%.ko}
  n=$(echo "$n" | tr - _)
  [ -d "/sys/module/$n" ] && continue
  insmod "/lib/modules/$m" || echo "insmod $m failed" >>/tmp/modfail
done </etc/beets-qemu/modules.list

# --- shares -------------------------------------------------------------------------------------
O9=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$O9,cache=none" job /job || fail "cannot mount the job share"
JOBOK=1
: >/job/timings
stage init
echo "modules $(up)" >>/job/timings
[ -f /tmp/modfail ] && cat /tmp/modfail >>/job/guest.log
mkdir -p /job/logs
# shellcheck disable=SC1091
. /job/guest.conf || fail "cannot read guest.conf"

mount -t 9p -o "$O9,ro,cache=loose" hostroot /host || fail "cannot mount the host root (9p)"
mount -t 9p -o "$O9,ro,cache=loose" bluez /bluez || fail "cannot mount the BlueZ tree (9p)"
mount -t tmpfs -o mode=0755 tmpfs /ovl
mkdir -p /ovl/upper /ovl/work
mount -t overlay overlay -o lowerdir=/bluez:/host,upperdir=/ovl/upper,workdir=/ovl/work /newroot ||
  fail "cannot mount the overlay of the host root"
R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o ptmxmode=0666,mode=0620 devpts $R/dev/pts
ln -sf /proc/self/fd $R/dev/fd # devtmpfs lacks the links udev makes (bash's <(...) needs /dev/fd)
ln -sf /proc/self/fd/0 $R/dev/stdin
ln -sf /proc/self/fd/1 $R/dev/stdout
ln -sf /proc/self/fd/2 $R/dev/stderr
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t tmpfs -o mode=0755 tmpfs $R/run
# /tmp stays the overlay view of the host's /tmp (files the caller put there are visible;
# writes stay in the guest).
mkdir -p "$R$JOB_PATH"
mount --bind /job "$R$JOB_PATH" || fail "cannot bind the job share at $JOB_PATH"
echo "mounts $(up)" >>/job/timings
hostname beets-qemu

# Run a host program in the chroot with a clean environment.
BUS=unix:path=/run/dbus/system_bus_socket
inroot() {
  chroot $R /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 DBUS_SYSTEM_BUS_ADDRESS=$BUS "$@"
}
L=/job/logs

# --- D-Bus system bus (Debian's system.conf; BlueZ's policy comes from the bluez share) ----------
stage dbus
mkdir -p $R/run/dbus
inroot dbus-daemon --system --nofork --nopidfile >$L/dbus.log 2>&1 &
DBUS_PID=$!
i=0
until [ -S $R/run/dbus/system_bus_socket ]; do
  i=$((i + 1))
  [ $i -gt 100 ] && fail "dbus-daemon did not create its socket (see logs/dbus.log)"
  kill -0 $DBUS_PID 2>/dev/null || fail "dbus-daemon exited (see logs/dbus.log)"
  sleep 0.1
done

# --- two virtual controllers on one air (BTVIRT_ARGS: -L legacy LE-only, else 5.x with extended
# advertising) -------------------------------------------------------------------------------------
stage btvirt
# shellcheck disable=SC2086
inroot btvirt ${BTVIRT_ARGS:--L -l2} >$L/btvirt.log 2>&1 &
BTVIRT_PID=$!
i=0
until [ -e /sys/class/bluetooth/hci0 ] && [ -e /sys/class/bluetooth/hci1 ]; do
  i=$((i + 1))
  [ $i -gt 150 ] && fail "btvirt did not create hci0 and hci1 (see logs/btvirt.log)"
  kill -0 $BTVIRT_PID 2>/dev/null || fail "btvirt exited (see logs/btvirt.log; it needs the AF_ALG modules)"
  sleep 0.1
done
sleep 0.2
kill -0 $BTVIRT_PID 2>/dev/null || fail "btvirt exited after creating the controllers (see logs/btvirt.log)"

if [ "${BTMON:-0}" = 1 ]; then
  # -C 200: btmon is not writing to a terminal and would cut lines at 80 columns.
  inroot btmon -T -C 200 >$L/btmon.txt 2>&1 &
  BTMON_PID=$!
fi

stage power
for idx in 0 1; do
  inroot btmgmt --index $idx power on >>$L/btmgmt.log 2>&1 || fail "btmgmt --index $idx power on failed (see logs/btmgmt.log)"
done

# --- bluetoothd ------------------------------------------------------------------------------------
stage bluetoothd
# shellcheck disable=SC2086
inroot /usr/libexec/bluetooth/bluetoothd -n $BTD_ARGS >$L/bluetoothd.log 2>&1 &
BTD_PID=$!
i=0
while :; do
  out=$(inroot dbus-send --system --print-reply --dest=org.bluez / \
    org.freedesktop.DBus.ObjectManager.GetManagedObjects 2>/dev/null)
  case "$out" in
  *'"/org/bluez/hci0"'*'"/org/bluez/hci1"'* | *'"/org/bluez/hci1"'*'"/org/bluez/hci0"'*) break ;;
  esac
  i=$((i + 1))
  [ $i -gt 100 ] && fail "bluetoothd did not publish hci0 and hci1 on D-Bus (see logs/bluetoothd.log)"
  kill -0 $BTD_PID 2>/dev/null || fail "bluetoothd exited (see logs/bluetoothd.log)"
  sleep 0.2
done
stage ready

# --- the caller's scenario ---------------------------------------------------------------------------
left=$((${TOTAL_TIMEOUT:-180} - $(up | cut -d. -f1) - ${SHUTDOWN_MARGIN:-10}))
[ $left -lt 5 ] && left=5
echo "$left" >/job/scenario_timeout
stage scenario
inroot /usr/bin/timeout -k 3 "$left" /bin/bash "$JOB_PATH/cmd.sh" </dev/null >/job/scenario.out 2>&1
rc=$?
echo "$rc" >/job/exit_code
[ $rc = 124 ] && echo "scenario timed out after ${left}s (guest budget)" >/job/reason
stage "done"
finish
