//! Property tests of the hub state machine: random sequences of sends,
//! receives, settlements, purges, device deletes and clock jumps, checked
//! against IoT Hub's C2D invariants after every step, and replayed from the
//! event log at the end to prove that a restart rebuilds the same state.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use courier_core::{
    AckMode, C2dMessage, DeliveryCountMode, DeviceId, DeviceSpec, FeedbackSettings, FreshIdentity,
    HubEvent, HubSettings, HubState, IfMatch, LockToken, MessageProperties, Outcome, QueueEvent,
    QueueLimits, SequenceNumber, Timestamp,
};
use proptest::prelude::*;

const DEVICES: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Send {
        dev: usize,
        ack: AckMode,
        ttl_s: Option<u16>,
        body: u8,
    },
    Receive {
        dev: usize,
    },
    Complete {
        dev: usize,
        pick: usize,
    },
    Release {
        dev: usize,
        pick: usize,
    },
    Reject {
        dev: usize,
        pick: usize,
    },
    Abandon {
        dev: usize,
        pick: usize,
    },
    StaleSettle {
        dev: usize,
    },
    Purge {
        dev: usize,
    },
    Recreate {
        dev: usize,
    },
    Advance {
        ms: u32,
    },
    Tick,
    ReceiveFeedback,
    CompleteFeedback {
        pick: usize,
    },
    AbandonFeedback {
        pick: usize,
    },
    ReleaseFeedback {
        pick: usize,
    },
}

fn ack() -> impl Strategy<Value = AckMode> {
    prop_oneof![
        Just(AckMode::None),
        Just(AckMode::Positive),
        Just(AckMode::Negative),
        Just(AckMode::Full)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let dev = 0..DEVICES;
    prop_oneof![
        6 => (dev.clone(), ack(), proptest::option::of(1u16..400), any::<u8>())
            .prop_map(|(dev, ack, ttl_s, body)| Op::Send { dev, ack, ttl_s, body }),
        5 => dev.clone().prop_map(|dev| Op::Receive { dev }),
        3 => (dev.clone(), 0usize..8).prop_map(|(dev, pick)| Op::Complete { dev, pick }),
        2 => (dev.clone(), 0usize..8).prop_map(|(dev, pick)| Op::Reject { dev, pick }),
        2 => (dev.clone(), 0usize..8).prop_map(|(dev, pick)| Op::Abandon { dev, pick }),
        1 => (dev.clone(), 0usize..8).prop_map(|(dev, pick)| Op::Release { dev, pick }),
        1 => dev.clone().prop_map(|dev| Op::StaleSettle { dev }),
        1 => dev.clone().prop_map(|dev| Op::Purge { dev }),
        1 => dev.prop_map(|dev| Op::Recreate { dev }),
        3 => (0u32..90_000).prop_map(|ms| Op::Advance { ms }),
        2 => Just(Op::Tick),
        2 => Just(Op::ReceiveFeedback),
        1 => (0usize..4).prop_map(|pick| Op::CompleteFeedback { pick }),
        1 => (0usize..4).prop_map(|pick| Op::AbandonFeedback { pick }),
        1 => (0usize..4).prop_map(|pick| Op::ReleaseFeedback { pick }),
    ]
}

fn settings(mode: DeliveryCountMode) -> HubSettings {
    HubSettings {
        hub_name: "hub".into(),
        limits: QueueLimits {
            max_queue_depth: 5,
            max_message_size: 1024,
            default_ttl: Duration::from_secs(300),
            max_ttl: Duration::from_secs(600),
            max_delivery_count: 3,
            lock_timeout: Duration::from_secs(60),
        },
        delivery_count_mode: mode,
        feedback: FeedbackSettings {
            ttl: Duration::from_secs(600),
            max_delivery_count: 3,
            lock_timeout: Duration::from_secs(30),
            batch_window: Duration::from_secs(1),
            max_batch_records: 4,
        },
    }
}

/// The test's own bookkeeping: what it sent, and what the event log says
/// happened to each message.
#[derive(Default)]
struct Audit {
    /// message id -> ack mode, for accepted sends.
    sent: HashMap<String, AckMode>,
    /// (device, seq) -> message id, for messages currently in a queue.
    live: HashMap<(String, SequenceNumber), String>,
    /// message id -> terminal outcome.
    terminal: HashMap<String, Outcome>,
    /// message ids dropped with their device.
    dropped: HashSet<String>,
    /// feedback (message id, status) closed into batches, in order.
    batched: Vec<(String, Outcome)>,
}

impl Audit {
    fn observe(&mut self, events: &[HubEvent]) {
        for e in events {
            match e {
                HubEvent::Queue { device_id, event } => {
                    let dev = device_id.as_str().to_owned();
                    match event {
                        QueueEvent::Enqueued { seq, payload, .. } => {
                            let mid = payload.properties.message_id.clone().unwrap();
                            assert!(self.live.insert((dev, *seq), mid).is_none());
                        }
                        QueueEvent::Locked { seq, .. } | QueueEvent::Returned { seq, .. } => {
                            let mid = &self.live[&(dev, *seq)];
                            assert!(
                                !self.terminal.contains_key(mid),
                                "{mid} touched after it ended"
                            );
                        }
                        QueueEvent::Sequence { .. } => {}
                        QueueEvent::Removed { seq, outcome, .. } => {
                            let mid = self.live.remove(&(dev, *seq)).expect("removed twice");
                            let prev = self.terminal.insert(mid.clone(), *outcome);
                            assert!(prev.is_none(), "{mid} ended twice");
                        }
                    }
                }
                HubEvent::DeviceDeleted(id) => {
                    let keys: Vec<_> = self
                        .live
                        .keys()
                        .filter(|(d, _)| d == id.as_str())
                        .cloned()
                        .collect();
                    for k in keys {
                        let mid = self.live.remove(&k).unwrap();
                        self.dropped.insert(mid);
                    }
                }
                HubEvent::FeedbackClosed(QueueEvent::Enqueued { payload, .. }) => {
                    assert!(!payload.records.is_empty(), "empty feedback batch");
                    for r in &payload.records {
                        self.batched
                            .push((r.original_message_id.clone().unwrap_or_default(), r.status));
                    }
                }
                _ => {}
            }
        }
    }
}

fn check_invariants(state: &HubState) {
    let limits = state.settings().limits;
    for entry in state.devices() {
        assert!(
            entry.queue.len() <= limits.max_queue_depth as usize,
            "depth over limit"
        );
        for item in entry.queue.items() {
            assert!(
                item.delivery_count < limits.max_delivery_count,
                "delivery count reached the max without dead-lettering"
            );
        }
    }
    for item in state.feedback_queue().items() {
        assert!(!item.payload.records.is_empty());
        assert!(item.payload.records.len() <= state.settings().feedback.max_batch_records);
    }
}

fn run(ops: Vec<Op>, mode: DeliveryCountMode) {
    let settings = settings(mode);
    let mut state = HubState::new(settings.clone());
    let mut log: Vec<HubEvent> = Vec::new();
    let mut audit = Audit::default();
    let mut now = Timestamp(1_700_000_000_000);
    let mut token_seq: u128 = 0;
    let mut next_token = || {
        token_seq += 1;
        LockToken(token_seq.to_be_bytes())
    };
    let mut msg_seq = 0u64;
    let mut generation = 0u64;
    let ids: Vec<DeviceId> = (0..DEVICES)
        .map(|i| DeviceId::new(format!("dev-{i}")).unwrap())
        .collect();
    let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string();
    let fresh = |generation: &mut u64| {
        *generation += 1;
        FreshIdentity {
            generation_id: format!("gen-{generation}"),
            primary_key: key.clone(),
            secondary_key: key.clone(),
        }
    };
    for id in &ids {
        let mut out = Vec::new();
        state
            .put_device(
                now,
                id.clone(),
                DeviceSpec::default(),
                IfMatch::Absent,
                fresh(&mut generation),
                &mut out,
            )
            .unwrap();
        audit.observe(&out);
        log.extend(out);
    }
    // Locks the test holds, per device, and on feedback batches.
    let mut held: Vec<Vec<LockToken>> = vec![Vec::new(); DEVICES];
    let mut held_fb: Vec<LockToken> = Vec::new();

    for op in ops {
        let mut out = Vec::new();
        match op {
            Op::Send {
                dev,
                ack,
                ttl_s,
                body,
            } => {
                msg_seq += 1;
                let mid = format!("m{msg_seq}");
                let msg = C2dMessage {
                    properties: MessageProperties {
                        message_id: Some(mid.clone()),
                        ack,
                        expiry_time_utc: ttl_s
                            .map(|s| now.saturating_add(Duration::from_secs(s.into()))),
                        ..Default::default()
                    },
                    body: vec![body; usize::from(body) % 64],
                };
                let before = state.device(&ids[dev]).map(|e| e.queue.len());
                match state.send(now, &ids[dev], msg, &mut out) {
                    Ok(_) => {
                        audit.sent.insert(mid, ack);
                    }
                    Err(courier_core::HubError::QueueFull { .. }) => {
                        assert_eq!(before, Some(5));
                    }
                    Err(courier_core::HubError::InvalidExpiry(_)) => {
                        assert!(ttl_s.unwrap() > 600);
                    }
                    Err(e) => panic!("unexpected send error {e}"),
                }
            }
            Op::Receive { dev } => {
                let t = next_token();
                if let Some(d) = state.receive(now, &ids[dev], t, &mut out).unwrap() {
                    assert!(d.delivery_count < 3);
                    assert!(d.expiry_time > now, "expired message delivered");
                    held[dev].push(t);
                }
            }
            Op::Complete { dev, pick } | Op::Reject { dev, pick } | Op::Abandon { dev, pick } => {
                if held[dev].is_empty() {
                    continue;
                }
                let n = held[dev].len();
                let t = held[dev].remove(pick % n);
                let r = match op {
                    Op::Complete { .. } => state.complete(now, &ids[dev], t, &mut out),
                    Op::Reject { .. } => state.reject(now, &ids[dev], t, &mut out),
                    _ => state.abandon(now, &ids[dev], t, &mut out),
                };
                // A lock may have lapsed or the message expired or been purged.
                if let Err(e) = r {
                    assert_eq!(e, courier_core::HubError::LockLost);
                }
            }
            Op::Release { dev, pick } => {
                if held[dev].is_empty() {
                    continue;
                }
                let n = held[dev].len();
                let t = held[dev].remove(pick % n);
                let counts = |s: &HubState| -> Vec<(SequenceNumber, u32)> {
                    s.device(&ids[dev])
                        .unwrap()
                        .queue
                        .items()
                        .map(|i| (i.seq, i.delivery_count))
                        .collect()
                };
                let mut swept = Vec::new();
                state.tick(now, &mut swept);
                audit.observe(&swept);
                log.extend(swept);
                let before = counts(&state);
                match state.release(now, &ids[dev], t, &mut out) {
                    // Back in the queue, its delivery count unchanged.
                    Ok(()) => assert_eq!(counts(&state), before),
                    Err(e) => assert_eq!(e, courier_core::HubError::LockLost),
                }
            }
            Op::StaleSettle { dev } => {
                let t = next_token();
                assert_eq!(
                    state.complete(now, &ids[dev], t, &mut out),
                    Err(courier_core::HubError::LockLost)
                );
            }
            Op::Purge { dev } => {
                let before = state.device(&ids[dev]).unwrap().queue.len();
                let n = state.purge(now, &ids[dev], &mut out).unwrap();
                assert_eq!(n as usize, before);
                assert_eq!(state.device(&ids[dev]).unwrap().queue.len(), 0);
            }
            Op::Recreate { dev } => {
                state
                    .delete_device(&ids[dev], IfMatch::Any, &mut out)
                    .unwrap();
                state
                    .put_device(
                        now,
                        ids[dev].clone(),
                        DeviceSpec::default(),
                        IfMatch::Absent,
                        fresh(&mut generation),
                        &mut out,
                    )
                    .unwrap();
                held[dev].clear();
            }
            Op::Advance { ms } => now = now.saturating_add(Duration::from_millis(ms.into())),
            Op::Tick => state.tick(now, &mut out),
            Op::ReceiveFeedback => {
                let t = next_token();
                if let Some(d) = state.receive_feedback(now, t, &mut out) {
                    assert!(!d.batch.records.is_empty());
                    held_fb.push(t);
                }
            }
            Op::CompleteFeedback { pick }
            | Op::AbandonFeedback { pick }
            | Op::ReleaseFeedback { pick } => {
                if held_fb.is_empty() {
                    continue;
                }
                let n = held_fb.len();
                let t = held_fb.remove(pick % n);
                let r = match op {
                    Op::CompleteFeedback { .. } => state.complete_feedback(now, t, &mut out),
                    Op::AbandonFeedback { .. } => state.abandon_feedback(now, t, &mut out),
                    _ => state.release_feedback(now, t, &mut out),
                };
                if let Err(e) = r {
                    assert_eq!(e, courier_core::HubError::LockLost);
                }
            }
        }
        audit.observe(&out);
        log.extend(out);
        check_invariants(&state);
    }

    // A checkpoint taken now rebuilds the live state, locks and counts included.
    let mut from_snapshot = HubState::new(settings.clone());
    for e in state.snapshot_events() {
        from_snapshot.apply(e);
    }
    assert_eq!(from_snapshot, state);

    // Let every TTL pass: every message must reach exactly one end.
    now = now.saturating_add(Duration::from_secs(601));
    let mut out = Vec::new();
    state.tick(now, &mut out);
    now = now.saturating_add(Duration::from_secs(2));
    state.tick(now, &mut out);
    audit.observe(&out);
    log.extend(out);
    check_invariants(&state);
    assert_eq!(state.stats().queued_messages, 0);
    assert_eq!(
        state.stats().pending_feedback_records,
        0,
        "window passed, all batched"
    );
    for mid in audit.sent.keys() {
        assert!(
            audit.terminal.contains_key(mid) ^ audit.dropped.contains(mid),
            "{mid} has no single end"
        );
    }

    // Feedback exactly as each message's ack mode asks, each record once.
    let mut expected: Vec<(String, Outcome)> = audit
        .terminal
        .iter()
        .filter(|(mid, o)| {
            let ack = audit.sent[*mid];
            if o.is_negative() {
                ack.wants_negative()
            } else {
                ack.wants_positive()
            }
        })
        .map(|(m, o)| (m.clone(), *o))
        .collect();
    expected.sort();
    let mut got = audit.batched.clone();
    got.sort();
    assert_eq!(got, expected);

    // Restart: replaying the log rebuilds exactly this state.
    let mut replayed = HubState::new(settings.clone());
    for e in log {
        replayed.apply(e);
    }
    assert_eq!(replayed, state);
    // And so does replaying a checkpoint (the snapshot events).
    let mut from_snapshot = HubState::new(settings);
    for e in state.snapshot_events() {
        from_snapshot.apply(e);
    }
    assert_eq!(from_snapshot, state);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_delivery_mode_keeps_the_invariants(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops, DeliveryCountMode::EveryDelivery);
    }

    #[test]
    fn abandon_only_mode_keeps_the_invariants(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops, DeliveryCountMode::AbandonOnly);
    }
}

#[test]
fn replay_midway_matches_state_midway() {
    // A restart can happen after any prefix of the log, not only at the end.
    let settings = settings(DeliveryCountMode::EveryDelivery);
    let mut state = HubState::new(settings.clone());
    let mut log = Vec::new();
    let now = Timestamp(0);
    let id = DeviceId::new("d").unwrap();
    let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string();
    state
        .put_device(
            now,
            id.clone(),
            DeviceSpec::default(),
            IfMatch::Absent,
            FreshIdentity {
                generation_id: "g".into(),
                primary_key: key.clone(),
                secondary_key: key,
            },
            &mut log,
        )
        .unwrap();
    let msg = C2dMessage {
        properties: MessageProperties {
            message_id: Some("a".into()),
            ack: AckMode::Full,
            ..Default::default()
        },
        body: b"x".to_vec(),
    };
    state.send(now, &id, msg, &mut log).unwrap();
    state
        .receive(now, &id, LockToken([1; 16]), &mut log)
        .unwrap()
        .unwrap();
    for cut in 0..=log.len() {
        let mut a = HubState::new(settings.clone());
        for e in log.iter().take(cut).cloned() {
            a.apply(e);
        }
        let mut b = HubState::new(settings.clone());
        for e in log.iter().take(cut).cloned() {
            b.apply(e);
        }
        assert_eq!(a, b);
    }
    // After the restart the lock is still held, and lapses on time.
    let mut replayed = HubState::new(settings);
    for e in log.clone() {
        replayed.apply(e);
    }
    let mut out = Vec::new();
    replayed.tick(Timestamp(60_000), &mut out);
    assert!(matches!(
        out.as_slice(),
        [HubEvent::Queue {
            event: QueueEvent::Returned {
                delivery_count: 1,
                ..
            },
            ..
        }]
    ));
}
