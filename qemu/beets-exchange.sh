#!/usr/bin/env bash
# Tier-3 scenario: two BeeTS nodes exchange a tuple through real BlueZ in the QEMU guest.
# Node a (hci0) stores ("HELLO", "from-agent", 42) with an agent; node b (hci1) reads it with `rd`
# through its agent: request and reply travel as BLE advertisements registered with BlueZ's
# LEAdvertisingManager1 and found by BlueZ discovery. Each node prints the advertising limits the
# controller reports. Run inside the guest by run-guest.sh (see qemu/README.md):
#   qemu/run-guest.sh -- bash qemu/beets-exchange.sh target/debug/examples/beets
set -uo pipefail
bin=${1:-target/debug/examples/beets}
out=${BEETS_QEMU_OUT:-/tmp}
secs=${BEETS_EXCHANGE_SECS:-30}
export RUST_LOG=${RUST_LOG:-info}
# BEETS_A_ARGS / BEETS_B_ARGS: extra options per node (e.g. a sealed space, see tier3.sh).
# Agents run in the node's own thread here (--agents-in-process): under software emulation one
# guest CPU is 10-50x slower than a real one, and a supervised worker's 10 ms CPU budget is
# spent before the agent's first call returns (the budget is made for real devices; on a slow one
# raise Limits::event_budget). The worker process is tested on the host (tests/agents_containment.rs).
# shellcheck disable=SC2086
"$bin" node --ble --adapter "${BEETS_A_ADAPTER:-hci0}" --name a --agent tests/agents/producer.js --exit-after "$secs" --agents-in-process ${BEETS_A_ARGS:-} >"$out/a.log" 2>&1 &
a=$!
sleep 2
# shellcheck disable=SC2086
"$bin" node --ble --adapter "${BEETS_B_ADAPTER:-hci1}" --name b --agent tests/agents/consumer.js --exit-after "$secs" --agents-in-process ${BEETS_B_ARGS:-} >"$out/b.log" 2>&1
b_rc=$?
wait "$a"
a_rc=$?
echo "--- node a (hci0), exit $a_rc"; cat "$out/a.log"
echo "--- node b (hci1), exit $b_rc"; cat "$out/b.log"
grep -q 'controller accepts' "$out/a.log" || { echo "FAIL: node a printed no controller limits"; exit 1; }
grep -q 'agent consumer: GOT \["HELLO","from-agent",42\]' "$out/b.log" || { echo "FAIL: node b never read the tuple"; exit 1; }
[ "$a_rc" -eq 0 ] && [ "$b_rc" -eq 0 ] || { echo "FAIL: a node exited with an error"; exit 1; }
echo "TIER3 PASSED: a tuple stored on hci0 was read with rd from hci1 through real BlueZ"
