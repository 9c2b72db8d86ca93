use super::*;
use crate::ble;
use proptest::prelude::*;

/// A frame whose name tells it apart: OUT (n) with sequence number `seq`.
fn frame(seq: u8, n: i16) -> BleAdvertisement {
    let [hi, lo] = n.to_be_bytes();
    ble::pack(seq, &[0x48, 0x40, hi, lo]).unwrap()
}

/// A 31-byte message: the largest frame (29-character name, 7 UUIDs).
fn largest() -> BleAdvertisement {
    let mut msg = vec![0x48, 0xc0, 0x3a];
    msg.extend_from_slice(&[b'x'; 28]);
    ble::pack(0, &msg).unwrap()
}

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn config(delta_ms: u64, capacity: usize, policy: QueuePolicy) -> SchedulerConfig {
    SchedulerConfig {
        delta_t: Duration::from_millis(delta_ms),
        queue_capacity: capacity,
        queue_policy: policy,
    }
}

#[test]
fn rotates_queued_frames_every_delta_t() {
    let mut s = Scheduler::new(
        config(500, 16, QueuePolicy::DropOldest),
        AdvertisingLimits::LEGACY,
    );
    let frames: Vec<_> = (0..3).map(|i| frame(i, i16::from(i))).collect();
    for f in &frames {
        assert_eq!(s.push(f.clone()), Ok(None));
    }
    assert_eq!(
        s.poll(t(0)),
        vec![InstanceAction::Start {
            instance: 0,
            adv: frames[0].clone()
        }]
    );
    // Nothing changes before Δt.
    assert!(s.poll(t(499)).is_empty());
    assert_eq!(s.next_wake(), Some(t(500)));
    assert_eq!(
        s.poll(t(500)),
        vec![
            InstanceAction::Stop { instance: 0 },
            InstanceAction::Start {
                instance: 0,
                adv: frames[1].clone()
            }
        ]
    );
    // A late poll: the third frame still gets a full Δt from when it started.
    assert_eq!(
        s.poll(t(1_130)),
        vec![
            InstanceAction::Stop { instance: 0 },
            InstanceAction::Start {
                instance: 0,
                adv: frames[2].clone()
            }
        ]
    );
    assert_eq!(s.next_wake(), Some(t(1_630)));
    assert_eq!(s.poll(t(1_630)), vec![InstanceAction::Stop { instance: 0 }]);
    assert_eq!(s.next_wake(), None);
    let st = s.stats();
    assert_eq!((st.queued, st.started, st.idled), (3, 3, 1));
}

#[test]
fn uses_every_instance_and_never_more() {
    let mut s = Scheduler::new(
        config(500, 16, QueuePolicy::DropOldest),
        AdvertisingLimits::legacy(3),
    );
    for i in 0..5 {
        s.push(frame(i, i16::from(i))).unwrap();
    }
    let starts: Vec<usize> = s
        .poll(t(0))
        .into_iter()
        .map(|a| match a {
            InstanceAction::Start { instance, .. } => instance,
            InstanceAction::Stop { .. } => panic!("nothing to stop"),
        })
        .collect();
    assert_eq!(starts, vec![0, 1, 2]);
    assert_eq!(s.queue_len(), 2);
    assert_eq!(s.on_air().count(), 3);
    // At Δt the two waiting frames replace instances 0 and 1; instance 2 goes idle.
    let actions = s.poll(t(500));
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, InstanceAction::Start { .. }))
            .count(),
        2
    );
    assert_eq!(s.on_air().count(), 2);
    assert_eq!(s.stats().idled, 1);
}

#[test]
fn drop_oldest_policy_drops_the_oldest_waiting_frame() {
    let mut s = Scheduler::new(
        config(500, 2, QueuePolicy::DropOldest),
        AdvertisingLimits::LEGACY,
    );
    let f: Vec<_> = (0..4).map(|i| frame(i, i16::from(i))).collect();
    s.push(f[0].clone()).unwrap();
    let _ = s.poll(t(0)); // f0 on air, queue empty
    assert_eq!(s.push(f[1].clone()), Ok(None));
    assert_eq!(s.push(f[2].clone()), Ok(None));
    assert_eq!(s.push(f[3].clone()), Ok(Some(f[1].clone())));
    assert_eq!(s.stats().dropped_oldest, 1);
    assert_eq!(
        s.poll(t(500))[1],
        InstanceAction::Start {
            instance: 0,
            adv: f[2].clone()
        }
    );
}

#[test]
fn refuse_policy_names_the_limit() {
    let mut s = Scheduler::new(
        config(500, 1, QueuePolicy::Refuse),
        AdvertisingLimits::LEGACY,
    );
    s.push(frame(0, 0)).unwrap();
    let err = s.push(frame(1, 1)).unwrap_err();
    assert_eq!(
        err,
        SchedulerError::QueueFull {
            capacity: 1,
            instances: 1,
            delta_t: Duration::from_millis(500)
        }
    );
    assert!(err.to_string().starts_with(
        "BLE sender queue is full (1 frames waiting for 1 advertising instance(s), each frame on \
         air for 500ms); frame refused"
    ));
    assert_eq!(s.stats().refused, 1);
    assert_eq!(s.queue_len(), 1);
}

#[test]
fn frame_too_large_for_the_controller_names_both_lengths() {
    let adv = largest();
    assert_eq!(adv.local_name.len(), 29);
    assert_eq!(adv.service_uuids.len(), 7);
    assert_eq!((adv_data_len(&adv), scan_rsp_len(&adv)), (16, 31));
    assert_eq!(AdvertisingLimits::LEGACY.check(&adv), Ok(()));
    let small = AdvertisingLimits::new(1, 31, 20);
    let mut s = Scheduler::new(SchedulerConfig::default(), small);
    let err = s.push(adv).unwrap_err();
    assert_eq!(
        err.to_string(),
        "frame needs 16 bytes of advertising data and 31 bytes of scan response; the controller \
         allows 31 and 20 (MaxAdvLen, MaxScnRspLen)"
    );
    assert_eq!(s.stats().too_large, 1);
    // A name-only frame needs no advertising data at all.
    let short = frame(0, 7);
    assert_eq!(adv_data_len(&short), 0);
    assert_eq!(AdvertisingLimits::new(1, 0, 31).check(&short), Ok(()));
}

#[test]
fn receive_only_refuses_every_frame() {
    let mut s = Scheduler::new(SchedulerConfig::default(), AdvertisingLimits::RECEIVE_ONLY);
    assert_eq!(s.push(frame(0, 0)), Err(SchedulerError::ReceiveOnly));
    assert!(s.poll(t(0)).is_empty());
    assert_eq!(s.stats().receive_only, 1);
}

#[test]
fn stop_all_stops_instances_and_discards_the_queue() {
    let mut s = Scheduler::new(SchedulerConfig::default(), AdvertisingLimits::legacy(2));
    for i in 0..4 {
        s.push(frame(i, 0)).unwrap();
    }
    let _ = s.poll(t(0));
    assert_eq!(
        s.stop_all(),
        vec![
            InstanceAction::Stop { instance: 0 },
            InstanceAction::Stop { instance: 1 }
        ]
    );
    assert_eq!(s.stats().discarded, 2);
    assert_eq!(s.next_wake(), None);
}

#[derive(Clone, Debug)]
enum Op {
    Push,
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![Just(Op::Push), (0u64..900).prop_map(Op::Advance)]
}

proptest! {
    /// Whatever the pushes and poll times: never more instances than the controller has, every
    /// frame is accounted for (queued = started + dropped + waiting), frames start in push order,
    /// and each period lasts at least Δt.
    #[test]
    fn invariants(
        ops in proptest::collection::vec(op(), 1..200),
        instances in 1usize..4,
        capacity in 1usize..6,
        delta in 1u64..700,
        refuse in any::<bool>(),
    ) {
        let policy = if refuse { QueuePolicy::Refuse } else { QueuePolicy::DropOldest };
        let mut s = Scheduler::new(config(delta, capacity, policy), AdvertisingLimits::legacy(instances));
        let mut now = 0u64;
        let mut next_id = 0i16;
        let mut last_started: Option<i16> = None;
        let mut on: Vec<Option<(u64, i16)>> = vec![None; instances];
        let mut pushed = 0u64;
        for o in ops {
            match o {
                Op::Push => {
                    let r = s.push(frame(next_id as u8, next_id));
                    pushed += 1;
                    next_id += 1;
                    prop_assert!(r.is_ok() || refuse);
                }
                Op::Advance(d) => now += d,
            }
            for a in s.poll(t(now)) {
                match a {
                    InstanceAction::Start { instance, adv } => {
                        prop_assert!(instance < instances);
                        prop_assert!(on[instance].is_none(), "start on a busy instance");
                        let id = crate::ble::unpack(&adv.local_name, &adv.service_uuids, None)
                            .map(|f| f.seq).unwrap();
                        let id = i16::from(id);
                        if let Some(prev) = last_started { prop_assert!(id > prev, "FIFO order"); }
                        last_started = Some(id);
                        on[instance] = Some((now, id));
                    }
                    InstanceAction::Stop { instance } => {
                        let (since, _) = on[instance].take().expect("stop of an idle instance");
                        prop_assert!(now - since >= delta, "period shorter than Δt");
                    }
                }
            }
            prop_assert!(on.iter().flatten().count() <= instances);
            prop_assert_eq!(on.iter().flatten().count(), s.on_air().count());
            let st = s.stats();
            prop_assert_eq!(st.queued + st.refused, pushed);
            prop_assert_eq!(st.queued, st.started + st.dropped_oldest + s.queue_len() as u64);
            if let Some(w) = s.next_wake() { prop_assert!(w > t(now)); }
        }
    }
}

/// A controller that refuses an announced instance: the refused frame and the frames on the
/// dropped instances go back to the front of the queue, in start order, and are sent first.
#[test]
fn reduce_instances_requeues_the_refused_and_dropped_frames_first() {
    let mut s = Scheduler::new(
        config(500, 16, QueuePolicy::DropOldest),
        AdvertisingLimits::legacy(3),
    );
    for n in 0..4 {
        s.push(frame(n as u8, n)).unwrap();
    }
    let started = s.poll(t(0));
    assert_eq!(started.len(), 3);
    // Instance 1's start failed; the controller holds 1 instance: 1 (refused) and 2 (dropped)
    // are requeued, 2 is stopped.
    let actions = s.reduce_instances(1, Some(1));
    assert_eq!(actions, vec![InstanceAction::Stop { instance: 2 }]);
    assert_eq!(s.limits().instances, 1);
    assert_eq!(s.queue_len(), 3);
    assert_eq!(s.stats().requeued, 2);
    let names: Vec<_> = s.queue.iter().map(|a| a.local_name).collect();
    assert_eq!(
        names,
        vec![
            frame(1, 1).local_name,
            frame(2, 2).local_name,
            frame(3, 3).local_name
        ]
    );
    // Only instance 0 is used from now on.
    assert_eq!(
        s.poll(t(500)),
        vec![
            InstanceAction::Stop { instance: 0 },
            InstanceAction::Start {
                instance: 0,
                adv: frame(1, 1)
            }
        ]
    );
    assert!(s.reduce_instances(2, None).is_empty(), "never grows");
}
