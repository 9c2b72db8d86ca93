//! Helpers of the tests that build network namespaces (`ip netns`, root only): shared by the
//! facade's `tests/mqtt_buildings.rs` and, through `#[path]`, `beets-udp/tests/netns.rs`.

use std::io::Write;
use std::process::Command;

/// Runs `ip ARGS`; the error names the command and its stderr.
pub(crate) fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

/// Runs `cmd ARGS` to the end; the error names the command and its stderr.
pub(crate) fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{cmd} {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// This process's effective user id (Linux `/proc/self/status`).
pub(crate) fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Deletes namespaces named `<prefix>-<pid>-…` whose process is gone: left by earlier runs that
/// were killed before their guard ran.
pub(crate) fn remove_stale_namespaces(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let mut parts = name.splitn(3, '-');
        if parts.next() != Some(prefix) {
            continue;
        }
        let Some(pid) = parts.next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// Writes to the process's stderr directly, so the line shows even when the harness captures.
pub(crate) fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Prints `SKIPPED: <test>: <reason>`; panics instead of returning when the environment
/// variable `required` is set (CI: a skip is a failure).
pub(crate) fn skip(test: &str, required: &str, reason: &str) {
    let line = format!("SKIPPED: {test}: {reason}");
    report(&line);
    if std::env::var_os(required).is_some_and(|v| v != "0") {
        panic!("{line} (and {required} is set)");
    }
}
