use super::*;
use crate::uuid::uuid128_from_u16;
use beets_core::ble::BleAdvertisement;
use beets_core::{Message, Tuple};

const A: [u8; 6] = [0xC0, 0xBE, 0x75, 0, 0, 1];

fn out_frame(seq: u8, text: &str, key: Option<&FpeKey>) -> BleAdvertisement {
    let tuple: Tuple = text.parse().unwrap();
    ble::pack_message(
        seq,
        &Message::Out {
            tuple,
            lifetime: None,
        },
        key,
    )
    .unwrap()
}

/// A frame long enough to need UUIDs (29-character name).
fn long_frame(seq: u8) -> BleAdvertisement {
    let adv = out_frame(seq, r#"("SENSOR", "LIGHT", 512, 1.5)"#, None);
    assert_eq!(adv.local_name.len(), 29);
    assert!(!adv.service_uuids.is_empty());
    adv
}

fn uuids(adv: &BleAdvertisement) -> Vec<u128> {
    adv.service_uuids
        .iter()
        .map(|&v| uuid128_from_u16(v))
        .collect()
}

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn forwarded_name(out: &ScanOutcome) -> Option<&str> {
    match &out.frame {
        Some(ReceivedFrame {
            frame: OwnedFrame::Advertisement { local_name, .. },
            ..
        }) => Some(local_name),
        _ => None,
    }
}

#[test]
fn name_only_frame_is_forwarded_and_forgotten_once() {
    let mut tr = ScanTracker::new(ScanConfig::default(), None);
    let adv = out_frame(3, "(1)", None);
    let out = tr.update(
        t(0),
        A,
        DeviceUpdate::name(&adv.local_name).with_rssi(Some(-70)),
    );
    let f = out.frame.clone().expect("forwarded");
    assert_eq!(f.from, PeerAddr::Ble(A));
    assert_eq!(f.rssi, Some(-70));
    assert!(out.forget);
    tr.removed(A);
    // BlueZ re-creates the device on the next report of the same frame: forwarded again (the
    // engine dedups), but not forgotten again.
    let again = tr.update(t(100), A, DeviceUpdate::name(&adv.local_name));
    assert!(again.frame.is_some());
    assert!(!again.forget);
    let st = tr.stats();
    assert_eq!((st.forwarded, st.decoded, st.forgets), (2, 2, 1));
}

#[test]
fn name_before_uuids_waits_then_forwards() {
    let mut tr = ScanTracker::new(ScanConfig::default(), None);
    let adv = long_frame(9);
    let out = tr.update(t(0), A, DeviceUpdate::name(&adv.local_name));
    assert_eq!(out, ScanOutcome::default());
    assert_eq!(tr.stats().incomplete, 1);
    let out = tr.update(t(5), A, DeviceUpdate::uuids(uuids(&adv)));
    assert_eq!(forwarded_name(&out), Some(adv.local_name.as_str()));
    assert!(out.forget);
}

#[test]
fn uuids_before_name_counts_no_name_then_forwards() {
    let mut tr = ScanTracker::new(ScanConfig::default(), None);
    let adv = long_frame(9);
    assert_eq!(
        tr.update(t(0), A, DeviceUpdate::uuids(uuids(&adv))),
        ScanOutcome::default()
    );
    assert_eq!(tr.stats().no_name, 1);
    let out = tr.update(t(5), A, DeviceUpdate::name(&adv.local_name));
    assert!(out.frame.is_some() && out.forget);
}

#[test]
fn stale_uuids_of_the_previous_frame_still_decode() {
    // forget off: BlueZ keeps every UUID the address ever advertised.
    let cfg = ScanConfig {
        forget_decoded: false,
        ..ScanConfig::default()
    };
    let mut tr = ScanTracker::new(cfg, None);
    let f1 = long_frame(1);
    let f2 = out_frame(2, r#"("SENSOR", "LIGHT", 513, 2.5)"#, None);
    tr.update(
        t(0),
        A,
        DeviceUpdate::full(Some(f1.local_name.to_string()), uuids(&f1), None),
    );
    let mut both = uuids(&f1);
    both.extend(uuids(&f2));
    let out = tr.update(
        t(500),
        A,
        DeviceUpdate::full(Some(f2.local_name.to_string()), both, None),
    );
    assert_eq!(forwarded_name(&out), Some(f2.local_name.as_str()));
    assert!(!out.forget);
    assert_eq!(tr.stats().decoded, 2);
}

#[test]
fn repeated_identical_reports_are_not_evaluated() {
    let mut tr = ScanTracker::new(ScanConfig::default(), None);
    let adv = long_frame(4);
    let full = DeviceUpdate::full(Some(adv.local_name.to_string()), uuids(&adv), Some(-50));
    assert!(tr.update(t(0), A, full.clone()).frame.is_some());
    for i in 1..10 {
        let out = tr.update(t(i * 100), A, full.clone().with_rssi(Some(-50 - i as i16)));
        assert_eq!(out, ScanOutcome::default());
    }
    assert_eq!(tr.stats().evaluations, 1);
    assert_eq!(tr.stats().updates, 10);
}

#[test]
fn foreign_advertisements_are_counted_not_forwarded() {
    let mut tr = ScanTracker::new(ScanConfig::default(), None);
    let heart_rate = uuid128_from_u16(0x180D);
    let cases = [
        DeviceUpdate::uuids([heart_rate]),                    // no name
        DeviceUpdate::name("Pixel 7 Pro"),                    // space: not A85
        DeviceUpdate::name("abcdefghijklmnopqrstuvwxyzABCD"), // 30 characters, 'v'..'z'
        DeviceUpdate::name("Govee"),                          // too short
        DeviceUpdate::name("\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}"), // NUL padding
    ];
    for (i, c) in cases.into_iter().enumerate() {
        let addr = [0, 0, 0, 0, 0, i as u8];
        assert_eq!(tr.update(t(0), addr, c), ScanOutcome::default());
    }
    let st = tr.stats();
    assert_eq!((st.no_name, st.not_beets, st.forwarded), (1, 4, 0));
    assert!(tr.is_foreign([0, 0, 0, 0, 0, 1]));
    assert!(
        !tr.is_foreign([0, 0, 0, 0, 0, 0]),
        "no name yet: may still be BeeTS"
    );
    // A plausible but foreign name goes to the engine, which counts it as malformed.
    let out = tr.update(t(0), [9; 6], DeviceUpdate::name("LYWSD03MMC"));
    assert!(out.frame.is_some() && !out.forget);
}

#[test]
fn a_pile_of_stale_uuids_makes_the_device_forgotten() {
    let mut tr = ScanTracker::new(ScanConfig::default(), None);
    // A 31-byte message: 7 UUID slots.
    let f = out_frame(1, &format!("(\"{}\")", "x".repeat(28)), None);
    assert_eq!(f.service_uuids.len(), 7);
    // Three extra candidates in every slot: 4^7 combinations, more than unpack examines.
    let mut set = uuids(&f);
    for j in 0..7u16 {
        for d in 0..3u16 {
            set.push(uuid128_from_u16((j << 13) | (0x1000 + d)));
        }
    }
    let out = tr.update(
        t(0),
        A,
        DeviceUpdate::full(Some(f.local_name.to_string()), set, None),
    );
    assert!(out.frame.is_some(), "the engine counts it");
    assert!(out.forget, "a fresh device object gets rid of the pile");
    assert_eq!(tr.stats().decoded, 0);
}

#[test]
fn encrypted_frames_are_recognised_with_the_key() {
    let key = FpeKey::from_password("bee");
    let mut tr = ScanTracker::new(ScanConfig::default(), Some(key.clone()));
    let adv = out_frame(5, r#"("Grüße", 0.001)"#, Some(&key));
    let out = tr.update(
        t(0),
        A,
        DeviceUpdate::full(Some(adv.local_name.to_string()), uuids(&adv), None),
    );
    assert!(out.frame.is_some() && out.forget);
    assert_eq!(tr.stats().decoded, 1);
    // Without the key the frame still goes to the engine (which drops it) but is not forgotten.
    let mut blind = ScanTracker::new(ScanConfig::default(), None);
    let out = blind.update(
        t(0),
        A,
        DeviceUpdate::full(Some(adv.local_name.to_string()), uuids(&adv), None),
    );
    assert!(out.frame.is_some() && !out.forget);
}

#[test]
fn device_table_is_bounded() {
    let cfg = ScanConfig {
        max_devices: 3,
        ..ScanConfig::default()
    };
    let mut tr = ScanTracker::new(cfg, None);
    for i in 0..10u8 {
        tr.update(t(u64::from(i)), [i; 6], DeviceUpdate::name("Pixel 7"));
    }
    assert_eq!(tr.len(), 3);
    assert!(tr.contains([9; 6]) && !tr.contains([0; 6]));
}

#[test]
fn plausible_names() {
    assert!(plausible_name("!*ISn$r]Si;bp<F"));
    assert!(plausible_name(r#"#>"Os;ajG[:JqNn8Ol<N!WYI#!!!""#));
    assert!(!plausible_name("!!!!!!")); // 6 characters
    assert!(!plausible_name("hello world"));
    assert!(!plausible_name("ÄÖÜ-Sensor"));
}
