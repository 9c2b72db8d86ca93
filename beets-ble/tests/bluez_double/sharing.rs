//! Per-controller choices and a shared adapter: connectable or not, other programs'
//! advertisements (ActiveInstances), a node built for the wrong transport.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use beets_ble::bluez::{self, BluezError, ControllerInfo};
use beets_ble::{BleConfig, BleNode, Connectable, SpawnError};
use beets_core::Time;
use beets_core::node::{Node, NodeConfig, Transport};
use serde_json::{Value, json};

use crate::double::Ctl;
use crate::scenarios::{Error, Outcome, adapter, node, template, tuple, wait_until};

/// Every log line of the child process, kept for assertions (and copied to stderr).
static LOG: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

#[derive(Clone, Copy)]
struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (warnings and above, no colours). Called once by
/// `run_all`.
pub(crate) fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(|| Capture)
        .try_init();
}

/// Captured log lines containing every one of `needles`.
fn log_lines(needles: &[&str]) -> Vec<String> {
    let log = LOG.get_or_init(Mutex::default);
    let text = String::from_utf8_lossy(
        &log.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone(),
    )
    .into_owned();
    text.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

async fn registered(ctl: Ctl, adapter: &str) -> Result<Vec<Value>, Error> {
    let v = ctl
        .call("advertisements", json!({ "adapter": adapter }))
        .await?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// Spawns a node with `mode` on `hci`, sends one frame and returns the registered `Type`.
async fn registered_type(
    ctl: Ctl,
    hci: &bluer::Adapter,
    mode: Connectable,
    seed: u64,
) -> Result<(String, Option<bool>), Error> {
    let cfg = BleConfig {
        connectable: mode,
        ..BleConfig::default()
    };
    let n = bluez::spawn("c", node("c", seed), hci, &cfg).await?;
    n.handle().out(tuple("(1)"), None).await?;
    let name = hci.name().to_owned();
    wait_until(Duration::from_secs(5), "the advertisement", || {
        let f = registered(ctl, &name);
        async { f.await.is_ok_and(|a| !a.is_empty()) }
    })
    .await?;
    let ads = registered(ctl, &name).await?;
    let kind = ads[0]["props"]["Type"].as_str().unwrap_or("?").to_owned();
    let reported = n.stats().advertising.connectable;
    n.close().await;
    wait_until(Duration::from_secs(3), "withdrawn", || {
        let f = registered(ctl, &name);
        async { f.await.is_ok_and(|a| a.is_empty()) }
    })
    .await?;
    Ok((kind, reported))
}

/// Auto: connectable on a legacy controller, non-connectable with extended advertising (spec
/// §6); BleConfig forces either; the choice is in the stats.
pub(crate) async fn connectable_is_chosen_per_controller(ctl: Ctl) -> Outcome {
    let legacy = adapter(ctl, "hci30", json!({ "instances": 1 })).await?;
    let extended = adapter(
        ctl,
        "hci31",
        json!({ "instances": 2, "hardware_offload": true, "tx_power": [-20, 10] }),
    )
    .await?;
    let li = ControllerInfo::read(&legacy).await?;
    let ei = ControllerInfo::read(&extended).await?;
    assert!(!li.extended_advertising && ei.extended_advertising);
    assert!(li.connectable(Connectable::Auto).connectable);
    assert!(!ei.connectable(Connectable::Auto).connectable);
    assert!(
        li.connectable(Connectable::Auto)
            .reason
            .contains("legacy controller")
    );
    let cases = [
        (&legacy, Connectable::Auto, "peripheral"),
        (&extended, Connectable::Auto, "broadcast"),
        (&legacy, Connectable::NonConnectable, "broadcast"),
        (&extended, Connectable::Connectable, "peripheral"),
    ];
    for (i, (hci, mode, want)) in cases.into_iter().enumerate() {
        let (kind, reported) = registered_type(ctl, hci, mode, 300 + i as u64).await?;
        assert_eq!(kind, want, "{} with {mode:?}", hci.name());
        assert_eq!(reported, Some(want == "peripheral"), "{}", hci.name());
    }
    Ok(())
}

/// Sends `n` OUTs `("S", i)` from `tx` and waits until each frame's period has ended.
async fn send_and_wait(tx: &BleNode, first: i16, n: i16) -> Outcome {
    let stops = tx.stats().radio.stops;
    for i in first..first + n {
        tx.handle()
            .out(tuple(&format!(r#"("S", {i})"#)), None)
            .await?;
    }
    let want = stops + u64::try_from(n).unwrap_or(0);
    wait_until(Duration::from_secs(15), "every frame's period over", || {
        let done = tx.stats().radio.stops >= want;
        async move { done }
    })
    .await
}

/// Another program advertises on a legacy controller (one instance on air at a time, as Linux
/// 6.1): BeeTS warns once with BlueZ's numbers, counts each frame that never went on air, and
/// the receiver indeed gets none; once the other advertiser leaves, frames flow and the count
/// stops. On a controller that advertises instances in parallel nothing is counted.
pub(crate) async fn a_foreign_advertiser_is_reported_and_starved_frames_counted(
    ctl: Ctl,
) -> Outcome {
    let tx_hci = adapter(ctl, "hci32", json!({ "instances": 4 })).await?;
    let rx_hci = adapter(ctl, "hci33", json!({ "instances": 1 })).await?;
    let rx = bluez::spawn_listener("rx", node("rx", 321), &rx_hci, &BleConfig::default()).await?;
    let foreign = ctl
        .call(
            "add_foreign",
            json!({ "adapter": "hci32", "name": "OTHER" }),
        )
        .await?;
    assert_eq!(foreign["on_air"], true);
    let cfg = BleConfig {
        delta_t: Duration::from_millis(300),
        ..BleConfig::default()
    };
    let never_before = ctl.call("stats", json!({})).await?["never_aired"]
        .as_u64()
        .unwrap_or(0);
    let tx = bluez::spawn("tx", node("tx", 322), &tx_hci, &cfg).await?;
    // Read at start: one foreign advertisement, 3 of 4 instances free.
    let st = tx.stats().advertising;
    assert_eq!(
        (
            st.active_instances,
            st.supported_instances,
            st.foreign_instances
        ),
        (Some(1), Some(3), Some(1)),
        "{st:?}"
    );
    let warned = log_lines(&["WARN", "adapter=\"hci32\"", "other programs advertise"]);
    assert_eq!(warned.len(), 1, "one warning at start: {warned:?}");
    assert!(
        warned[0].contains("active_instances=1") && warned[0].contains("supported_instances=3"),
        "the warning gives the numbers: {}",
        warned[0]
    );
    send_and_wait(&tx, 0, 4).await?;
    let st = tx.stats().advertising;
    assert_eq!(st.starved_frames, 4, "{st:?}");
    assert_eq!(st.foreign_instances, Some(1));
    let never = ctl.call("stats", json!({})).await?["never_aired"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(never - never_before, 4, "the double aired none of them");
    assert_eq!(rx.handle().host_count(template(r#"("S", ?)"#)).await?, 0);
    assert_eq!(
        log_lines(&["adapter=\"hci32\"", "other programs advertise"]).len(),
        1,
        "warned once only"
    );

    // The other program stops: frames go on air and are not counted.
    ctl.call("remove_foreign", json!({ "adapter": "hci32" }))
        .await?;
    send_and_wait(&tx, 10, 3).await?;
    wait_until(Duration::from_secs(5), "the three frames", || {
        let f = rx.handle().host_count(template(r#"("S", ?)"#));
        async { f.await.is_ok_and(|n| n == 3) }
    })
    .await?;
    let st = tx.stats().advertising;
    assert_eq!(
        (st.starved_frames, st.foreign_instances),
        (4, Some(0)),
        "{st:?}"
    );
    assert_eq!(st.max_foreign_instances, 1);
    assert_eq!(st.read_errors, 0);
    tx.close().await;

    // Parallel instances (HardwareOffload): the foreign advertisement starves nothing.
    let par = adapter(
        ctl,
        "hci34",
        json!({ "instances": 4, "hardware_offload": true, "tx_power": [-20, 10] }),
    )
    .await?;
    ctl.call("add_foreign", json!({ "adapter": "hci34" }))
        .await?;
    let tx = bluez::spawn("par", node("par", 323), &par, &cfg).await?;
    send_and_wait(&tx, 20, 2).await?;
    wait_until(Duration::from_secs(5), "both frames", || {
        let f = rx.handle().host_count(template(r#"("S", ?)"#));
        async { f.await.is_ok_and(|n| n == 5) }
    })
    .await?;
    let st = tx.stats().advertising;
    assert_eq!(
        (st.starved_frames, st.foreign_instances),
        (0, Some(1)),
        "{st:?}"
    );
    assert_eq!(
        log_lines(&["adapter=\"hci34\"", "other programs advertise"]).len(),
        1
    );
    tx.close().await;
    rx.close().await;
    Ok(())
}

/// A node built for UDP is refused with a typed error before anything is registered or any
/// discovery started.
pub(crate) async fn a_udp_node_is_refused_before_touching_bluez(ctl: Ctl) -> Outcome {
    let hci = adapter(ctl, "hci35", json!({ "instances": 1 })).await?;
    let udp = || {
        Node::new(
            NodeConfig::new(Transport::Udp, "udp").expect("name"),
            1,
            Time::ZERO,
        )
    };
    for result in [
        bluez::spawn("udp", udp(), &hci, &BleConfig::default()).await,
        bluez::spawn_listener("udp", udp(), &hci, &BleConfig::default()).await,
    ] {
        match result {
            Err(BluezError::Spawn(SpawnError::WrongTransport(Transport::Udp))) => {}
            other => return Err(format!("expected WrongTransport(Udp), got {other:?}").into()),
        }
    }
    assert!(registered(ctl, "hci35").await?.is_empty());
    assert!(!hci.is_discovering().await?);
    Ok(())
}

/// A controller that announces 3 instances but holds 2 advertising sets (btvirt's 5.x
/// controller in tier 3): the third registration fails once, the node goes on with 2 instances,
/// and the refused frame is sent again, so every frame is delivered.
pub(crate) async fn a_refused_announced_instance_reduces_instances_and_loses_nothing(
    ctl: Ctl,
) -> Outcome {
    let tx_hci = adapter(
        ctl,
        "hci36",
        json!({ "instances": 3, "sets": 2, "hardware_offload": true, "tx_power": [-20, 10] }),
    )
    .await?;
    let rx_hci = adapter(ctl, "hci37", json!({ "instances": 1 })).await?;
    let rx = bluez::spawn_listener("rx", node("rx", 361), &rx_hci, &BleConfig::default()).await?;
    let tx = bluez::spawn("tx", node("tx", 362), &tx_hci, &BleConfig::default()).await?;
    assert_eq!(tx.stats().instances, 3);
    send_and_wait(&tx, 0, 6).await?;
    wait_until(Duration::from_secs(5), "all six frames", || {
        let f = rx.handle().host_count(template(r#"("S", ?)"#));
        async { f.await.is_ok_and(|n| n == 6) }
    })
    .await?;
    let st = tx.stats();
    assert_eq!(st.instances, 2, "{st:?}");
    assert_eq!(st.advertising.instance_limit, Some(2));
    assert_eq!(st.radio.start_errors, 1, "{:?}", st.radio);
    assert_eq!(st.scheduler.requeued, 1, "{:?}", st.scheduler);
    let refused = ctl.call("stats", json!({})).await?["refused_sets"].as_u64();
    assert_eq!(refused, Some(1));
    assert_eq!(
        log_lines(&["adapter=\"hci36\"", "refused an advertising instance"]).len(),
        1
    );
    tx.close().await;
    rx.close().await;
    Ok(())
}
