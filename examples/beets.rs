//! `beets`: the BeeTS command-line tool — encode and decode wire-v1 messages, pack and unpack BLE
//! frames, print FPE tables.
//!
//! Run from the repository root:
//!
//! ```text
//! cargo run -q --example beets -- encode OUT '("SENSOR", "LIGHT", 512, 1.5)'
//! cargo run -q --example beets -- decode 48f60c53454e534f520a4c4947485402003fc00000
//! cargo run -q --example beets -- frame --seq 7 48f60c53454e534f520a4c4947485402003fc00000
//! cargo run -q --example beets -- unframe --name '#>"Os;ajG[:JqNn8Ol<N!WYI#!!!"' --uuid 1520
//! cargo run -q --example beets -- fpe-table secret
//! cargo run -q --example beets -- node --udp --broadcast 127.255.255.255 --agent examples/agents/beacon.js
//! cargo run -q --example beets -- rd '("EXHIBIT", ?, ?str)' --wait 10
//! cargo run -q --example beets -- out '("EXHIBIT", 7, "bees")'
//! ```
//!
//! `out`, `rd`, `inp`, `test` and `watch` are one-shot clients of a UDP space (see
//! `common/client.rs`): tuples on stdout in the text syntax, exit 0 on a match, 1 on none.
//!
//! `node` runs one real BeeTS node: a UDP space (`udp-ts`) and, on Linux with BlueZ and the
//! `bluer` feature, a BLE space (`ble-ts`), with JavaScript agents loaded from files. It logs with
//! `tracing` (`RUST_LOG=debug` for more) and exits cleanly on Ctrl-C or after `--exit-after`.
//!
//! Hex output is lowercase without separators; hex input may contain spaces. Bad input prints one
//! line on stderr and exits with code 1.

use std::num::NonZeroU16;
use std::process::ExitCode;

use beets::core::message::{Body, RequestOp};
use beets::core::{FpeKey, Message, Op, ble, text};
use clap::{Parser, Subcommand};

#[path = "common/client.rs"]
mod client;
#[path = "common/runner.rs"]
mod runner;
#[path = "common/seal_cli.rs"]
mod seal_cli;

#[path = "common/plan.rs"]
mod plan;
#[path = "common/plot.rs"]
mod plot;

/// BeeTS wire-format tool (spec wire-v1).
#[derive(Parser)]
#[command(name = "beets", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encode a message: OP is OUT, RD, INP, TEST, TUPLE, IAMHERE or WHERE; the body is a tuple
    /// for OUT/TUPLE/IAMHERE and a template (with `?`, `?int16`, `?float32`, `?str`) otherwise.
    Encode {
        /// The op.
        op: Op,
        /// Tuple or template in the text syntax, e.g. '("SENSOR", ?, 512, 1.5)'.
        #[arg(allow_hyphen_values = true)]
        body: String,
        /// Lifetime in seconds (OUT only, 1..=65535).
        #[arg(long, value_name = "SECS")]
        lifetime: Option<NonZeroU16>,
        /// Wait in seconds (RD, INP, TEST only, 1..=65535; spec §11): receivers without a match
        /// keep the request pending this long.
        #[arg(long, value_name = "SECS", conflicts_with = "lifetime")]
        wait: Option<NonZeroU16>,
        /// Set the reply flag (TUPLE and IAMHERE only).
        #[arg(long)]
        reply: bool,
        /// Encrypt with this space password (FPE, spec §5).
        #[arg(long, value_name = "PASSWORD", allow_hyphen_values = true)]
        key: Option<String>,
        #[command(flatten)]
        seal: seal_cli::SealArgs,
    },
    /// Decode a message given as hex.
    Decode {
        /// The message bytes as hex (spaces allowed).
        #[arg(allow_hyphen_values = true)]
        hex: String,
        /// Space password for encrypted (E=1) messages.
        #[arg(long, value_name = "PASSWORD", allow_hyphen_values = true)]
        key: Option<String>,
        #[command(flatten)]
        seal: seal_cli::SealArgs,
    },
    /// Pack a message (hex) into a BLE frame: prints the local name, then the UUIDs.
    Frame {
        /// Frame sequence number, 0..=255.
        #[arg(long)]
        seq: u8,
        /// The message bytes as hex (as sent, encrypted or not).
        #[arg(allow_hyphen_values = true)]
        hex: String,
    },
    /// Recover the message (hex, as sent) from a local name and service UUIDs.
    Unframe {
        /// The advertised local name (Ascii85 may start with `-`: `--name -Y…` works).
        #[arg(long, allow_hyphen_values = true)]
        name: String,
        /// A 16-bit service UUID as 4 hex digits; repeat for each, in any order.
        #[arg(long = "uuid", value_name = "XXXX", value_parser = parse_uuid16)]
        uuids: Vec<u16>,
        /// Space password, needed to check encrypted (E=1) frames.
        #[arg(long, value_name = "PASSWORD", allow_hyphen_values = true)]
        key: Option<String>,
    },
    /// Print the 256-byte FPE encryption table of a password as hex.
    FpeTable {
        /// The space password.
        #[arg(allow_hyphen_values = true)]
        password: String,
    },
    /// Run one node with agents loaded from files, until Ctrl-C.
    Node(Box<runner::NodeArgs>),
    /// Broadcast one OUT to a UDP space (a one-shot client; prints nothing, exits 0 when sent).
    Out(client::OutArgs),
    /// Read a matching tuple from a UDP space: prints it and exits 0, or exits 1 on none.
    Rd(client::RequestArgs),
    /// Take a matching tuple from a UDP space: prints it and exits 0, or exits 1 on none.
    Inp(client::RequestArgs),
    /// Test for a matching tuple in a UDP space: prints it and exits 0, or exits 1 on none.
    Test(client::RequestArgs),
    /// Print the tuples a UDP space delivers (KIND TUPLE from ADDR rssi N|none) until Ctrl-C,
    /// --count or --timeout; exits 0 when at least one was printed.
    Watch(client::WatchArgs),
    /// Plan a BLE deployment on the simulated medium: delivery ratio, tuples/s per receiver,
    /// queue drops and latency, for one set-up or a sweep; `--plot FILE.svg` draws it.
    Plan(plan::PlanArgs),
}

fn parse_uuid16(s: &str) -> Result<u16, String> {
    let digits = s.trim_start_matches("0x").trim_start_matches("0X");
    if digits.len() != 4 {
        return Err(format!("{s:?} is not 4 hex digits"));
    }
    u16::from_str_radix(digits, 16).map_err(|_| format!("{s:?} is not 4 hex digits"))
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: String = s.split_whitespace().collect();
    hex::decode(&digits).map_err(|e| format!("bad hex input: {e}"))
}

fn run(cli: Cli) -> Result<String, String> {
    match cli.command {
        Command::Node(args) => runner::run(*args).map(|()| String::new()),
        Command::Plan(args) => plan::run(&args),
        Command::Out(args) => client::out(args),
        Command::Rd(args) => client::request(RequestOp::Rd, args),
        Command::Inp(args) => client::request(RequestOp::Inp, args),
        Command::Test(args) => client::request(RequestOp::Test, args),
        Command::Watch(args) => client::watch(args),
        Command::Encode {
            op,
            body,
            lifetime,
            wait,
            reply,
            key,
            seal,
        } => {
            let body = if op.carries_pattern() {
                Body::Template(text::parse_template(&body).map_err(|e| e.to_string())?)
            } else {
                Body::Tuple(text::parse_tuple(&body).map_err(|e| e.to_string())?)
            };
            if wait.is_some() && !matches!(op, Op::Rd | Op::Inp | Op::Test) {
                return Err(format!("--wait is for RD, INP and TEST, not {op}"));
            }
            let msg = Message::from_parts(op, body, lifetime.or(wait), reply)
                .map_err(|e| e.to_string())?;
            if let Some(k) = seal.key()? {
                return seal.encode(&k, &msg);
            }
            let key = key.map(|p| FpeKey::from_password(&p));
            Ok(hex::encode(msg.to_bytes(key.as_ref())))
        }
        Command::Decode { hex, key, seal } => {
            let bytes = parse_hex(&hex)?;
            if let Some(k) = seal.key()? {
                return seal.decode(&k, &bytes);
            }
            let key = key.map(|p| FpeKey::from_password(&p));
            let d = Message::parse(&bytes, key.as_ref()).map_err(|e| e.to_string())?;
            let control = bytes[0];
            let mut out = format!(
                "op: {}\nflags: E={} R={} L={}\n",
                d.message.op(),
                u8::from(d.encrypted),
                (control >> 1) & 1,
                control & 1
            );
            match &d.message {
                Message::Out {
                    tuple,
                    lifetime: Some(l),
                } => out += &format!("lifetime: {l} s\ntuple: {tuple}"),
                Message::Waiting { template, wait, .. } => {
                    out += &format!("wait: {wait} s\ntemplate: {template}")
                }
                m => {
                    if let Some(t) = m.tuple() {
                        out += &format!("tuple: {t}");
                    } else if let Some(t) = m.template() {
                        out += &format!("template: {t}");
                    }
                }
            }
            Ok(out)
        }
        Command::Frame { seq, hex } => {
            let bytes = parse_hex(&hex)?;
            let adv = ble::pack(seq, &bytes).map_err(|e| e.to_string())?;
            let mut out = adv.local_name.to_string();
            if !adv.service_uuids.is_empty() {
                let uuids: Vec<String> = adv
                    .service_uuids
                    .iter()
                    .map(|u| format!("{u:04x}"))
                    .collect();
                out += "\n";
                out += &uuids.join(" ");
            }
            Ok(out)
        }
        Command::Unframe { name, uuids, key } => {
            let key = key.map(|p| FpeKey::from_password(&p));
            let frame = ble::unpack(&name, &uuids, key.as_ref()).map_err(|e| e.to_string())?;
            let key = if frame.decoded.encrypted {
                key.as_ref()
            } else {
                None
            };
            Ok(hex::encode(frame.decoded.message.to_bytes(key)))
        }
        Command::FpeTable { password } => {
            Ok(hex::encode(FpeKey::from_password(&password).enc_table()))
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            print!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("error: bad arguments");
            eprintln!("{first} (see --help)");
            return ExitCode::FAILURE;
        }
    };
    match run(cli) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
