#!/bin/sh
# Starts the BlueZ double on a private D-Bus bus and prints how to reach it:
#
#   DBUS_SYSTEM_BUS_ADDRESS=unix:path=/tmp/dbus-XXXX,guid=...
#   DBUS_DAEMON_PID=1234
#   MOCK_PID=1240
#
# Use:  eval "$(beets-ble/dbus-double/launch.sh)"; export DBUS_SYSTEM_BUS_ADDRESS
#       ... run bluer/btleplug programs, drive the double with dbus-send (README.md) ...
#       kill "$MOCK_PID" "$DBUS_DAEMON_PID"
#
# Needs dbus-daemon (package dbus-daemon), dbus-send (dbus-bin) and python3-dbusmock (Debian's
# /usr/bin/python3; set PYTHON to use another interpreter that has dbusmock and gi).
# Environment: BEETS_DOUBLE_LOG=file keeps the mock's call log (default: discarded);
# BEETS_DOUBLE_PARAMS='{"report_interval_ms": 50}' sets the initial configuration.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-/usr/bin/python3}
log=${BEETS_DOUBLE_LOG:-/dev/null}
params=${BEETS_DOUBLE_PARAMS:-}

command -v dbus-daemon >/dev/null 2>&1 || { echo "launch.sh: dbus-daemon not found (apt-get install dbus-daemon)" >&2; exit 2; }
command -v dbus-send >/dev/null 2>&1 || { echo "launch.sh: dbus-send not found (apt-get install dbus-bin)" >&2; exit 2; }
"$python" -c 'import dbusmock, gi' 2>/dev/null || { echo "launch.sh: $python cannot import dbusmock (apt-get install python3-dbusmock)" >&2; exit 2; }

out=$(dbus-daemon --config-file=/usr/share/dbus-1/session.conf --print-address=1 --print-pid=1 --fork)
address=$(printf '%s\n' "$out" | sed -n 1p)
daemon_pid=$(printf '%s\n' "$out" | sed -n 2p)

if [ -n "$params" ]; then
  DBUS_SYSTEM_BUS_ADDRESS=$address "$python" -m dbusmock --system --template "$here/bluez_beets.py" \
    --parameters "$params" >"$log" 2>&1 &
else
  DBUS_SYSTEM_BUS_ADDRESS=$address "$python" -m dbusmock --system --template "$here/bluez_beets.py" \
    >"$log" 2>&1 &
fi
mock_pid=$!

i=0
until DBUS_SYSTEM_BUS_ADDRESS=$address dbus-send --system --print-reply=literal \
    --dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.NameHasOwner \
    string:org.bluez 2>/dev/null | grep -q true; do
  i=$((i + 1))
  if [ "$i" -gt 200 ] || ! kill -0 "$mock_pid" 2>/dev/null; then
    echo "launch.sh: the mock did not claim org.bluez (log: $log)" >&2
    kill "$mock_pid" "$daemon_pid" 2>/dev/null || true
    exit 1
  fi
  sleep 0.05
done

echo "DBUS_SYSTEM_BUS_ADDRESS=$address"
echo "DBUS_DAEMON_PID=$daemon_pid"
echo "MOCK_PID=$mock_pid"
