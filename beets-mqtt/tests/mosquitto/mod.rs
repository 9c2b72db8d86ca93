//! A mosquitto child process for tests and benches, on a free loopback port with a generated
//! config (shared: `beets-mqtt`'s tests and bench, the facade's process tests include it with
//! `#[path]`). Without the binary, [`Mosquitto::start`] prints `SKIPPED: <reason>` and returns
//! `None`, unless `BEETS_REQUIRE_MQTT=1` (CI), which turns the skip into a failure.
#![allow(dead_code, unreachable_pub)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the broker may take to listen.
const WAIT: Duration = Duration::from_secs(10);

/// A mosquitto child process on 127.0.0.1:`port`.
pub struct Mosquitto {
    bin: PathBuf,
    conf: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

pub fn find_mosquitto() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

impl Mosquitto {
    /// Starts a broker, `None` (after printing SKIPPED) when there is no mosquitto binary.
    pub fn start(test: &str, extra: &str) -> Option<Mosquitto> {
        let Some(bin) = find_mosquitto() else {
            assert!(
                std::env::var("BEETS_REQUIRE_MQTT").as_deref() != Ok("1"),
                "BEETS_REQUIRE_MQTT=1 but no mosquitto binary (apt-get install mosquitto)"
            );
            println!("SKIPPED: {test}: no mosquitto binary (apt-get install mosquitto)");
            return None;
        };
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("beets-mqtt-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let conf = dir.join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\npersistence false\nlog_dest none\n{extra}\n{}",
            if extra.contains("allow_anonymous") {
                ""
            } else {
                "allow_anonymous true\n"
            }
        );
        std::fs::write(&conf, text).expect("config");
        let mut m = Mosquitto {
            bin,
            conf,
            port,
            child: None,
        };
        m.launch();
        Some(m)
    }

    pub fn launch(&mut self) {
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        // Ready when it accepts TCP connections (polled with a deadline).
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {addr}"
            );
            if let Some(c) = &mut self.child
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("mosquitto exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.conf.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
