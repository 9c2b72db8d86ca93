#!/usr/bin/env bash
# Tier-3 scenario: the BLE <-> MQTT gateway of `beets node --ble --mqtt` through real BlueZ in
# the QEMU guest, with a real mosquitto (the host's package, seen through the guest's root).
#   a (hci0)  `beets node --ble`: its agent stores ("HELLO", "from-agent", 42) locally only;
#   g (hci1)  `beets node --ble --mqtt`: the BLE gateway joins the air in range to the broker;
#   s         `beets node --udp --mqtt` on loopback: a UDP space's gateway to the same broker;
#   client    `beets rd` on s's UDP port.
# The rd request travels UDP -> broker -> BLE advertisement (g) -> a, and a's reply BLE -> broker
# -> UDP: only a holds the tuple, so an answer proves both directions. Run inside the guest:
#   qemu/run-guest.sh -- bash qemu/ble-mqtt.sh target/tier3/beets
# Prints "BLE-MQTT PASSED ..." and exits 0, or "FAIL: ..." and exits 1.
set -uo pipefail
# Job control: background processes keep SIGINT (without it bash starts them ignoring it), so
# `kill -INT` stops a node cleanly and it prints its counters.
set -m
bin=${1:-target/tier3/beets}
out=${BEETS_QEMU_OUT:-/tmp}
export RUST_LOG=${RUST_LOG:-info}
W=$(mktemp -d /tmp/beets-ble-mqtt.XXXXXX)
broker_port=18830
udp_port=58641
url=mqtt://127.0.0.1:$broker_port
pids=()
broker=
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  pids=()
  [ -n "$broker" ] && kill "$broker" 2>/dev/null && wait "$broker" 2>/dev/null
  broker=
}
trap cleanup EXIT
save_logs() {
  for f in "$W"/*.log; do cp "$f" "$out/ble-mqtt-$(basename "$f")" 2>/dev/null; done
}
fail() {
  echo "FAIL: $*"
  cleanup
  trap - EXIT
  for f in mosquitto s g a; do echo "--- $f"; cat "$W/$f.log" 2>/dev/null; done
  save_logs
  exit 1
}
# Waits up to $3 seconds for a line matching $2 in log $1 (a shell script: polling the file is
# the way to wait for another process's output).
await_line() {
  local i=0
  until grep -q "$2" "$W/$1.log" 2>/dev/null; do
    i=$((i + 1))
    [ $i -gt $(($3 * 5)) ] && return 1
    sleep 0.2
  done
}

ip link set lo up 2>/dev/null || true
mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosq" ] || fail "no mosquitto in the guest (install the host package: apt-get install mosquitto)"
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$broker_port" >"$W/mosquitto.conf"
"$mosq" -v -c "$W/mosquitto.conf" >"$W/mosquitto.log" 2>&1 &
broker=$!
await_line mosquitto "listen socket on port $broker_port\|Opening ipv4 listen socket" 20 ||
  fail "mosquitto did not start"

"$bin" node --udp --port "$udp_port" --broadcast 127.255.255.255 --name s --mqtt "$url" \
  --mqtt-space ble-air --exit-after 90 >"$W/s.log" 2>&1 &
pids+=($!)
"$bin" node --ble --adapter hci1 --name g --mqtt "$url" --mqtt-space ble-air --exit-after 90 \
  >"$W/g.log" 2>&1 &
pids+=($!)
await_line s 'mqtt: gateway connected' 30 || fail "s's UDP gateway did not connect to the broker"
await_line g 'mqtt: gateway connected' 30 || fail "g's BLE gateway did not connect to the broker"
grep -q 'mqtt: BLE gateway' "$W/g.log" || fail "g runs no BLE gateway"

"$bin" node --ble --adapter hci0 --name a --agent tests/agents/producer.js --agents-in-process \
  --exit-after 90 >"$W/a.log" 2>&1 &
pids+=($!)
await_line a 'agent producer: stored' 30 || fail "a's agent did not store the tuple"

# --wait: a request that reaches a before its scanner settles still finds the tuple (spec §11).
if ! "$bin" rd --port "$udp_port" --broadcast 127.255.255.255 --wait 30 \
  '("HELLO", ?, ?)' >"$W/rd.out" 2>"$W/rd.err"; then
  cat "$W/rd.err"
  fail "the rd through the broker and the BLE gateway got no answer"
fi
cleanup
trap - EXIT
echo "--- rd: $(cat "$W/rd.out") ($(tr '\n' ' ' <"$W/rd.err"))"
grep -h 'mqtt BLE gateway:\|mqtt gateway:' "$W/g.log" "$W/s.log"
grep -q '"HELLO", "from-agent", 42' "$W/rd.out" || fail "rd printed $(cat "$W/rd.out")"
line=$(grep -h 'mqtt BLE gateway:' "$W/g.log")
[ -n "$line" ] || fail "g printed no BLE gateway counters"
to_mqtt=$(echo "$line" | sed -n 's/.*ble->mqtt \([0-9]*\).*/\1/p')
to_ble=$(echo "$line" | sed -n 's/.*mqtt->ble \([0-9]*\).*/\1/p')
[ "${to_ble:-0}" -ge 1 ] || fail "the BLE gateway advertised nothing from the broker"
[ "${to_mqtt:-0}" -ge 1 ] || fail "the BLE gateway published nothing from the air"
save_logs
echo "BLE-MQTT PASSED: rd over UDP answered from hci0 through the broker and the BLE gateway on hci1 (mqtt->ble $to_ble, ble->mqtt $to_mqtt)"
