#!/usr/bin/env bash
# Smoke scenario for the tier-3 guest: BLE end to end with BlueZ's own tools, no BeeTS code.
# Runs inside the guest (qemu/run-guest.sh --smoke), as root, with bluetoothd -n -E on
# DBUS_SYSTEM_BUS_ADDRESS and two powered virtual LE controllers hci0, hci1 on one air.
#
#  1. the controllers and the advertising limits the kernel reports (advinfo, advsize);
#  2. mgmt level: a 31-byte advertisement shaped like a BeeTS frame (complete local name + seven
#     16-bit service UUIDs, non-connectable, no flags) on hci0, a 32-byte one rejected, an LE
#     scan on hci1 (btmgmt find -l) that sees it, checked byte for byte in btmon's trace;
#  3. D-Bus level, two bluetoothd clients on different adapters: bluetoothctl registers a
#     broadcast advertisement (name + 16-bit UUID) through LEAdvertisingManager1 on hci0, a second
#     bluetoothctl scans (LE) on hci1, and dbus-send (a host binary linked to libdbus) finds the
#     Device1 with that name and UUID under /org/bluez/hci1.
# Prints "SMOKE PASSED" and exits 0, or "SMOKE FAILED" and exits 1.
set -uo pipefail

T0=$(date +%s.%N)
el() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
section() { printf '\n== %s (+%ss)\n' "$*" "$(el)"; }
FAILS=0
ok() { echo "ok: $* (+$(el)s)"; }
bad() {
  echo "FAIL: $* (+$(el)s)"
  FAILS=$((FAILS + 1))
}
W=$(mktemp -d /tmp/beets-smoke.XXXXXX) # in the guest: the tmpfs overlay, gone at shutdown
OUT=${BEETS_QEMU_OUT:-$W}

# BlueZ's shell-based tools (btmgmt, bluetoothctl) print nothing when stdin is /dev/null or at
# EOF: give them a stdin that stays open for a while.
mg() { timeout "${MGT:-20}" stdbuf -oL btmgmt "$@" < <(sleep 25) 2>&1 | tr -d '\001\002' | sed 's/\x1b\[[0-9;]*m//g'; }
hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
bus() { dbus-send --system --print-reply --dest=org.bluez "$@" 2>&1; }

section "controllers"
for i in 0 1; do
  mg --index $i info | sed -n '1,4p'
done
ADDR0=$(mg --index 0 info | awk '/addr/ { print $2; exit }')
ADDR1=$(mg --index 1 info | awk '/addr/ { print $2; exit }')
[ -n "$ADDR0" ] && [ -n "$ADDR1" ] && ok "hci0 $ADDR0, hci1 $ADDR1" || bad "controller addresses"

section "advertising limits (kernel, hci0)"
mg --index 0 advinfo | tee "$W/advinfo"
echo "-- available adv data by flags (advsize):"
for f in "" "-g" "-c -g" "-n"; do
  # shellcheck disable=SC2086
  printf '%-6s %s\n' "${f:-none}" "$(mg --index 0 advsize $f 1 | awk -F': ' '/Max/ { printf "%s=%s  ", $1, $2 }')"
done
grep -q 'Max advertising data len: 31' "$W/advinfo" && ok "max adv data len 31" || bad "max adv data len is not 31"

section "mgmt: 31-byte BeeTS-shaped advertisement on hci0, LE scan on hci1"
NAME=BEETS-RAW-123 # 13 characters: 15 + 16 = 31 bytes with seven UUIDs
AD="0e09$(hex "$NAME")0f032015211522152315241525152615"
echo "adv data ($((${#AD} / 2)) bytes): $AD"
btmon -T >"$W/btmon.txt" 2>&1 &
BTMON=$!
sleep 1
# (btmgmt exits 1 when the kernel refuses: keep the output, test it afterwards)
r=$(mg --index 0 add-adv -d "$AD" 1 || true)
echo "add-adv 31 bytes: $r"
case "$r" in *'Instance added'*) ok "31 bytes (name + 7 UUIDs, no flags) accepted" ;;
*) bad "31-byte adv data rejected" ;; esac
r=$(mg --index 0 add-adv -d "${AD}00" 2 || true)
echo "add-adv 32 bytes: $r"
case "$r" in *'Invalid Parameters'*) ok "32 bytes rejected" ;;
*) bad "32-byte adv data was not rejected" ;; esac
r=$(mg --index 0 add-adv -g -d "$AD" 3 || true)
echo "add-adv 31 bytes + general-discoverable flag: $r"
case "$r" in *'Invalid Parameters'*) ok "31 bytes with kernel-managed flags (-g) rejected: flags cost 3 bytes" ;;
*) bad "31 bytes with -g were not rejected" ;; esac
mg --index 0 advinfo | grep -i instances
MGT=5 mg --index 1 find -l | tee "$W/find" # LE discovery runs ~10 s; 5 s are plenty here
kill $BTMON 2>/dev/null
wait $BTMON 2>/dev/null
mg --index 0 rm-adv 1 >/dev/null
grep -q "name $NAME" "$W/find" && ok "btmgmt find on hci1 saw $NAME" || bad "btmgmt find on hci1 did not see $NAME"
REPORT=$(awk '/LE Advertising Report/ && /hci1/ { p = 1 } p { print } p && /RSSI/ { exit }' "$W/btmon.txt")
[ -z "$REPORT" ] && REPORT=$(grep -A16 'LE Advertising Report' "$W/btmon.txt" | awk '{ print } /RSSI/ { exit }')
echo "-- btmon, first advertising report on hci1:"
echo "$REPORT" | sed 's/^/   /'
if echo "$REPORT" | grep -q 'Data length: 31' && echo "$REPORT" | grep -q "Name (complete): $NAME" &&
  echo "$REPORT" | grep -q '7 entries' && echo "$REPORT" | grep -q '0x1520'; then
  ok "hci1 received all 31 bytes: complete name + 7 UUIDs"
else
  bad "hci1's advertising report does not hold the 31 bytes sent"
fi
cp "$W/btmon.txt" "$OUT/smoke-btmon.txt" 2>/dev/null || true

section "D-Bus: host binary (dbus-send, libdbus) against the guest's bluetoothd"
echo "dbus-send: $(command -v dbus-send) -> $(ldd "$(command -v dbus-send)" | awk '/libdbus/ { print $3 }')"
if bus / org.freedesktop.DBus.Introspectable.Introspect | grep -q '<node name="org"/>'; then
  ok "Introspect / on org.bluez"
else
  bad "Introspect / on org.bluez failed"
fi
for h in hci0 hci1; do
  a=$(bus /org/bluez/$h org.freedesktop.DBus.Properties.Get string:org.bluez.Adapter1 string:Address |
    awk -F'"' '/string/ { print $2 }')
  p=$(bus /org/bluez/$h org.freedesktop.DBus.Properties.Get string:org.bluez.Adapter1 string:Powered |
    awk '/boolean/ { print $3 }')
  echo "/org/bluez/$h Address $a Powered $p"
done
adv_props() {
  bus /org/bluez/hci0 org.freedesktop.DBus.Properties.GetAll string:org.bluez.LEAdvertisingManager1 |
    awk '/string "/ { k = $0; sub(/.*string "/, "", k); sub(/".*/, "", k) }
         /byte|uint|int32/ && k != "" { printf "%s=%s ", k, $NF; k = "" }
         /array \[/ && k != "" { a = k; k = ""; printf "%s=[", a; arr = 1; next }
         arr && /string "/ { s = $0; sub(/.*string "/, "", s); sub(/".*/, "", s); printf "%s ", s }
         arr && /^ *\]/ { printf "] "; arr = 0 }'
  echo
}
echo "LEAdvertisingManager1 on hci0 before: $(adv_props)"

section "D-Bus: bluetoothctl advertises (broadcast) on hci0, a second bluetoothctl scans LE on hci1"
DNAME=BEETS-DBUS
# Each client reads its commands from a fifo this script writes to, so it can be told to quit.
mkfifo "$W/adv.in" "$W/scan.in"
# client 1: hci0, broadcast advertisement with a local name and one 16-bit service UUID
timeout 60 bluetoothctl <"$W/adv.in" >"$W/ctl-adv.log" 2>&1 &
ADV=$!
exec 7>"$W/adv.in"
sleep 1
printf '%s\n' "select $ADDR0" >&7
sleep 0.5
printf '%s\n' "menu advertise" "uuids 1521" "name $DNAME" "back" "advertise broadcast" >&7
sleep 2
# client 2: hci1, LE discovery
timeout 60 bluetoothctl <"$W/scan.in" >"$W/ctl-scan.log" 2>&1 &
SCAN=$!
exec 8>"$W/scan.in"
sleep 1
printf '%s\n' "select $ADDR1" >&8
sleep 0.5
printf '%s\n' "menu scan" "transport le" "back" "scan on" >&8
FOUND=""
for _ in $(seq 1 30); do
  sleep 0.5
  for dev in $(bus / org.freedesktop.DBus.ObjectManager.GetManagedObjects |
    grep -o 'object path "/org/bluez/hci1/dev_[0-9A-F_]*"' | cut -d'"' -f2 | sort -u); do
    props=$(bus "$dev" org.freedesktop.DBus.Properties.GetAll string:org.bluez.Device1)
    if echo "$props" | grep -q "\"$DNAME\"" &&
      echo "$props" | grep -q '"00001521-0000-1000-8000-00805f9b34fb"'; then
      FOUND=$dev
      break 2
    fi
  done
  sleep 0.5
done
during=$(adv_props)
echo "LEAdvertisingManager1 on hci0 while advertising: $during"
case "$during" in *ActiveInstances=1\ *) ok "hci0 has 1 active advertising instance" ;;
*) bad "hci0 does not report 1 active advertising instance" ;; esac
if [ -n "$FOUND" ]; then
  ok "hci1's bluetoothd has $FOUND with Name $DNAME and UUID 00001521-0000-1000-8000-00805f9b34fb"
  bus "$FOUND" org.freedesktop.DBus.Properties.GetAll string:org.bluez.Device1 |
    awk '/string "(Address|AddressType|Name|Alias|RSSI|Adapter|UUIDs|Paired|Connected)"/ { k = $0; sub(/.*string "/, "", k); sub(/".*/, "", k); n = 3; printf "   %s:", k; next }
         n > 0 && /variant|string|int16|boolean|object path/ { v = $0; sub(/^ *variant */, "", v); printf " %s", v; n-- ; if (v !~ /array/) { print ""; n = 0 } ; next }
         n > 0 && /\]/ { print ""; n = 0 }'
else
  bad "no Device1 named $DNAME with UUID 0x1521 appeared under /org/bluez/hci1"
fi
mine=$(bus / org.freedesktop.DBus.ObjectManager.GetManagedObjects | grep -c 'object path "/org/bluez/hci0/dev_' || true)
echo "devices under hci0 (the advertiser's own adapter): $mine"
# done: stop the scan and the advertisement, quit both clients
printf '%s\n' "devices" "scan off" >&8
sleep 1
printf '%s\n' "quit" >&8
exec 8>&-
printf '%s\n' "advertise off" >&7
sleep 1
printf '%s\n' "quit" >&7
exec 7>&-
wait $SCAN 2>/dev/null
wait $ADV 2>/dev/null
after=$(adv_props)
echo "LEAdvertisingManager1 on hci0 after advertise off: $after"
case "$after" in *ActiveInstances=0\ *) ok "the instance was released" ;;
*) bad "hci0 still reports an active advertising instance" ;; esac
echo "-- bluetoothctl on hci0 (advertiser):"
sed 's/\x1b\[[0-9;]*[a-zA-Z]//g; s/\r//g' "$W/ctl-adv.log" | tr -s ' ' | grep -oE 'Advertising object (un)?registered|Failed.*|Error.*' | head -8 | sed 's/^/   /'
echo "-- bluetoothctl on hci1 (scanner):"
tr -d '\001\002' <"$W/ctl-scan.log" | sed 's/\x1b\[[0-9;]*[a-zA-Z]//g; s/\r//g' | tr -s ' ' | grep -oE "SetDiscoveryFilter success|Discovery (started|stopped)|\[(NEW|DEL)\] Device .*$DNAME|Failed.*|Error.*" | head -8 | sed 's/^/   /'
grep -q 'Advertising object registered' "$W/ctl-adv.log" && ok "bluetoothctl registered the advertisement on hci0" ||
  bad "bluetoothctl did not register the advertisement on hci0"

section "result"
if [ "$FAILS" = 0 ]; then
  echo "SMOKE PASSED ($(el)s)"
  exit 0
fi
echo "SMOKE FAILED: $FAILS check(s) ($(el)s)"
exit 1
