//! Tier-2 scenarios on the receiving side: BlueZ's reporting quirks, foreign advertisements,
//! discovery restarts, btleplug.

use std::time::Duration;

use beets_ble::bluez;
use beets_ble::{BleConfig, ScanConfig};
use beets_core::ble::{self, BleAdvertisement};
use beets_core::{Message, Template};
use serde_json::{Value, json};

use crate::double::Ctl;
use crate::scenarios::{Outcome, adapter, frame_json, node, template, tuple, wait_until};

/// Frames arriving the way BlueZ delivers them — name before or after the UUIDs, stale UUIDs
/// of the previous frame in the set, every PropertiesChanged repeated, reports repeated — are
/// each decoded once.
pub(crate) async fn bluez_quirks_decode_each_frame_once(ctl: Ctl) -> Outcome {
    let hci = adapter(ctl, "hci13", json!({ "instances": 1 })).await?;
    ctl.call("configure", json!({ "repeat_signals": 2 }))
        .await?;
    let r = bluez::spawn_listener("r", node("r", 31), &hci, &BleConfig::default()).await?;
    let addr = "D0:00:00:00:00:01";
    let frames: Vec<BleAdvertisement> = (0..9u8)
        .map(|i| {
            let msg = Message::Out {
                tuple: tuple(&format!(r#"("QUIRK", {i}, "padding-padding")"#)),
                lifetime: None,
            };
            ble::pack_message(100 + i, &msg, None).expect("fits")
        })
        .collect();
    assert!(
        frames
            .iter()
            .all(|f| f.local_name.len() == 29 && f.service_uuids.len() >= 2)
    );
    let orders = ["name_first", "uuids_first", "together"];
    let mut prev: Option<&BleAdvertisement> = None;
    for (i, f) in frames.iter().enumerate() {
        let mut item = frame_json("hci13", addr, f, orders[i % 3]);
        item["repeat"] = json!(3);
        if let Some(p) = prev {
            // Stale UUIDs of the previous frame, as BlueZ keeps them on a device it has not
            // been asked to forget.
            item["extra_uuids"] = json!(
                p.service_uuids
                    .iter()
                    .map(|&u| u64::from(u))
                    .collect::<Vec<_>>()
            );
        }
        ctl.call("inject", item).await?;
        prev = Some(f);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    wait_until(Duration::from_secs(5), "nine frames", || {
        let f = r.handle().stats();
        async { f.await.is_ok_and(|s| s.node.messages_in >= 9) }
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = r.handle().stats().await?.node;
    assert_eq!(e.messages_in, 9, "each frame decoded once: {e:?}");
    for i in 0..9 {
        let t = tuple(&format!(r#"("QUIRK", {i}, "padding-padding")"#));
        assert_eq!(r.handle().host_count(Template::exact(&t)).await?, 1);
    }
    let sc = r.stats().scan;
    assert!(
        sc.forgets >= 9,
        "every new frame made BlueZ forget the device: {sc:?}"
    );
    // Whether the later Name/UUIDs signal is seen separately or already in the first property
    // read depends on when bluer subscribes; both paths decode once (unit tests pin each).
    r.close().await;

    // Phase 2: a scanner that never removes devices (like btleplug). One device object per
    // address: UUIDs pile up (4 frames × 4 slots = 256 combinations, the most unpack examines),
    // the name changes before or after them, every signal comes twice.
    let hci = adapter(ctl, "hci19", json!({ "instances": 1 })).await?;
    let keep = BleConfig {
        scan: ScanConfig {
            forget_decoded: false,
            ..ScanConfig::default()
        },
        ..BleConfig::default()
    };
    let r = bluez::spawn_listener("r2", node("r2", 32), &hci, &keep).await?;
    for (i, f) in frames.iter().take(4).enumerate() {
        let mut item = frame_json("hci19", addr, f, orders[i % 2]);
        item["repeat"] = json!(3);
        ctl.call("inject", item).await?;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    wait_until(Duration::from_secs(5), "four frames", || {
        let f = r.handle().stats();
        async { f.await.is_ok_and(|s| s.node.messages_in >= 4) }
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = r.handle().stats().await?.node;
    assert_eq!(e.messages_in, 4, "each frame decoded once: {e:?}");
    let devices = ctl.call("devices", json!({ "adapter": "hci19" })).await?;
    let dev = devices
        .as_object()
        .and_then(|o| o.values().next())
        .ok_or("no device")?;
    let kept = dev["UUIDs"].as_array().map_or(0, Vec::len);
    assert!(
        kept > frames[3].service_uuids.len(),
        "stale UUIDs kept: {dev}"
    );
    let sc = r.stats().scan;
    assert_eq!(sc.forgets, 0);
    assert!(
        sc.updates > sc.evaluations,
        "repeated PropertiesChanged signals change nothing and are not re-evaluated: {sc:?}"
    );
    ctl.call("configure", json!({ "repeat_signals": 1 }))
        .await?;
    r.close().await;
    Ok(())
}

/// The 675 third-party advertisements of `real_ble_ads.jsonl`, delivered as BlueZ devices, are
/// all dropped quietly and counted; none reaches the space.
pub(crate) async fn real_foreign_advertisements_are_dropped_quietly_and_counted(
    ctl: Ctl,
) -> Outcome {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/real_ble_ads.jsonl"
    );
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let hci = adapter(ctl, "hci14", json!({ "instances": 1 })).await?;
    let r =
        bluez::spawn_listener("foreign", node("foreign", 41), &hci, &BleConfig::default()).await?;
    let mut items = Vec::new();
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let ad: Value = serde_json::from_str(line)?;
        // D-Bus strings cannot hold NUL; BlueZ's name parsing stops there too.
        let name = ad["name"]
            .as_str()
            .map(|n| n.split('\0').next().unwrap_or_default().to_owned())
            .filter(|n| !n.is_empty());
        let mut uuids: Vec<u64> = Vec::new();
        for key in ["uuids16", "svcdata_uuids16"] {
            if let Some(a) = ad[key].as_array() {
                uuids.extend(a.iter().filter_map(Value::as_u64));
            }
        }
        let rssi = ad["rssi"].as_i64().unwrap_or(-70);
        items.push(json!({
            "adapter": "hci14",
            "address": format!("F0:0D:00:00:{:02X}:{:02X}", i / 256, i % 256),
            "name": name,
            "uuids": uuids,
            "rssi": rssi,
            "order": "together",
        }));
    }
    let total = items.len() as u64;
    assert_eq!(total, 675);
    for chunk in items.chunks(75) {
        ctl.call("inject", json!({ "items": chunk })).await?;
    }
    wait_until(Duration::from_secs(30), "all 675 evaluated", || {
        let s = r.stats().scan;
        let f = r.handle().stats();
        async move {
            let seen = s.no_name + s.not_beets + s.incomplete + s.forwarded;
            seen >= total && f.await.is_ok_and(|d| d.node.frames_in >= s.forwarded)
        }
    })
    .await?;
    let s = r.stats().scan;
    let e = r.handle().stats().await?.node;
    println!(
        "    foreign ads: {} without a name, {} names that cannot be BeeTS, {} held back \
         (incomplete), {} handed to the engine and dropped as malformed",
        s.no_name, s.not_beets, s.incomplete, e.dropped_malformed
    );
    assert_eq!(s.no_name + s.not_beets + s.incomplete + s.forwarded, total);
    assert_eq!(
        e.messages_in, 0,
        "no foreign advertisement is a BeeTS message"
    );
    assert_eq!(
        e.dropped_malformed, s.forwarded,
        "everything forwarded is counted as malformed"
    );
    assert_eq!(s.decoded, 0);
    assert_eq!(s.forgets, 0, "foreign devices are never removed from BlueZ");
    assert_eq!(r.handle().host_tuples().await?.len(), 0);
    r.close().await;
    Ok(())
}

/// Discovery restarted every 300 ms (against controllers that filter duplicate reports per
/// address): StopDiscovery/StartDiscovery go through BlueZ and frames keep being decoded once.
pub(crate) async fn periodic_discovery_restarts_keep_frames_coming(ctl: Ctl) -> Outcome {
    let h_tx = adapter(ctl, "hci20", json!({ "instances": 1 })).await?;
    let h_rx = adapter(ctl, "hci21", json!({ "instances": 1 })).await?;
    let restart = BleConfig {
        scan: ScanConfig {
            restart_every: Some(Duration::from_millis(300)),
            ..ScanConfig::default()
        },
        ..BleConfig::default()
    };
    let rx = bluez::spawn_listener("rx", node("rx", 71), &h_rx, &restart).await?;
    let tx = bluez::spawn("tx", node("tx", 72), &h_tx, &BleConfig::default()).await?;
    for i in 0..6 {
        tx.handle()
            .out(tuple(&format!(r#"("R", {i})"#)), None)
            .await?;
    }
    wait_until(Duration::from_secs(8), "six frames across restarts", || {
        let f = rx.handle().host_count(template(r#"("R", ?)"#));
        async { f.await.is_ok_and(|n| n == 6) }
    })
    .await?;
    let sc = rx.stats().scan;
    assert!(sc.discovery_starts >= 5, "restarted: {sc:?}");
    assert_eq!(sc.stack_errors, 0, "{sc:?}");
    assert_eq!(rx.handle().stats().await?.node.messages_in, 6);
    tx.close().await;
    rx.close().await;
    Ok(())
}

/// btleplug (bluez-async) against the same double: a receive-only node hears a sender.
#[cfg(feature = "btleplug")]
pub(crate) async fn btleplug_listener_receives_through_bluez(ctl: Ctl) -> Outcome {
    use btleplug::api::{Central as _, Manager as _};

    ctl.call("add_adapter", json!({ "name": "hci17", "instances": 1 }))
        .await?;
    let manager = btleplug::platform::Manager::new().await?;
    let mut central = None;
    for a in manager.adapters().await? {
        if a.adapter_info().await?.starts_with("hci17") {
            central = Some(a);
        }
    }
    let central = central.ok_or("btleplug does not see hci17")?;
    let listener =
        beets_ble::btle::spawn_listener("bt", node("bt", 61), &central, &BleConfig::default())
            .await?;
    let h = adapter(ctl, "hci18", json!({ "instances": 1 })).await?;
    let sender = bluez::spawn("tx", node("tx", 62), &h, &BleConfig::default()).await?;
    for i in 0..3 {
        sender
            .handle()
            .out(tuple(&format!("(\"BT\", {i})")), None)
            .await?;
    }
    wait_until(Duration::from_secs(8), "three OUTs via btleplug", || {
        let f = listener.handle().host_count(template(r#"("BT", ?)"#));
        async { f.await.is_ok_and(|n| n == 3) }
    })
    .await?;
    // Receive-only: a send is refused, counted, and the `out` says so.
    let refused = listener.handle().out(tuple("(1)"), None).await;
    assert!(
        matches!(&refused, Err(beets_core::driver::ClientError::Refused(_))),
        "{refused:?}"
    );
    assert_eq!(listener.stats().scheduler.receive_only, 1);
    sender.close().await;
    listener.close().await;
    Ok(())
}
