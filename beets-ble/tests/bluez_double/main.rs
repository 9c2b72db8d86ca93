//! Tier 2: the real bluer (and btleplug) code paths against a BlueZ double on a private D-Bus
//! (`beets-ble/dbus-double/`, spec `ble-testing.md`).
//!
//! Run: `cargo test -p beets-ble --features bluer --test bluez_double` (add `btleplug` for the
//! btleplug scenario). Needs `dbus-daemon`, `dbus-send` and Debian's `python3-dbusmock`; without
//! them (or without the `bluer` feature) it prints `SKIPPED: <reason>` to stderr and passes,
//! unless `BEETS_REQUIRE_TIER2=1` is set, which turns a skip into a failure (for CI).
//!
//! How: the process starts the double with `dbus-double/launch.sh`, then runs itself again with
//! `DBUS_SYSTEM_BUS_ADDRESS` pointing at the private bus (bluer and libdbus read it once, at the
//! first connection, and the environment of a running process cannot be changed without
//! `unsafe`), waits, and stops the two processes it started.

use std::process::ExitCode;

#[cfg(feature = "bluer")]
mod double;
#[cfg(feature = "bluer")]
mod receive;
#[cfg(feature = "bluer")]
mod scenarios;
#[cfg(feature = "bluer")]
mod sharing;

/// Set in the re-run child process.
#[cfg(feature = "bluer")]
const CHILD: &str = "BEETS_DOUBLE_CHILD";
/// Set by CI: a skip is a failure.
const REQUIRE: &str = "BEETS_REQUIRE_TIER2";

fn skip(reason: &str) -> ExitCode {
    eprintln!("SKIPPED: {reason}");
    if std::env::var_os(REQUIRE).is_some() {
        eprintln!("{REQUIRE} is set: a skipped tier-2 run is a failure");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(not(feature = "bluer"))]
fn main() -> ExitCode {
    skip(
        "tier-2 BlueZ double tests need the `bluer` feature \
         (cargo test -p beets-ble --features bluer --test bluez_double)",
    )
}

#[cfg(feature = "bluer")]
fn main() -> ExitCode {
    use std::process::Command;

    if std::env::var_os(CHILD).is_some() {
        return scenarios::run_all();
    }
    if let Err(reason) = double::prerequisites() {
        return skip(&reason);
    }
    let double = match double::Double::launch() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("could not start the BlueZ double: {e}");
            return ExitCode::FAILURE;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot find this test binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let status = Command::new(exe)
        .args(std::env::args().skip(1))
        .env("DBUS_SYSTEM_BUS_ADDRESS", &double.address)
        .env(CHILD, "1")
        .status();
    drop(double);
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("tier-2 scenarios failed ({s})");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("could not run the scenarios: {e}");
            ExitCode::FAILURE
        }
    }
}
