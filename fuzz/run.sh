#!/usr/bin/env bash
# Fuzz every BeeTS target for a fixed time each, one after the other.
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 30 s, all targets)
#
# Uses `cargo +nightly fuzz` (libFuzzer + AddressSanitizer) when a nightly toolchain is installed,
# otherwise `cargo +stable fuzz ... -s none` (libFuzzer without sanitizer; works on stable, no
# RUSTC_BOOTSTRAP needed). Set BEETS_FUZZ_TOOLCHAIN=stable|nightly to force one.
# Seeds from fuzz/seeds/<target>/ are copied into fuzz/corpus/<target>/ (not committed); crashes
# land in fuzz/artifacts/<target>/, full logs in fuzz/artifacts/logs/<target>.log.
# Exit status: 0 if no target crashed, 1 if any did (timeouts and OOMs count as crashes), 2 on
# usage errors.
set -euo pipefail

SECS="${1:-30}"
if ! [[ "$SECS" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi
shift || true

ALL_TARGETS=(message_decode ascii85_decode ble_unframe udp_datagram)
if (($# > 0)); then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$FUZZ_DIR")"
cd "$ROOT"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> cargo-fuzz not found; installing it (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi

TOOLCHAIN="${BEETS_FUZZ_TOOLCHAIN:-}"
if [[ -z "$TOOLCHAIN" ]]; then
    if cargo +nightly --version >/dev/null 2>&1; then TOOLCHAIN=nightly; else TOOLCHAIN=stable; fi
fi
case "$TOOLCHAIN" in
    nightly) FUZZ=(cargo +nightly fuzz) SAN=() ;;
    stable) FUZZ=(cargo +stable fuzz) SAN=(-s none) ;;
    *) echo "BEETS_FUZZ_TOOLCHAIN must be stable or nightly" >&2; exit 2 ;;
esac
echo "==> $("${FUZZ[@]}" --version), toolchain $TOOLCHAIN${SAN[*]:+ (${SAN[*]})}, $SECS s per target"

# Build all targets once up front so the per-target times below are fuzzing time only.
start=$SECONDS
for t in "${TARGETS[@]}"; do
    "${FUZZ[@]}" build --fuzz-dir "$FUZZ_DIR" "${SAN[@]}" "$t"
done
echo "==> build took $((SECONDS - start)) s"

LOG_DIR="$FUZZ_DIR/artifacts/logs"
mkdir -p "$LOG_DIR"
failed=()
summary=()
for t in "${TARGETS[@]}"; do
    corpus="$FUZZ_DIR/corpus/$t"
    mkdir -p "$corpus"
    if [[ -d "$FUZZ_DIR/seeds/$t" ]]; then cp -- "$FUZZ_DIR/seeds/$t"/* "$corpus/"; fi
    log="$LOG_DIR/$t.log"
    echo "==> fuzzing $t for $SECS s (log: ${log#"$ROOT"/})"
    rc=0
    "${FUZZ[@]}" run --fuzz-dir "$FUZZ_DIR" "${SAN[@]}" "$t" "$corpus" -- \
        -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?

    execs="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n1)"
    if [[ -z "$execs" ]]; then execs="$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n1)"; fi
    if [[ -z "$execs" ]]; then execs="$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]].*/\1/p' "$log" | tail -n1)"; fi
    secs="$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n1)"
    units="$(find "$corpus" -type f | wc -l | tr -d ' ')"

    if ((rc == 0)); then
        line="$t: ok, ${execs:-?} executions in ${secs:-?} s, corpus $units files"
    else
        failed+=("$t")
        artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)"
        line="$t: FAILED (exit $rc) after ${execs:-?} executions, input: ${artifact:-see log}"
        echo "---- $t failed; excerpt of ${log#"$ROOT"/} ----"
        grep -m1 -A8 -E 'panicked at|==[0-9]+==ERROR|ERROR: libFuzzer|ALARM: working on the last Unit' "$log" || true
        grep -A2 -E '^(Failing input|Output of `std::fmt::Debug`):' "$log" || true
        echo "----"
    fi
    echo "$line"
    summary+=("$line")
done

echo "==> summary ($TOOLCHAIN, $SECS s per target)"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]} > 0)); then
    echo "==> crashes in: ${failed[*]} (reproduce: ${FUZZ[*]} run --fuzz-dir fuzz ${SAN[*]:+${SAN[*]} }<target> <artifact>)" >&2
    exit 1
fi
