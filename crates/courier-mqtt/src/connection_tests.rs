//! The connection state machine, driven in memory: time is whatever the test says.

use std::sync::Arc;
use std::time::Duration;

use courier_core::{C2dMessage, MessageProperties};
use rumqttc::mqttbytes::v4::{Connect, Login, Subscribe, SubscribeFilter, Unsubscribe};
use rumqttc::mqttbytes::Protocol;

use super::*;

const T0: Timestamp = Timestamp(1_800_000_000_000);
const DEVICE: &str = "harness-dev-1";
const USER: &str = "localhost/harness-dev-1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4%20(node%20v20.20.2%3B%20Debian%2012%3B%20x64)";

fn limits() -> Limits {
    Limits {
        max_in_flight: 3,
        max_keep_alive: Duration::from_secs(1177),
        connect_timeout: Duration::from_secs(10),
    }
}

fn at(secs: u64) -> Timestamp {
    T0.saturating_add(Duration::from_secs(secs))
}

fn connect_packet(client_id: &str, user: &str, password: &str, keep_alive: u16) -> Packet {
    Packet::Connect(Connect {
        protocol: Protocol::V4,
        keep_alive,
        client_id: client_id.into(),
        clean_session: false,
        last_will: None,
        login: Some(Login {
            username: user.into(),
            password: password.into(),
        }),
    })
}

fn step(conn: &mut Connection, now: Timestamp, event: Event) -> Vec<Action> {
    let mut out = Vec::new();
    conn.handle(now, event, &mut out);
    out
}

fn connack(code: ConnectReturnCode, session_present: bool) -> Action {
    Action::Send(Packet::ConnAck(ConnAck::new(code, session_present)))
}

/// A connection of DEVICE, authenticated at T0 with a 60 s keep-alive.
fn connected(subscription: Option<QoS>) -> Connection {
    let mut conn = Connection::new(T0, limits());
    let out = step(
        &mut conn,
        T0,
        Event::Packet(connect_packet(
            DEVICE,
            USER,
            "SharedAccessSignature sr=x",
            60,
        )),
    );
    assert!(matches!(out.as_slice(), [Action::Authenticate(_)]));
    let out = step(
        &mut conn,
        T0,
        Event::Accepted(Accepted {
            token_deadline: Some(at(3600)),
            session_present: subscription.is_some(),
            subscription,
        }),
    );
    assert_eq!(
        out,
        vec![connack(ConnectReturnCode::Success, subscription.is_some())]
    );
    conn
}

fn delivery(seq: u64, delivery_count: u32, locked_until: Timestamp) -> Delivery {
    Delivery {
        device_id: DeviceId::new(DEVICE).unwrap(),
        message: Arc::new(C2dMessage {
            properties: MessageProperties {
                message_id: Some(format!("m{seq}")),
                ..Default::default()
            },
            body: format!("body {seq}").into_bytes(),
        }),
        sequence_number: SequenceNumber(seq),
        enqueued_time: T0,
        expiry_time: at(3600),
        delivery_count,
        lock_token: LockToken([seq as u8; 16]),
        locked_until,
    }
}

fn published(out: &[Action]) -> Vec<&Publish> {
    out.iter()
        .filter_map(|a| match a {
            Action::Send(Packet::Publish(p)) => Some(p),
            _ => None,
        })
        .collect()
}

fn closed_with(out: &[Action]) -> Option<&CloseReason> {
    out.iter().find_map(|a| match a {
        Action::Close(r) => Some(r),
        _ => None,
    })
}

/// Receives `seq` through the window as the driver would.
fn deliver(conn: &mut Connection, now: Timestamp, d: Delivery) -> Vec<Action> {
    assert!(conn.start_receive(), "the window should want a message");
    step(conn, now, Event::Delivered(d))
}

#[test]
fn connect_yields_an_attempt_with_the_device_password_and_session_flag() {
    let mut conn = Connection::new(T0, limits());
    let out = step(
        &mut conn,
        T0,
        Event::Packet(connect_packet(
            DEVICE,
            USER,
            "SharedAccessSignature sr=a&sig=b&se=1",
            60,
        )),
    );
    assert_eq!(
        out,
        vec![Action::Authenticate(ConnectAttempt {
            device_id: DeviceId::new(DEVICE).unwrap(),
            host: "localhost".into(),
            password: Some("SharedAccessSignature sr=a&sig=b&se=1".into()),
            clean_session: false,
        })]
    );
    // No password: an X.509 device.
    let mut conn = Connection::new(T0, limits());
    let out = step(
        &mut conn,
        T0,
        Event::Packet(connect_packet(DEVICE, USER, "", 60)),
    );
    assert!(matches!(&out[..], [Action::Authenticate(a)] if a.password.is_none()));
}

#[test]
fn refused_credentials_answer_connack_5_and_close() {
    let mut conn = Connection::new(T0, limits());
    step(
        &mut conn,
        T0,
        Event::Packet(connect_packet(DEVICE, USER, "bad", 60)),
    );
    let out = step(
        &mut conn,
        T0,
        Event::Refused(ConnectReturnCode::NotAuthorized, "bad signature".into()),
    );
    assert_eq!(out[0], connack(ConnectReturnCode::NotAuthorized, false));
    assert!(matches!(closed_with(&out), Some(CloseReason::Refused(_))));
    assert!(conn.is_closed());
}

#[test]
fn connect_refusals_carry_the_right_return_code() {
    let cases = [
        // A module identity: not served yet.
        (
            connect_packet("d1/m1", "h.test/d1/m1/?api-version=1", "p", 60),
            ConnectReturnCode::BadClientId,
        ),
        // Not a valid device id.
        (
            connect_packet("", "h.test/d1/?a", "p", 60),
            ConnectReturnCode::BadClientId,
        ),
        // Malformed user name.
        (
            connect_packet("d1", "nonsense", "p", 60),
            ConnectReturnCode::BadUserNamePassword,
        ),
        // User name naming another device.
        (
            connect_packet("d1", "h.test/d2/?a", "p", 60),
            ConnectReturnCode::BadUserNamePassword,
        ),
        // No user name at all.
        (
            connect_packet("d1", "", "", 60),
            ConnectReturnCode::BadUserNamePassword,
        ),
    ];
    for (packet, code) in cases {
        let mut conn = Connection::new(T0, limits());
        let out = step(&mut conn, T0, Event::Packet(packet));
        assert_eq!(out[0], connack(code, false), "{out:?}");
        assert!(conn.is_closed());
    }
    let mut v5 = Connection::new(T0, limits());
    let Packet::Connect(mut c) = connect_packet(DEVICE, USER, "p", 60) else {
        unreachable!()
    };
    c.protocol = Protocol::V5;
    let out = step(&mut v5, T0, Event::Packet(Packet::Connect(c)));
    assert_eq!(
        out[0],
        connack(ConnectReturnCode::RefusedProtocolVersion, false)
    );
}

#[test]
fn the_first_packet_must_be_connect_and_arrive_in_time() {
    let mut conn = Connection::new(T0, limits());
    let out = step(&mut conn, T0, Event::Packet(Packet::PingReq));
    assert!(matches!(closed_with(&out), Some(CloseReason::Protocol(_))));

    let mut slow = Connection::new(T0, limits());
    assert_eq!(slow.next_deadline(), Some(at(10)));
    assert!(step(&mut slow, at(9), Event::Tick).is_empty());
    let out = step(&mut slow, at(10), Event::Tick);
    assert_eq!(closed_with(&out), Some(&CloseReason::ConnectTimeout));
}

#[test]
fn a_second_connect_closes_the_connection() {
    let mut conn = connected(None);
    let out = step(
        &mut conn,
        T0,
        Event::Packet(connect_packet(DEVICE, USER, "p", 60)),
    );
    assert!(matches!(closed_with(&out), Some(CloseReason::Protocol(_))));
}

#[test]
fn only_the_own_c2d_filter_is_granted_and_refusals_keep_the_session() {
    let mut conn = connected(None);
    let filters = vec![
        SubscribeFilter::new(
            format!("devices/{DEVICE}/messages/devicebound/#"),
            QoS::ExactlyOnce,
        ),
        SubscribeFilter::new(
            "devices/other/messages/devicebound/#".into(),
            QoS::AtLeastOnce,
        ),
        SubscribeFilter::new("$iothub/twin/res/#".into(), QoS::AtMostOnce),
        SubscribeFilter::new("#".into(), QoS::AtLeastOnce),
    ];
    let out = step(
        &mut conn,
        T0,
        Event::Packet(Packet::Subscribe(Subscribe {
            pkid: 6648,
            filters,
        })),
    );
    assert_eq!(
        out,
        vec![
            Action::RememberSubscription(Some(QoS::AtLeastOnce)),
            Action::Send(Packet::SubAck(SubAck::new(
                6648,
                vec![
                    SubscribeReasonCode::Success(QoS::AtLeastOnce),
                    SubscribeReasonCode::Failure,
                    SubscribeReasonCode::Failure,
                    SubscribeReasonCode::Failure,
                ]
            ))),
        ]
    );
    assert!(!conn.is_closed());
    assert!(conn.start_receive());

    let out = step(
        &mut conn,
        T0,
        Event::Packet(Packet::Unsubscribe(Unsubscribe {
            pkid: 7,
            topics: vec![format!("devices/{DEVICE}/messages/devicebound/#")],
        })),
    );
    assert_eq!(out[0], Action::RememberSubscription(None));
}

#[test]
fn nothing_is_received_before_a_subscription_exists() {
    let mut conn = connected(None);
    assert!(!conn.start_receive());
}

#[test]
fn the_window_fills_to_max_in_flight_one_receive_at_a_time() {
    let mut conn = connected(Some(QoS::AtLeastOnce));
    assert!(conn.start_receive());
    // One receive at a time.
    assert!(!conn.start_receive());
    step(&mut conn, T0, Event::ReceiveEnded);
    for seq in 1..=3 {
        let out = deliver(&mut conn, T0, delivery(seq, 0, at(60)));
        let p = published(&out);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].pkid, seq as u16);
        assert_eq!(p[0].qos, QoS::AtLeastOnce);
        assert!(!p[0].dup);
        assert_eq!(&p[0].payload[..], format!("body {seq}").as_bytes());
        assert!(p[0].topic.starts_with(&format!(
            "devices/{DEVICE}/messages/devicebound/%24.mid=m{seq}&%24.to="
        )));
    }
    assert_eq!(conn.in_flight(), 3);
    assert!(!conn.start_receive(), "the window is full");
}

#[test]
fn puback_completes_with_the_lock_token_and_frees_the_slot() {
    let mut conn = connected(Some(QoS::AtLeastOnce));
    for seq in 1..=3 {
        deliver(&mut conn, T0, delivery(seq, 0, at(60)));
    }
    let out = step(
        &mut conn,
        at(1),
        Event::Packet(Packet::PubAck(PubAck::new(2))),
    );
    assert_eq!(
        out,
        vec![Action::Complete {
            pkid: 2,
            lock_token: LockToken([2; 16])
        }]
    );
    // A duplicate PUBACK does not complete twice; an unknown id is ignored.
    assert!(step(
        &mut conn,
        at(1),
        Event::Packet(Packet::PubAck(PubAck::new(2)))
    )
    .is_empty());
    assert!(step(
        &mut conn,
        at(1),
        Event::Packet(Packet::PubAck(PubAck::new(99)))
    )
    .is_empty());
    // The slot stays taken until the hub answers.
    assert!(!conn.start_receive());
    step(&mut conn, at(1), Event::Completed(2));
    assert_eq!(conn.in_flight(), 2);
    assert!(conn.start_receive());
}

#[test]
fn a_lapsed_lock_leaves_the_window_and_the_redelivery_reuses_the_packet_id_with_dup() {
    let mut conn = connected(Some(QoS::AtLeastOnce));
    deliver(&mut conn, T0, delivery(1, 0, at(60)));
    deliver(&mut conn, T0, delivery(2, 0, at(90)));
    assert_eq!(conn.next_deadline(), Some(at(60)));
    step(&mut conn, at(60), Event::Tick);
    assert_eq!(conn.in_flight(), 1);
    // A third message takes a fresh id; id 1 stays reserved for message 1.
    let out = deliver(&mut conn, at(61), delivery(3, 0, at(121)));
    assert_eq!(published(&out)[0].pkid, 3);
    // The core returned message 1 and delivers it again, count grown.
    let out = deliver(&mut conn, at(62), delivery(1, 1, at(122)));
    let p = published(&out);
    assert_eq!((p[0].pkid, p[0].dup), (1, true));
    // Its PUBACK completes the new lock.
    let mut redelivered = delivery(1, 1, at(122));
    redelivered.lock_token = LockToken([1; 16]);
    let out = step(
        &mut conn,
        at(63),
        Event::Packet(Packet::PubAck(PubAck::new(1))),
    );
    assert_eq!(
        out,
        vec![Action::Complete {
            pkid: 1,
            lock_token: redelivered.lock_token
        }]
    );
}

#[test]
fn a_message_delivered_before_on_another_connection_goes_out_with_dup() {
    let mut conn = connected(Some(QoS::AtLeastOnce));
    let out = deliver(&mut conn, T0, delivery(7, 2, at(60)));
    assert!(published(&out)[0].dup);
}

#[test]
fn qos_0_subscribers_get_qos_0_publishes_completed_at_once() {
    let mut conn = connected(Some(QoS::AtMostOnce));
    let out = deliver(&mut conn, T0, delivery(1, 0, at(60)));
    let p = published(&out);
    assert_eq!((p[0].qos, p[0].pkid, p[0].dup), (QoS::AtMostOnce, 0, false));
    assert!(
        matches!(out[1], Action::Complete { lock_token, .. } if lock_token == LockToken([1; 16]))
    );
    // The lock timer does not apply to a message being completed.
    assert!(step(&mut conn, at(61), Event::Tick).is_empty());
}

#[test]
fn packet_ids_wrap_and_skip_ids_still_in_flight() {
    let mut conn = connected(Some(QoS::AtLeastOnce));
    let Phase::Connected(s) = &mut conn.phase else {
        unreachable!()
    };
    s.next_pkid = u16::MAX;
    s.window.insert(
        1,
        InFlight {
            sequence_number: SequenceNumber(100),
            lock_token: LockToken([0; 16]),
            locked_until: at(60),
            completing: false,
        },
    );
    s.lapsed.push_back((SequenceNumber(101), 2));
    assert_eq!(s.allocate_pkid(), u16::MAX);
    assert_eq!(s.allocate_pkid(), 3);
}

#[test]
fn token_expiry_closes_the_connection() {
    let mut conn = connected(None);
    step(&mut conn, at(3599), Event::Packet(Packet::PingReq));
    assert!(!conn.is_closed());
    let out = step(&mut conn, at(3600), Event::Tick);
    assert_eq!(closed_with(&out), Some(&CloseReason::TokenExpired));
}

#[test]
fn keep_alive_closes_after_one_and_a_half_periods_of_silence() {
    let mut conn = connected(None);
    assert_eq!(conn.next_deadline(), Some(at(90)));
    // Any packet resets the timer.
    let out = step(&mut conn, at(80), Event::Packet(Packet::PingReq));
    assert_eq!(out, vec![Action::Send(Packet::PingResp)]);
    assert!(step(&mut conn, at(90), Event::Tick).is_empty());
    let out = step(&mut conn, at(170), Event::Tick);
    assert_eq!(
        closed_with(&out),
        Some(&CloseReason::KeepAlive(Duration::from_secs(90)))
    );
}

#[test]
fn keep_alive_is_capped_and_zero_means_none() {
    let mut conn = Connection::new(T0, limits());
    step(
        &mut conn,
        T0,
        Event::Packet(connect_packet(DEVICE, USER, "p", 3000)),
    );
    step(
        &mut conn,
        T0,
        Event::Accepted(Accepted {
            token_deadline: None,
            session_present: false,
            subscription: None,
        }),
    );
    assert_eq!(
        conn.next_deadline(),
        Some(T0.saturating_add(Duration::from_millis(1_765_500)))
    );

    let mut none = Connection::new(T0, limits());
    step(
        &mut none,
        T0,
        Event::Packet(connect_packet(DEVICE, USER, "p", 0)),
    );
    step(
        &mut none,
        T0,
        Event::Accepted(Accepted {
            token_deadline: None,
            session_present: false,
            subscription: None,
        }),
    );
    assert_eq!(none.next_deadline(), None);
}

#[test]
fn a_newer_connection_of_the_device_closes_this_one() {
    let mut conn = connected(None);
    let out = step(&mut conn, T0, Event::Replaced);
    assert_eq!(closed_with(&out), Some(&CloseReason::Replaced));
}

#[test]
fn d2c_publishes_are_acknowledged_by_qos_and_other_topics_close() {
    let topic = format!("devices/{DEVICE}/messages/events/%24.ct=application%2Fjson");
    let mut conn = connected(None);
    let mut p1 = Publish::new(topic.clone(), QoS::AtLeastOnce, b"hi".to_vec());
    p1.pkid = 5;
    let out = step(&mut conn, T0, Event::Packet(Packet::Publish(p1)));
    assert_eq!(
        out,
        vec![
            Action::D2cAccepted {
                topic: topic.clone(),
                bytes: 2
            },
            Action::Send(Packet::PubAck(PubAck::new(5))),
        ]
    );
    let p0 = Publish::new(topic.clone(), QoS::AtMostOnce, b"hi".to_vec());
    let out = step(&mut conn, T0, Event::Packet(Packet::Publish(p0)));
    assert!(matches!(&out[..], [Action::D2cAccepted { .. }]));

    let mut p2 = Publish::new(topic, QoS::ExactlyOnce, b"hi".to_vec());
    p2.pkid = 6;
    let out = step(&mut conn, T0, Event::Packet(Packet::Publish(p2)));
    assert!(closed_with(&out).is_some_and(CloseReason::is_protocol_error));

    let mut other = connected(None);
    let mut twin = Publish::new("$iothub/twin/GET/?$rid=1", QoS::AtLeastOnce, Vec::new());
    twin.pkid = 1;
    let out = step(&mut other, T0, Event::Packet(Packet::Publish(twin)));
    assert!(closed_with(&out).is_some_and(CloseReason::is_protocol_error));
}

#[test]
fn disconnect_closes_cleanly_and_malformed_input_is_a_protocol_error() {
    let mut conn = connected(None);
    let out = step(&mut conn, T0, Event::Packet(Packet::Disconnect));
    assert_eq!(closed_with(&out), Some(&CloseReason::Disconnect));
    assert!(!CloseReason::Disconnect.is_protocol_error());

    let mut conn = connected(None);
    let out = step(&mut conn, T0, Event::Malformed("bad".into()));
    assert!(closed_with(&out).is_some_and(CloseReason::is_protocol_error));
    // Nothing happens after close.
    assert!(step(&mut conn, T0, Event::Packet(Packet::PingReq)).is_empty());
}
