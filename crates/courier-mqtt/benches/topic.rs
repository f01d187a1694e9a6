//! Cost of IoT Hub's MQTT C2D topic per delivered message: the property-bag topic alone,
//! its `%24.exp` timestamp alone, the whole C2D PUBLISH as the driver writes it (topic +
//! MQTT encoding of a 256-byte body), and reading that PUBLISH back off the wire plus the
//! D2C topic check the head makes on inbound PUBLISHes.
//!
//! Courier has no property-bag *decoder* (only devices parse the bag); the decode figures
//! are of the MQTT packet, which is what the head reads.
//!
//! Run: `cargo bench -p courier-mqtt --bench topic` (short run: append
//! `-- --warm-up-time 1 --measurement-time 3`). `cargo test --benches` runs each once.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use courier_core::{
    AckMode, C2dMessage, Delivery, DeviceId, LockToken, MessageProperties, SequenceNumber,
    Timestamp,
};
use courier_mqtt::bench_api::{c2d_topic, dotnet_round_trip, is_d2c_topic};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rumqttc::mqttbytes::v4::{Packet, Publish};
use rumqttc::mqttbytes::QoS;

const DEVICE: &str = "sensor-0042";
const EXPIRY: Timestamp = Timestamp(1_795_414_016_889);

/// A typical C2D message: message and correlation ids, expiry, full ack, three application
/// properties (one needing percent-encoding), 256-byte body.
fn delivery() -> Delivery {
    let application = [
        ("command", "set-temperature"),
        ("units", "celsius"),
        ("target", "/floor 2/room?id=7&zone=Nord-Süd"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let properties = MessageProperties {
        message_id: Some("9f27c428-fa78-4568-af79-61a0378e3679".into()),
        correlation_id: Some("corr-df9c619e".into()),
        expiry_time_utc: Some(EXPIRY),
        ack: AckMode::Full,
        application,
        ..Default::default()
    };
    Delivery {
        device_id: DeviceId::new(DEVICE).unwrap(),
        message: Arc::new(C2dMessage {
            properties,
            body: vec![0x5a; 256],
        }),
        sequence_number: SequenceNumber(1),
        enqueued_time: Timestamp(1_795_410_000_000),
        expiry_time: EXPIRY,
        delivery_count: 0,
        lock_token: LockToken([7; 16]),
        locked_until: Timestamp(1_795_410_060_000),
    }
}

/// Topic + PUBLISH encoding into `out`, as the connection and driver do per delivery.
fn encode_publish(delivery: &Delivery, out: &mut BytesMut) -> usize {
    let topic = c2d_topic(DEVICE, delivery);
    let mut publish = Publish::from_bytes(
        topic,
        QoS::AtLeastOnce,
        Bytes::copy_from_slice(&delivery.message.body),
    );
    publish.pkid = 1;
    Packet::Publish(publish).write(out, usize::MAX).unwrap()
}

fn bench_topic(c: &mut Criterion) {
    let delivery = delivery();
    let topic = c2d_topic(DEVICE, &delivery);
    assert!(topic.contains("target=%2Ffloor%202%2Froom%3Fid%3D7%26zone%3DNord-S%C3%BCd"));
    let mut wire = BytesMut::new();
    encode_publish(&delivery, &mut wire);
    let wire = wire.freeze();
    let d2c = format!("devices/{DEVICE}/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8");

    let mut group = c.benchmark_group("mqtt_topic");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode/c2d_topic", |b| {
        b.iter(|| c2d_topic(black_box(DEVICE), black_box(&delivery)))
    });
    group.bench_function("encode/expiry_timestamp", |b| {
        b.iter(|| dotnet_round_trip(black_box(EXPIRY)))
    });
    let mut out = BytesMut::with_capacity(4096);
    group.bench_function("encode/c2d_publish_packet", |b| {
        b.iter(|| {
            out.clear();
            encode_publish(black_box(&delivery), &mut out)
        })
    });
    group.bench_function("decode/c2d_publish_packet", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(&wire[..]));
            Packet::read(&mut buf, usize::MAX).unwrap()
        })
    });
    group.bench_function("decode/is_d2c_topic", |b| {
        b.iter(|| is_d2c_topic(black_box(&d2c), black_box(DEVICE)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_topic
}
criterion_main!(benches);
