//! Tier-3 probe: measures the BlueZ backend against real BlueZ in the QEMU guest
//! (`qemu/tier3.sh` runs it; see `qemu/README.md`). Not a user tool.
//!
//! ```text
//! tier3_probe burst --tx hci0 --rx hci1 --count 10 [--delta-t-ms 500] [--connectable auto|yes|no]
//!     [--expect-connectable yes|no] [--expect-delivered all|N|at-most:N|any]
//!     [--expect-starved N] [--rd]
//!     [--sent FILE] [--timeout-s 60]
//! tier3_probe btmon-check --trace btmon.txt --sent FILE [--expect-pdu connectable|non-connectable]
//! ```
//!
//! `burst` runs two nodes in one process: a sender on `--tx` and a receiver on `--rx`. The
//! sender `out`s `--count` distinct tuples whose messages are exactly 31 bytes (a 29-character
//! name plus seven 16-bit UUIDs), appends each message's hex to `--sent`, waits until every
//! frame's advertising period is over and the receiver has stored what it heard, then prints
//! `PROBE key=value` lines (delivered, the sender's `BleStats::advertising`, radio counters) and
//! checks the expectations. `--rd`: the receiver holds a tuple and the sender reads it with `rd`.
//!
//! `btmon-check` reads a `btmon -C 200` trace: it pairs every LE advertising report that carries
//! 16-bit service UUIDs with the next scan response from the same address, unpacks the pair as a
//! BeeTS frame, and checks that every message in `--sent` was on air (decoded from what the
//! receiving controller reported), and, with `--expect-pdu`, that those frames were advertised
//! connectable (ADV_IND) or not (ADV_SCAN_IND / non-connectable extended PDUs).
//!
//! Exit status 0 when every check holds, 1 otherwise, 2 for bad arguments.

use std::collections::{BTreeSet, HashMap};
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use beets_ble::{BleConfig, BleNode, Connectable, bluez};
use beets_core::ble;
use beets_core::node::{Node, NodeConfig, Transport};
use beets_core::{Message, Template, Time, Tuple};

type Error = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("usage: tier3_probe burst|btmon-check ... (see the source)");
        return ExitCode::from(2);
    };
    let opts = match Opts::parse(&args[1..]) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tier3_probe: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cmd.as_str() {
        "burst" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(Error::from)
            .and_then(|rt| rt.block_on(burst(&opts))),
        "btmon-check" => btmon_check(&opts),
        other => Err(format!("unknown command {other}").into()),
    };
    match result {
        Ok(failures) if failures.is_empty() => {
            println!("PROBE RESULT ok");
            ExitCode::SUCCESS
        }
        Ok(failures) => {
            for f in &failures {
                println!("PROBE FAIL {f}");
            }
            println!("PROBE RESULT FAIL ({} check(s))", failures.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("PROBE RESULT FAIL (error: {e})");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` options and `--flag`s.
struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut m = HashMap::new();
        let mut it = args.iter().peekable();
        while let Some(a) = it.next() {
            let key = a
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {a}"))?;
            let value = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().cloned().unwrap_or_default(),
                _ => String::new(),
            };
            m.insert(key.to_owned(), value);
        }
        Ok(Opts(m))
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }

    fn num(&self, k: &str, default: u64) -> Result<u64, Error> {
        self.get(k)
            .map_or(Ok(default), |v| v.parse())
            .map_err(|e| format!("--{k}: {e}").into())
    }
}

fn seed() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

/// A tuple `("T3", i, "xx…")` padded so that its OUT message is exactly 31 bytes.
fn full_tuple(i: u16) -> Result<(Tuple, Message), Error> {
    for pad in 0..31 {
        let text = format!(r#"("T3", {i}, "{}")"#, "x".repeat(pad));
        let tuple: Tuple = text.parse()?;
        let msg = Message::Out {
            tuple: tuple.clone(),
            lifetime: None,
        };
        if msg.to_bytes(None).len() == ble::MAX_MESSAGE_LEN {
            return Ok((tuple, msg));
        }
    }
    Err("no padding makes a 31-byte message".into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn wait_for(within: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn burst(o: &Opts) -> Result<Vec<String>, Error> {
    let count = u16::try_from(o.num("count", 10)?)?;
    let delta_t = Duration::from_millis(o.num("delta-t-ms", 500)?);
    let timeout = Duration::from_secs(o.num("timeout-s", 60)?);
    let connectable = match o.get("connectable").unwrap_or("auto") {
        "auto" => Connectable::Auto,
        "yes" => Connectable::Connectable,
        "no" => Connectable::NonConnectable,
        other => return Err(format!("--connectable {other}: auto, yes or no").into()),
    };
    let session = bluer::Session::new().await?;
    let tx_hci = session.adapter(o.get("tx").unwrap_or("hci0"))?;
    let rx_hci = session.adapter(o.get("rx").unwrap_or("hci1"))?;
    tx_hci.set_powered(true).await?;
    rx_hci.set_powered(true).await?;
    let info = bluez::ControllerInfo::read(&tx_hci).await?;
    println!(
        "PROBE controller={} max_adv_len={} max_scan_rsp_len={} free_instances={} active_instances={} hardware_offload={} extended_advertising={}",
        tx_hci.name(),
        info.max_adv_len,
        info.max_scan_rsp_len,
        info.free_instances,
        info.active_instances,
        info.hardware_offload,
        info.extended_advertising
    );
    let cfg = BleConfig {
        delta_t,
        connectable,
        ..BleConfig::default()
    };
    let node = |name: &str| -> Result<Node, Error> {
        Ok(Node::new(
            NodeConfig::new(Transport::Ble, name)?,
            seed(),
            Time::ZERO,
        ))
    };
    let rx = bluez::spawn("rx", node("rx")?, &rx_hci, &cfg).await?;
    let tx = bluez::spawn("tx", node("tx")?, &tx_hci, &cfg).await?;
    let mut failures = Vec::new();
    let result = run_burst(o, &tx, &rx, count, delta_t, timeout, &mut failures).await;
    tx.close().await;
    rx.close().await;
    result.map(|()| failures)
}

async fn run_burst(
    o: &Opts,
    tx: &BleNode,
    rx: &BleNode,
    count: u16,
    delta_t: Duration,
    timeout: Duration,
    failures: &mut Vec<String>,
) -> Result<(), Error> {
    let st = tx.stats();
    println!(
        "PROBE start connectable={:?} active_instances={:?} supported_instances={:?} foreign_instances={:?} instances={}",
        st.advertising.connectable,
        st.advertising.active_instances,
        st.advertising.supported_instances,
        st.advertising.foreign_instances,
        st.instances
    );
    let mut sent = Vec::new();
    let t0 = Instant::now();
    for i in 0..count {
        let (tuple, msg) = full_tuple(i)?;
        let adv = ble::pack_message(0, &msg, None)?;
        if adv.service_uuids.len() != 7 || adv.local_name.len() != 29 {
            failures.push(format!(
                "frame {i} has {} UUIDs and a {}-character name, not 7 and 29",
                adv.service_uuids.len(),
                adv.local_name.len()
            ));
        }
        sent.push(hex(&msg.to_bytes(None)));
        tx.handle().out(tuple, None).await?;
    }
    if let Some(path) = o.get("sent") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        for s in &sent {
            writeln!(f, "{s}")?;
        }
    }
    let periods = u64::from(count);
    // Every frame started (or refused) and every started frame's period over.
    let all_ended = wait_for(timeout, async || {
        let st = tx.stats();
        st.queue_len == 0
            && st.radio.starts + st.radio.start_errors >= periods + st.scheduler.requeued
            && st.radio.stops >= st.radio.starts
    })
    .await;
    if !all_ended {
        failures.push(format!(
            "not every advertising period ended within {timeout:?}: {:?}",
            tx.stats().radio
        ));
    }
    let air_time = t0.elapsed();
    let template: Template = r#"("T3", ?int16, ?str)"#.parse()?;
    let want = u64::from(count);
    // Frames still on air at the end may reach the receiver a moment later.
    // "all", "N" (exactly), "at-most:N", "any".
    let expectation = o.get("expect-delivered").unwrap_or("all");
    let (expect_delivered, at_most) = match expectation {
        "all" => (Some(want), None),
        "any" => (None, None),
        e => match e.strip_prefix("at-most:") {
            Some(n) => (None, Some(n.parse::<u64>()?)),
            None => (Some(e.parse()?), None),
        },
    };
    let settle = if expect_delivered == Some(want) {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(2) // few or none should come: give a late frame the time to show
    };
    let target = expect_delivered.unwrap_or(want).max(1);
    wait_for(settle, async || {
        rx.handle()
            .host_count(template.clone())
            .await
            .is_ok_and(|n| n as u64 >= target)
    })
    .await;
    let delivered = rx.handle().host_count(template).await? as u64;
    let st = tx.stats();
    let rs = rx.stats();
    println!(
        "PROBE burst frames={count} delivered={delivered} air_time_ms={} delta_t_ms={} starved_frames={} connectable={:?} active_instances={:?} supported_instances={:?} foreign_instances={:?} max_foreign_instances={} read_errors={} instances={} instance_limit={:?} requeued={} starts={} start_errors={} stops={} rx_decoded={}",
        air_time.as_millis(),
        delta_t.as_millis(),
        st.advertising.starved_frames,
        st.advertising.connectable,
        st.advertising.active_instances,
        st.advertising.supported_instances,
        st.advertising.foreign_instances,
        st.advertising.max_foreign_instances,
        st.advertising.read_errors,
        st.instances,
        st.advertising.instance_limit,
        st.scheduler.requeued,
        st.radio.starts,
        st.radio.start_errors,
        st.radio.stops,
        rs.scan.decoded,
    );
    if let Some(want) = expect_delivered
        && delivered != want
    {
        failures.push(format!("delivered {delivered} of {count}, expected {want}"));
    }
    if let Some(max) = at_most
        && delivered > max
    {
        failures.push(format!(
            "delivered {delivered} of {count}, expected at most {max}"
        ));
    }
    if st.radio.start_errors > 0 && st.advertising.instance_limit.is_none() {
        failures.push(format!("{} registrations failed", st.radio.start_errors));
    }
    if let Some(v) = o.get("expect-starved") {
        let want: u64 = v.parse()?;
        if st.advertising.starved_frames != want {
            failures.push(format!(
                "starved_frames = {}, expected {want}",
                st.advertising.starved_frames
            ));
        }
        if want > 0 && st.advertising.max_foreign_instances == 0 {
            failures.push("no foreign advertisement seen".into());
        }
    }
    if let Some(v) = o.get("expect-connectable") {
        let want = v == "yes";
        if st.advertising.connectable != Some(want) {
            failures.push(format!(
                "connectable = {:?}, expected {want}",
                st.advertising.connectable
            ));
        }
    }
    if o.flag("rd") {
        let held: Tuple = r#"("T3RD", "rx", 7)"#.parse()?;
        rx.handle().host_out(held.clone(), None).await?;
        let t = Instant::now();
        let got = tx
            .handle()
            .rd(
                r#"("T3RD", ?str, ?int16)"#.parse()?,
                Duration::from_secs(15),
            )
            .await?;
        println!(
            "PROBE rd answered={} round_trip_ms={}",
            got.is_some(),
            t.elapsed().as_millis()
        );
        match got {
            Some((t, _)) if t == held => {}
            other => failures.push(format!("rd returned {other:?}")),
        }
    }
    Ok(())
}

/// One LE advertising report in a btmon trace.
#[derive(Debug, Default)]
struct Report {
    address: String,
    /// The event type line (`Connectable undirected - ADV_IND (0x00)`, `Scan response …`, or
    /// the extended report's properties).
    kind: String,
    scan_response: bool,
    connectable: bool,
    name: Option<String>,
    uuids: Vec<u16>,
}

/// Reads the LE advertising reports of a `btmon` text trace (legacy and extended).
fn reports(trace: &str) -> Vec<Report> {
    let mut out = Vec::new();
    let mut cur: Option<Report> = None;
    let mut in_uuids = false;
    for line in trace.lines() {
        let t = line.trim();
        if line.starts_with('>')
            || line.starts_with('<')
            || line.starts_with('@')
            || line.starts_with('=')
        {
            if let Some(r) = cur.take() {
                out.push(r);
            }
            in_uuids = false;
            continue;
        }
        if t.starts_with("LE Advertising Report") || t.starts_with("LE Extended Advertising Report")
        {
            if let Some(r) = cur.take() {
                out.push(r);
            }
            cur = Some(Report::default());
            in_uuids = false;
            continue;
        }
        let Some(r) = cur.as_mut() else { continue };
        if let Some(rest) = t.strip_prefix("Event type: ") {
            // A new report inside the same event (Num reports > 1).
            if !r.kind.is_empty() {
                let done = std::mem::take(r);
                out.push(done);
            }
            r.kind = rest.to_owned();
            r.scan_response = rest.contains("SCAN_RSP") || rest.contains("Scan response");
            r.connectable = rest.contains("ADV_IND") || rest.contains("Connectable");
            in_uuids = false;
        } else if t.starts_with("Legacy PDU Type:") || t.starts_with("Props:") {
            r.kind.push_str(" | ");
            r.kind.push_str(t);
            if t.contains("SCAN_RSP") || t.contains("Scan response") {
                r.scan_response = true;
            }
        } else if t == "Connectable" {
            r.connectable = true;
        } else if t == "Scan response" {
            r.scan_response = true;
        } else if let Some(rest) = t.strip_prefix("Address: ") {
            r.address = rest.split_whitespace().next().unwrap_or("").to_owned();
            in_uuids = false;
        } else if let Some(rest) = t.strip_prefix("Name (complete): ") {
            r.name = Some(rest.to_owned());
            in_uuids = false;
        } else if t.starts_with("16-bit Service UUIDs") {
            in_uuids = true;
        } else if in_uuids {
            // "Unknown (0x1234)" or "Some Service Name (0x180f)"
            match t.rsplit_once("(0x") {
                Some((_, h)) if h.len() == 5 && h.ends_with(')') => {
                    if let Ok(v) = u16::from_str_radix(&h[..4], 16) {
                        r.uuids.push(v);
                    }
                }
                _ => in_uuids = false,
            }
        }
    }
    if let Some(r) = cur {
        out.push(r);
    }
    out
}

fn btmon_check(o: &Opts) -> Result<Vec<String>, Error> {
    let trace = std::fs::read_to_string(o.get("trace").ok_or("--trace FILE")?)?;
    let sent: BTreeSet<String> = std::fs::read_to_string(o.get("sent").ok_or("--sent FILE")?)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let reports = reports(&trace);
    let mut decoded: HashMap<String, (u64, bool)> = HashMap::new();
    let (mut pairs, mut bad) = (0u64, 0u64);
    // The latest advertising report with UUIDs per address, waiting for its scan response.
    let mut waiting: HashMap<String, (Vec<u16>, bool)> = HashMap::new();
    for r in &reports {
        if !r.scan_response {
            if !r.uuids.is_empty() {
                waiting.insert(r.address.clone(), (r.uuids.clone(), r.connectable));
            }
            continue;
        }
        let Some(name) = &r.name else { continue };
        if name.len() != 29 {
            continue; // name-only frames and foreign names: not what the probe sends
        }
        let Some((uuids, connectable)) = waiting.get(&r.address) else {
            continue;
        };
        pairs += 1;
        match ble::unpack(name, uuids, None) {
            Ok(f) => {
                let e = decoded
                    .entry(hex(&f.decoded.message.to_bytes(None)))
                    .or_insert((0, *connectable));
                e.0 += 1;
            }
            Err(_) => bad += 1, // UUIDs of one frame with the name of the next, mid-replacement
        }
    }
    let on_air: BTreeSet<&String> = decoded.keys().collect();
    let seen = sent.iter().filter(|s| on_air.contains(s)).count();
    println!(
        "PROBE btmon reports={} pairs={pairs} undecodable_pairs={bad} distinct_messages={} sent={} sent_seen_on_air={seen}",
        reports.len(),
        decoded.len(),
        sent.len()
    );
    let mut failures = Vec::new();
    for s in &sent {
        if !on_air.contains(s) {
            failures.push(format!(
                "sent message {s} was not decoded from the btmon trace"
            ));
        }
    }
    if let Some(pdu) = o.get("expect-pdu") {
        let want = pdu == "connectable";
        for s in &sent {
            if let Some(&(_, c)) = decoded.get(s)
                && c != want
            {
                failures.push(format!(
                    "message {s} went out connectable={c}, expected {want}"
                ));
            }
        }
    }
    if reports.is_empty() {
        failures.push("no LE advertising report in the trace".into());
    }
    Ok(failures)
}
