//! Starting, driving and stopping the BlueZ double (`dbus-double/`).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// Debian's interpreter, which has `python3-dbusmock` (another `python3` on PATH may not).
const PYTHON: &str = "/usr/bin/python3";

fn double_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/dbus-double"))
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `Err(reason)` when a tool the double needs is missing.
pub(crate) fn prerequisites() -> Result<(), String> {
    for (tool, package) in [("dbus-daemon", "dbus-daemon"), ("dbus-send", "dbus-bin")] {
        if !on_path(tool) {
            return Err(format!(
                "`{tool}` not found (Debian package {package}); tier-2 BlueZ double tests not run"
            ));
        }
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| PYTHON.into());
    let ok = Command::new(&python)
        .args(["-c", "import dbusmock, gi"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        return Err(format!(
            "{python} cannot import dbusmock and gi (Debian package python3-dbusmock); tier-2 \
             BlueZ double tests not run"
        ));
    }
    Ok(())
}

/// A running double: the private bus and the mock, stopped on drop.
pub(crate) struct Double {
    pub(crate) address: String,
    pids: Vec<String>,
}

impl Double {
    pub(crate) fn launch() -> Result<Double, String> {
        let out = Command::new("sh")
            .arg(double_dir().join("launch.sh"))
            .output()
            .map_err(|e| format!("launch.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "launch.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                .map(str::to_owned)
        };
        let address = get("DBUS_SYSTEM_BUS_ADDRESS").ok_or("launch.sh printed no address")?;
        let pids = ["MOCK_PID", "DBUS_DAEMON_PID"]
            .iter()
            .filter_map(|k| get(k))
            .collect();
        Ok(Double { address, pids })
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        for pid in &self.pids {
            let _ = Command::new("kill").arg(pid).status();
        }
    }
}

/// The double's test control (`org.bluez.Mock.Control`), through `dbus-send` on the bus in
/// `DBUS_SYSTEM_BUS_ADDRESS` (the child process's environment).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Ctl;

impl Ctl {
    /// Runs one command; blocking (a few milliseconds).
    pub(crate) fn call_blocking(command: &str, args: &Value) -> Result<Value, String> {
        let out = Command::new("dbus-send")
            .args([
                "--system",
                "--print-reply=literal",
                "--reply-timeout=20000",
                "--dest=org.bluez",
                "/",
                "org.bluez.Mock.Control",
            ])
            .arg(format!("string:{command}"))
            .arg(format!("string:{args}"))
            .output()
            .map_err(|e| format!("dbus-send: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "Control({command}) failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim())
            .map_err(|e| format!("Control({command}) returned {text:?}: {e}"))
    }

    /// Runs one command without blocking the runtime.
    pub(crate) async fn call(&self, command: &str, args: Value) -> Result<Value, String> {
        let command = command.to_owned();
        tokio::task::spawn_blocking(move || Ctl::call_blocking(&command, &args))
            .await
            .map_err(|e| e.to_string())?
    }
}
