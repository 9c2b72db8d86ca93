//! The tier-2 scenarios, run in the child process (DBUS_SYSTEM_BUS_ADDRESS = the double's bus).

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use beets_ble::BleConfig;
use beets_ble::bluez::{self, BluezError, BluezRadio, ControllerInfo};
use beets_ble::uuid::uuid16_from_u128;
use beets_core::ble::{self, BleAdvertisement};
use beets_core::node::{Node, NodeConfig, Transport};
use beets_core::{Message, PeerAddr, Template, Time, Tuple};
use serde_json::{Value, json};

use crate::double::Ctl;
use crate::{receive, sharing};

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Outcome = Result<(), Error>;
type Scenario = fn(Ctl) -> Pin<Box<dyn Future<Output = Outcome> + Send>>;

const SCENARIO_TIMEOUT: Duration = Duration::from_secs(90);

macro_rules! scenario {
    ($($f:ident)::+) => {
        (
            [$(stringify!($f)),+].last().copied().unwrap_or_default(),
            (|c| Box::pin($($f)::+(c))) as Scenario,
        )
    };
}

pub(crate) fn run_all() -> ExitCode {
    let mut scenarios: Vec<(&str, Scenario)> = vec![
        scenario!(registered_advertisement_carries_exactly_the_frame),
        scenario!(two_nodes_exchange_through_bluez),
        scenario!(receive::bluez_quirks_decode_each_frame_once),
        scenario!(receive::real_foreign_advertisements_are_dropped_quietly_and_counted),
        scenario!(frame_too_large_for_the_controller_is_refused_before_registering),
        scenario!(no_free_advertising_instance_is_a_clear_error),
        scenario!(receive::periodic_discovery_restarts_keep_frames_coming),
        scenario!(sharing::connectable_is_chosen_per_controller),
        scenario!(sharing::a_foreign_advertiser_is_reported_and_starved_frames_counted),
        scenario!(sharing::a_udp_node_is_refused_before_touching_bluez),
        scenario!(sharing::a_refused_announced_instance_reduces_instances_and_loses_nothing),
    ];
    sharing::capture_logs();
    #[cfg(feature = "btleplug")]
    scenarios.push(scenario!(receive::btleplug_listener_receives_through_bluez));
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !filter.is_empty() {
        scenarios.retain(|(name, _)| filter.iter().any(|f| name.contains(f.as_str())));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "\nrunning {} tier-2 scenarios (BlueZ double)",
        scenarios.len()
    );
    let mut failed = Vec::new();
    for (name, f) in scenarios {
        let started = Instant::now();
        let result = rt.block_on(async move {
            let task = tokio::spawn(tokio::time::timeout(SCENARIO_TIMEOUT, f(Ctl)));
            match task.await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(format!("timed out after {SCENARIO_TIMEOUT:?}").into()),
                Err(e) if e.is_panic() => Err("panicked (see above)".into()),
                Err(e) => Err(e.to_string().into()),
            }
        });
        match result {
            Ok(()) => println!(
                "test {name} ... ok ({:.1} s)",
                started.elapsed().as_secs_f64()
            ),
            Err(e) => {
                println!("test {name} ... FAILED: {e}");
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        println!("\ntier-2 result: ok\n");
        ExitCode::SUCCESS
    } else {
        println!("\ntier-2 result: FAILED: {failed:?}\n");
        ExitCode::FAILURE
    }
}

// --- helpers ---------------------------------------------------------------------------------

pub(crate) fn node(name: &str, seed: u64) -> Node {
    Node::new(
        NodeConfig::new(Transport::Ble, name).expect("short name"),
        seed,
        Time::ZERO,
    )
}

pub(crate) fn tuple(s: &str) -> Tuple {
    s.parse().expect("tuple text")
}

pub(crate) fn template(s: &str) -> Template {
    s.parse().expect("template text")
}

/// Adds an adapter to the double and returns bluer's handle to it.
pub(crate) async fn adapter(
    ctl: Ctl,
    name: &str,
    mut spec: Value,
) -> Result<bluer::Adapter, Error> {
    spec["name"] = json!(name);
    ctl.call("add_adapter", spec).await?;
    let session = bluer::Session::new().await?;
    Ok(session.adapter(name)?)
}

async fn advertisements(ctl: Ctl, adapter: &str) -> Result<Vec<Value>, Error> {
    let v = ctl
        .call("advertisements", json!({ "adapter": adapter }))
        .await?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// Polls `cond` every 20 ms until it holds or `within` passes.
pub(crate) async fn wait_until<F, Fut>(within: Duration, what: &str, mut cond: F) -> Outcome
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("waited {within:?} for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn uuid16s(props: &Value) -> Vec<u16> {
    let mut v: Vec<u16> = props["ServiceUUIDs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(|s| u128::from_str_radix(&s.replace('-', ""), 16).ok())
                .filter_map(uuid16_from_u128)
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

pub(crate) fn frame_json(
    adapter: &str,
    address: &str,
    adv: &BleAdvertisement,
    order: &str,
) -> Value {
    json!({
        "adapter": adapter,
        "address": address,
        "name": adv.local_name.as_str(),
        "uuids": adv.service_uuids.iter().map(|&u| u64::from(u)).collect::<Vec<_>>(),
        "order": order,
    })
}

// --- scenarios -------------------------------------------------------------------------------

/// What bluer registers is exactly the frame: the name, the UUID set, broadcast type, the
/// requested interval, nothing else; and Δt later, with an empty queue, it is unregistered.
async fn registered_advertisement_carries_exactly_the_frame(ctl: Ctl) -> Outcome {
    // A legacy controller: one instance, no TX power range in SupportedCapabilities (bluer 0.17
    // cannot parse that dictionary; the backend falls back to 31/31).
    let hci = adapter(ctl, "hci10", json!({ "instances": 1 })).await?;
    let info = ControllerInfo::read(&hci).await?;
    assert_eq!(
        (
            info.free_instances,
            info.hardware_offload,
            info.max_adv_len,
            info.max_scan_rsp_len
        ),
        (1, false, 31, 31)
    );
    let ble = bluez::spawn("s1", node("s1", 11), &hci, &BleConfig::default()).await?;
    assert_eq!(ble.stats().instances, 1);
    let reading = tuple(r#"("SENSOR", "LIGHT", 512, 1.5)"#);
    ble.handle().out(reading.clone(), None).await?;
    wait_until(Duration::from_secs(5), "the advertisement", || {
        let f = advertisements(ctl, "hci10");
        async { f.await.is_ok_and(|a| !a.is_empty()) }
    })
    .await?;
    let ads = advertisements(ctl, "hci10").await?;
    assert_eq!(ads.len(), 1);
    let props = &ads[0]["props"];
    // Connectable by default: a scanning node cannot rotate random addresses (BleConfig docs).
    assert_eq!(props["Type"], "peripheral");
    let name = props["LocalName"].as_str().expect("LocalName");
    let uuids = uuid16s(props);
    let frame = ble::unpack(name, &uuids, None)?;
    assert_eq!(
        frame.decoded.message,
        Message::Out {
            tuple: reading,
            lifetime: None
        }
    );
    // Re-pack with the frame's seq: name and UUID set must be exactly that.
    let expected = ble::pack_message(frame.seq, &frame.decoded.message, None)?;
    let mut expected_uuids = expected.service_uuids.to_vec();
    expected_uuids.sort_unstable();
    assert_eq!(name, expected.local_name.as_str());
    assert_eq!(name.len(), 29);
    assert_eq!(uuids, expected_uuids);
    assert_eq!(props["MinInterval"], 100);
    assert_eq!(props["MaxInterval"], 100);
    for absent in [
        "Discoverable",
        "Appearance",
        "Duration",
        "Timeout",
        "TxPower",
    ] {
        assert!(
            props.get(absent).is_none(),
            "{absent} must not be set: {props}"
        );
    }
    for empty in [
        "ManufacturerData",
        "ServiceData",
        "SolicitUUIDs",
        "Data",
        "Includes",
    ] {
        let v = &props[empty];
        assert!(
            v.is_null()
                || v.as_array().is_some_and(Vec::is_empty)
                || v.as_object().is_some_and(|o| o.is_empty()),
            "{empty} must be empty: {v}"
        );
    }
    // Δt = 500 ms and nothing queued: the advertisement is withdrawn.
    wait_until(Duration::from_secs(3), "unregistration after Δt", || {
        let f = advertisements(ctl, "hci10");
        async { f.await.is_ok_and(|a| a.is_empty()) }
    })
    .await?;
    let st = ble.stats();
    assert_eq!((st.radio.starts, st.radio.start_errors), (1, 0));
    assert_eq!(st.scheduler.idled, 1);
    ble.close().await;
    Ok(())
}

/// Two bluer nodes on two adapters of the double exchange out/rd/inp/test/notify; every frame
/// reaches the other engine exactly once.
async fn two_nodes_exchange_through_bluez(ctl: Ctl) -> Outcome {
    let spec = json!({ "instances": 2, "hardware_offload": true, "tx_power": [-20, 10] });
    let h1 = adapter(ctl, "hci11", spec.clone()).await?;
    let h2 = adapter(ctl, "hci12", spec).await?;
    let cfg = BleConfig::default();
    let a = bluez::spawn("a", node("a", 21), &h1, &cfg).await?;
    let b = bluez::spawn("b", node("b", 22), &h2, &cfg).await?;
    assert_eq!(
        a.stats().instances,
        2,
        "HardwareOffload: both instances used"
    );
    let (sa, sb) = (a.handle(), b.handle());
    let mut notes = sb.subscribe(template(r#"("NOTE", ?)"#), 8).await?;

    sa.out(tuple(r#"("SENSOR", "LIGHT", 512)"#), None).await?;
    wait_until(Duration::from_secs(5), "b stores the OUT", || {
        let f = sb.host_count(template(r#"("SENSOR", ?, ?)"#));
        async { f.await.is_ok_and(|n| n == 1) }
    })
    .await?;
    let (got, how) = sa
        .rd(
            template(r#"("SENSOR", "LIGHT", ?)"#),
            Duration::from_secs(5),
        )
        .await?
        .ok_or("no rd reply")?;
    assert_eq!(got, tuple(r#"("SENSOR", "LIGHT", 512)"#));
    assert!(matches!(how.from, PeerAddr::Ble(_)));
    assert_eq!(how.rssi, Some(-55));
    sa.test(template(r#"("SENSOR", ?, ?)"#), Duration::from_secs(5))
        .await?
        .ok_or("no test reply")?;
    sa.inp(template(r#"("SENSOR", ?, ?)"#), Duration::from_secs(5))
        .await?
        .ok_or("no inp reply")?;
    assert_eq!(sb.host_count(template(r#"("SENSOR", ?, ?)"#)).await?, 0);
    sa.notify(tuple(r#"("NOTE", "hi")"#)).await?;
    let note = tokio::time::timeout(Duration::from_secs(5), notes.recv()).await?;
    assert_eq!(note.map(|d| d.tuple), Some(tuple(r#"("NOTE", "hi")"#)));

    // b heard out, rd, test, inp, notify: each once; a heard the three replies once each.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let eb = sb.stats().await?.node;
    let ea = sa.stats().await?.node;
    assert_eq!(eb.messages_in, 5, "b: {eb:?}");
    assert_eq!(ea.messages_in, 3, "a: {ea:?}");
    assert!(eb.duplicates > 0, "BlueZ reports repeat every frame");
    let (sta, stb) = (a.stats(), b.stats());
    assert_eq!(sta.radio.start_errors + stb.radio.start_errors, 0);
    assert!(
        stb.scan.forgets >= 1,
        "decoded devices are removed: {:?}",
        stb.scan
    );
    let mock = ctl.call("stats", json!({})).await?;
    assert!(
        mock["removed"].as_u64() >= Some(1),
        "RemoveDevice reached BlueZ: {mock}"
    );
    a.close().await;
    b.close().await;
    wait_until(
        Duration::from_secs(3),
        "all advertisements withdrawn",
        || {
            let f1 = advertisements(ctl, "hci11");
            let f2 = advertisements(ctl, "hci12");
            async { f1.await.is_ok_and(|v| v.is_empty()) && f2.await.is_ok_and(|v| v.is_empty()) }
        },
    )
    .await
}

/// A controller with a short scan response: the frame is refused by the scheduler, naming both
/// sizes, and nothing is registered (BlueZ would otherwise silently truncate the name).
async fn frame_too_large_for_the_controller_is_refused_before_registering(ctl: Ctl) -> Outcome {
    let spec = json!({ "instances": 1, "max_scan_rsp_len": 20, "tx_power": [-20, 10] });
    let hci = adapter(ctl, "hci15", spec).await?;
    let info = ControllerInfo::read(&hci).await?;
    assert_eq!((info.max_adv_len, info.max_scan_rsp_len), (31, 20));
    let n = bluez::spawn("small", node("small", 51), &hci, &BleConfig::default()).await?;
    let refused = n
        .handle()
        .out(tuple(r#"("SENSOR", "LIGHT", 512, 1.5)"#), None)
        .await;
    let Err(beets_core::driver::ClientError::Refused(why)) = refused else {
        return Err(format!("expected a refusal at out, got {refused:?}").into());
    };
    let why = why.to_string();
    assert!(why.contains("20"), "{why}");
    let st = n.stats().scheduler;
    assert_eq!(st.too_large, 1);
    assert_eq!(n.handle().stats().await?.send_errors, 1);
    assert!(advertisements(ctl, "hci15").await?.is_empty());
    // A short frame (15-character name, 17 bytes of scan response) fits.
    n.handle().out(tuple("(1)"), None).await?;
    wait_until(Duration::from_secs(3), "the short frame", || {
        let f = advertisements(ctl, "hci15");
        async { f.await.is_ok_and(|a| a.len() == 1) }
    })
    .await?;
    let err = beets_ble::AdvertisingLimits::new(1, 31, 20)
        .check(&ble::pack(
            0,
            &[
                0x48, 0xc0, 0x3a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 0, 0, 0,
            ],
        )?)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("31 bytes of scan response; the controller allows 31 and 20")
    );
    n.close().await;
    Ok(())
}

/// Every instance taken by other programs: the radio refuses to start with a clear error.
async fn no_free_advertising_instance_is_a_clear_error(ctl: Ctl) -> Outcome {
    let hci = adapter(ctl, "hci16", json!({ "instances": 0 })).await?;
    match BluezRadio::new(&hci, &BleConfig::default()).await {
        Err(e @ BluezError::NoAdvertisingInstance { .. }) => {
            assert!(
                e.to_string()
                    .starts_with("adapter hci16 has no free advertising instance")
            );
            Ok(())
        }
        other => Err(format!("expected NoAdvertisingInstance, got {other:?}").into()),
    }
}
