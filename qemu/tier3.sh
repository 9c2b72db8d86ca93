#!/usr/bin/env bash
# Tier-3 scenarios: BeeTS through real BlueZ 5.66 (Linux 6.1) in the QEMU guest. Run inside the
# guest by run-guest.sh with --btmon (see qemu/README.md); BIN is a folder holding `beets` (the
# CLI built with --features bluer) and `tier3_probe` (beets-ble's example, same feature):
#
#   qemu/run-guest.sh --btmon -- bash qemu/tier3.sh legacy target/tier3
#   qemu/run-guest.sh --btmon --btvirt -l2 -- bash qemu/tier3.sh extended target/tier3
#
# legacy   (btvirt -L: LE-only controllers, legacy advertising, 31/31 bytes, 1 instance at a time)
#   1. two `beets node --ble` processes (hci0, hci1) exchange a tuple with rd through agents,
#      then again in a sealed space (spec §12);
#   1c. `beets node --ble --mqtt` (hci1) joins the air to a mosquitto in the guest: an rd over UDP
#      through another node's gateway is answered from hci0 (qemu/ble-mqtt.sh);
#   2. ten consecutive 31-byte frames (29-character name + seven UUIDs) hci0 -> hci1, all
#      delivered, advertised connectable (the Auto choice on a legacy controller);
#   3. a foreign advertiser (bluetoothctl advertise on hci0): BeeTS warns once, counts every
#      frame as starved, and at most 2 of 6 are delivered (Linux 6.1 lets the other
#      advertisement keep the air for its 2 s duration before it rotates to a BeeTS frame);
#   4. the btmon trace: every frame sent in 2 decodes from hci1's advertising reports, ADV_IND.
# extended (btvirt -l2: 5.x controllers with extended advertising)
#   1. ten 31-byte frames hci0 -> hci1, non-connectable (Auto), all delivered, then an rd;
#   2. a foreign advertiser on hci0: with parallel instances nothing is starved, all delivered;
#   3. the btmon trace: every frame sent decodes from hci1's reports, non-connectable PDUs.
# Prints "TIER3 <mode> PASSED" and exits 0, or "TIER3 <mode> FAILED: n check(s)" and exits 1.
set -uo pipefail
mode=${1:?usage: tier3.sh legacy|extended BIN_DIR}
bin=${2:-target/tier3}
out=${BEETS_QEMU_OUT:-/tmp}
trace=${BEETS_QEMU_BTMON:-}
export RUST_LOG=${RUST_LOG:-info}
probe=$bin/tier3_probe
W=$(mktemp -d /tmp/beets-tier3.XXXXXX)
sent=$out/sent-$mode.txt
: >"$sent"
fails=0
t0=$SECONDS
section() { printf '\n== [%3ss] %s\n' "$((SECONDS - t0))" "$*"; }
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
bus() { dbus-send --system --print-reply --dest=org.bluez "$@" 2>&1; }
active() {
  bus /org/bluez/hci0 org.freedesktop.DBus.Properties.Get string:org.bluez.LEAdvertisingManager1 \
    string:ActiveInstances | awk '/byte/ { print $NF }'
}
# Runs the probe; its output goes to the log and to $W/probe.out.
run_probe() {
  "$probe" "$@" 2>&1 | tee "$W/probe.out"
  return "${PIPESTATUS[0]}"
}

# A foreign advertiser on hci0: bluetoothctl (fed through a fifo, it needs an open stdin)
# registers a broadcast advertisement through LEAdvertisingManager1, as a user would.
foreign_on() {
  local addr i
  addr=$(bus /org/bluez/hci0 org.freedesktop.DBus.Properties.Get string:org.bluez.Adapter1 \
    string:Address | awk -F'"' '/string/ { print $2 }')
  mkfifo "$W/ctl.in"
  timeout 120 bluetoothctl <"$W/ctl.in" >"$W/ctl.log" 2>&1 &
  CTL=$!
  exec 7>"$W/ctl.in"
  printf '%s\n' "select $addr" "menu advertise" "uuids 1521" "name OTHER-APP" "back" \
    "advertise broadcast" >&7
  i=0
  until [ "$(active)" = 1 ]; do
    i=$((i + 1))
    [ $i -gt 100 ] && { bad "bluetoothctl did not register its advertisement (ActiveInstances $(active))"; cat "$W/ctl.log"; return 1; }
    sleep 0.2
  done
  ok "foreign advertiser registered on hci0 (ActiveInstances 1)"
}
foreign_off() {
  printf '%s\n' "advertise off" "quit" >&7
  exec 7>&-
  wait "$CTL" 2>/dev/null
  rm -f "$W/ctl.in"
  echo "ActiveInstances on hci0 after the foreign advertiser left: $(active)"
}

check_btmon() {
  local pdu=$1
  section "btmon trace: what hci1 received decodes to what was sent ($pdu)"
  if [ -z "$trace" ] || [ ! -s "$trace" ]; then
    bad "no btmon trace (run with --btmon)"
    return
  fi
  sync
  echo "trace: $(wc -l <"$trace") lines; longest $(awk '{ if (length > m) m = length } END { print m }' "$trace") columns"
  grep -m1 -B2 -A14 'LE Advertising Report\|LE Extended Advertising Report' "$trace" | sed 's/^/  | /'
  if run_probe btmon-check --trace "$trace" --sent "$sent" --expect-pdu "$pdu"; then
    ok "every sent 31-byte frame decodes from the trace, $pdu"
  else
    bad "btmon check"
  fi
  cp "$trace" "$out/btmon-$mode.txt" 2>/dev/null || true
}

[ -x "$probe" ] || { echo "FAIL: $probe missing (cargo build -p beets-ble --example tier3_probe --features bluer)"; exit 1; }
echo "tier 3, $mode controllers (btvirt ${BEETS_QEMU_BTVIRT_ARGS:-?}), binaries in $bin"

case $mode in
legacy)
  section "1. two beets node --ble processes: rd through agents (CLI $bin/beets)"
  if BEETS_EXCHANGE_SECS=${BEETS_EXCHANGE_SECS:-20} bash qemu/beets-exchange.sh "$bin/beets" >"$W/exchange.out" 2>&1; then
    ok "$(tail -n 1 "$W/exchange.out")"
  else
    cat "$W/exchange.out"
    bad "the CLI exchange"
  fi
  grep -h 'BeeTS advertises\|controller accepts' "$out/a.log" 2>/dev/null | head -n 2 | cut -c1-240

  section "1b. the same exchange in a sealed space (spec §12: AES-CCM, 4-byte MIC on BLE)"
  key=000102030405060708090a0b0c0d0e0f
  if BEETS_EXCHANGE_SECS=${BEETS_EXCHANGE_SECS:-20} \
    BEETS_A_ARGS="--seal-key $key --source-id 1 --state-dir $W/seal-a" \
    BEETS_B_ARGS="--seal-key $key --source-id 2 --state-dir $W/seal-b" \
    bash qemu/beets-exchange.sh "$bin/beets" >"$W/sealed.out" 2>&1; then
    ok "sealed: $(tail -n 1 "$W/sealed.out")"
  else
    cat "$W/sealed.out"
    bad "the sealed CLI exchange"
  fi
  grep -q 'sealed spaces: key' "$out/a.log" && ok "node a ran a sealed space" || bad "node a was not sealed"

  section "1c. the BLE <-> MQTT gateway: rd over UDP answered from hci0 through mosquitto and hci1"
  if bash qemu/ble-mqtt.sh "$bin/beets" >"$W/ble-mqtt.out" 2>&1; then
    ok "$(tail -n 1 "$W/ble-mqtt.out")"
    grep -h 'mqtt BLE gateway:\|mqtt gateway:' "$W/ble-mqtt.out" | cut -c1-240
  else
    cat "$W/ble-mqtt.out"
    bad "the BLE <-> MQTT gateway"
  fi

  section "2. ten consecutive 31-byte frames (seven UUIDs) hci0 -> hci1, connectable (Auto, legacy)"
  run_probe burst --tx hci0 --rx hci1 --count 10 --expect-delivered all --expect-connectable yes \
    --expect-starved 0 --sent "$sent" && ok "10 of 10 delivered" || bad "burst on a legacy controller"
  grep -q 'BeeTS advertises connectable.*legacy controller' "$W/probe.out" &&
    ok "the choice and the reason are logged" || bad "no log line for the connectable choice"

  section "3. a foreign advertiser on hci0 starves BeeTS; reported and counted"
  if foreign_on; then
    run_probe burst --tx hci0 --rx hci1 --count 6 --expect-delivered at-most:2 --expect-starved 6 &&
      ok "$(grep -o 'delivered=[0-9]*' "$W/probe.out") of 6, 6 counted as starved" || bad "foreign advertiser case"
    n=$(grep -c 'other programs advertise on this adapter' "$W/probe.out")
    [ "$n" = 1 ] && ok "warned once: $(grep -o 'active_instances=[0-9]* supported_instances=[0-9]*' "$W/probe.out" | head -n 1)" ||
      bad "expected one warning about other advertisers, got $n"
    foreign_off
  fi
  check_btmon connectable
  ;;
extended)
  section "1. ten consecutive 31-byte frames hci0 -> hci1, non-connectable (Auto, extended), then rd"
  run_probe burst --tx hci0 --rx hci1 --count 10 --expect-delivered all --expect-connectable no \
    --expect-starved 0 --rd --sent "$sent" && ok "10 of 10 delivered, rd answered" ||
    bad "burst on an extended-advertising controller"
  grep -q 'BeeTS advertises non-connectable.*extended advertising' "$W/probe.out" &&
    ok "the choice and the reason are logged" || bad "no log line for the non-connectable choice"

  section "2. a foreign advertiser on hci0: parallel instances, nothing starved"
  if foreign_on; then
    run_probe burst --tx hci0 --rx hci1 --count 4 --expect-delivered all --expect-starved 0 \
      --sent "$sent" && ok "4 of 4 delivered beside the foreign advertiser" ||
      bad "foreign advertiser on an extended controller"
    foreign_off
  fi
  check_btmon non-connectable
  ;;
*)
  echo "unknown mode $mode (legacy | extended)"
  exit 2
  ;;
esac

echo
if [ "$fails" = 0 ]; then
  echo "TIER3 $mode PASSED (${SECONDS}s in the guest)"
  exit 0
fi
echo "TIER3 $mode FAILED: $fails check(s)"
exit 1
