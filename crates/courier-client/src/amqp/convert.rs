//! SDK messages ↔ AMQP messages as IoT Hub shapes them (wire spec §3.5,
//! §3.7, §3.8). Pure functions: no links, no I/O.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Data, Message as AmqpMessage, MessageAnnotations, MessageId,
    Properties,
};
use fe2o3_amqp::types::primitives::{
    Binary, OrderedMap, SimpleValue, Symbol, Timestamp as AmqpTimestamp, Value,
};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::devicebound_address;
use crate::feedback::{parse_records, FeedbackDelivery};
use crate::message::Delivery;
use crate::{Ack, ClientError, FeedbackBatch, Message, ReceivedMessage};

/// The application property carrying the feedback request.
pub(crate) const ACK_PROPERTY: &str = "iothub-ack";
/// Message annotation: the hub's lock token (a GUID string).
const LOCK_TOKEN: &str = "x-opt-lock-token";
/// Message annotation: the hub's sequence number (ulong).
const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
/// Message annotation: when the hub queued the message (timestamp).
const ENQUEUED_TIME: &str = "iothub-enqueuedtime";
/// Service Bus' spelling of the enqueued time, read when IoT Hub's is absent.
const ENQUEUED_TIME_SB: &str = "x-opt-enqueued-time";
/// Message annotation: earlier deliveries of the message (ubyte).
const DELIVERY_COUNT: &str = "iothub-deliverycount";

/// A service's C2D message for `device_id` as IoT Hub's send link takes it:
/// `to` names the device queue, system properties in the properties
/// section, string application properties plus `iothub-ack`, and one data
/// section. `now` anchors a relative expiry.
pub(crate) fn outgoing_message(
    device_id: &str,
    message: &Message,
    now: SystemTime,
) -> AmqpMessage<Data> {
    let properties = Properties {
        message_id: message.message_id.clone().map(MessageId::String),
        correlation_id: message.correlation_id.clone().map(MessageId::String),
        user_id: message
            .user_id
            .as_ref()
            .map(|u| Binary::from(u.as_bytes().to_vec())),
        to: Some(devicebound_address(device_id)),
        content_type: message.content_type.as_deref().map(Symbol::from),
        content_encoding: message.content_encoding.as_deref().map(Symbol::from),
        absolute_expiry_time: message.expiry.map(|e| timestamp(e.at(now))),
        ..Properties::default()
    };
    let mut app = OrderedMap::new();
    if message.ack != Ack::None {
        app.insert(
            ACK_PROPERTY.to_owned(),
            SimpleValue::String(message.ack.as_str().to_owned()),
        );
    }
    for (name, value) in &message.properties {
        app.insert(name.clone(), SimpleValue::String(value.clone()));
    }
    AmqpMessage {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(properties),
        application_properties: (!app.is_empty()).then_some(ApplicationProperties(app)),
        body: Data(Binary::from(message.body.to_vec())),
        footer: None,
    }
}

/// A C2D message as the device link delivered it, with the handle that
/// settles it. Fails only on a body that is not data (or one binary or
/// string value).
pub(crate) fn received_message(
    message: AmqpMessage<Body<Value>>,
    delivery: Delivery,
) -> Result<ReceivedMessage, ClientError> {
    let body = body_bytes(message.body)?;
    let mut received = ReceivedMessage::new(body, delivery);
    let annotations = message.message_annotations.as_ref();
    if let Some(p) = message.properties {
        received.message_id = p.message_id.map(message_id_string);
        received.correlation_id = p.correlation_id.map(message_id_string);
        received.user_id = p.user_id.map(|u| String::from_utf8_lossy(&u).into_owned());
        received.to = p.to;
        received.content_type = p.content_type.map(|s| s.0);
        received.content_encoding = p.content_encoding.map(|s| s.0);
        received.expiry = p.absolute_expiry_time.and_then(system_time);
        received.enqueued_time = p.creation_time.and_then(system_time);
    }
    if let Some(at) = annotation(annotations, ENQUEUED_TIME)
        .or_else(|| annotation(annotations, ENQUEUED_TIME_SB))
        .and_then(value_time)
    {
        received.enqueued_time = Some(at);
    }
    received.sequence_number = annotation(annotations, SEQUENCE_NUMBER).and_then(value_u64);
    received.lock_token = annotation(annotations, LOCK_TOKEN).and_then(value_string);
    received.delivery_count = annotation(annotations, DELIVERY_COUNT)
        .and_then(value_u64)
        .and_then(|n| u32::try_from(n).ok())
        .or_else(|| {
            message
                .header
                .as_ref()
                .map(|h| h.delivery_count)
                .filter(|n| *n > 0)
        });
    for (name, value) in message
        .application_properties
        .map(|a| a.0)
        .unwrap_or_default()
    {
        let Some(value) = simple_string(&value) else {
            // IoT Hub's properties are strings; anything else is not the
            // application's (the .NET SDK drops them too).
            continue;
        };
        if name.eq_ignore_ascii_case(ACK_PROPERTY) {
            received.ack = Ack::parse(&value);
        } else {
            received.properties.push((name, value));
        }
    }
    Ok(received)
}

/// A feedback batch as the feedback link delivered it: IoT Hub's JSON
/// records in the body, the lock token in `message-id`, the queue time in
/// `iothub-enqueuedtime`.
pub(crate) fn feedback_batch(
    message: AmqpMessage<Body<Value>>,
    delivery: FeedbackDelivery,
) -> Result<FeedbackBatch, ClientError> {
    let annotations = message.message_annotations.as_ref();
    let enqueued = annotation(annotations, ENQUEUED_TIME)
        .or_else(|| annotation(annotations, ENQUEUED_TIME_SB))
        .and_then(value_time)
        .and_then(rfc3339);
    let lock_token = annotation(annotations, LOCK_TOKEN)
        .and_then(value_string)
        .or_else(|| {
            message
                .properties
                .as_ref()
                .and_then(|p| p.message_id.clone())
                .map(message_id_string)
        });
    let delivery_count = annotation(annotations, DELIVERY_COUNT)
        .and_then(value_u64)
        .and_then(|n| u32::try_from(n).ok())
        .or_else(|| message.header.as_ref().map(|h| h.delivery_count));
    let body = body_bytes(message.body)?;
    let mut batch = FeedbackBatch::new(parse_records(&body)?, delivery);
    batch.lock_token = lock_token;
    batch.enqueued_time_utc = enqueued;
    batch.delivery_count = delivery_count;
    Ok(batch)
}

/// The body bytes: data sections joined, or one binary or string value.
fn body_bytes(body: Body<Value>) -> Result<Bytes, ClientError> {
    match body {
        Body::Data(sections) => {
            let mut bytes = Vec::new();
            for section in sections {
                bytes.extend_from_slice(&section.0);
            }
            Ok(Bytes::from(bytes))
        }
        Body::Value(value) => match value.0 {
            Value::Binary(b) => Ok(Bytes::from(b.into_vec())),
            Value::String(s) => Ok(Bytes::from(s.into_bytes())),
            Value::Null => Ok(Bytes::new()),
            other => Err(ClientError::Protocol(format!(
                "the message body is an AMQP value of an unexpected type: {other:?}"
            ))),
        },
        Body::Empty => Ok(Bytes::new()),
        Body::Sequence(_) => Err(ClientError::Protocol(
            "the message body is an AMQP sequence, not data".into(),
        )),
    }
}

/// The message annotation named `key` (a symbol key).
fn annotation<'m>(annotations: Option<&'m MessageAnnotations>, key: &str) -> Option<&'m Value> {
    annotations?.0.iter().find_map(|(k, v)| match k {
        OwnedKey::Symbol(s) if s.0 == key => Some(v),
        _ => None,
    })
}

/// A message id of any AMQP type as IoT Hub's string.
pub(crate) fn message_id_string(id: MessageId) -> String {
    match id {
        MessageId::String(s) => s,
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => uuid::Uuid::from_bytes(u.into_inner()).to_string(),
        MessageId::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
    }
}

/// A scalar application property as a string.
fn simple_string(value: &SimpleValue) -> Option<String> {
    Some(match value {
        SimpleValue::String(s) => s.clone(),
        SimpleValue::Symbol(s) => s.0.clone(),
        SimpleValue::Bool(b) => b.to_string(),
        SimpleValue::Ubyte(n) => n.to_string(),
        SimpleValue::Ushort(n) => n.to_string(),
        SimpleValue::Uint(n) => n.to_string(),
        SimpleValue::Ulong(n) => n.to_string(),
        SimpleValue::Byte(n) => n.to_string(),
        SimpleValue::Short(n) => n.to_string(),
        SimpleValue::Int(n) => n.to_string(),
        SimpleValue::Long(n) => n.to_string(),
        SimpleValue::Char(c) => c.to_string(),
        SimpleValue::Uuid(u) => uuid::Uuid::from_bytes(*u.as_inner()).to_string(),
        _ => return None,
    })
}

fn value_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.0.clone()),
        Value::Uuid(u) => Some(uuid::Uuid::from_bytes(*u.as_inner()).to_string()),
        _ => None,
    }
}

fn value_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Ubyte(n) => Some(u64::from(*n)),
        Value::Ushort(n) => Some(u64::from(*n)),
        Value::Uint(n) => Some(u64::from(*n)),
        Value::Ulong(n) => Some(*n),
        Value::Byte(n) => u64::try_from(*n).ok(),
        Value::Short(n) => u64::try_from(*n).ok(),
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::Long(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

fn value_time(value: &Value) -> Option<SystemTime> {
    match value {
        Value::Timestamp(t) => system_time(t.clone()),
        _ => None,
    }
}

/// An AMQP timestamp as a system time; 0 (what some senders put for "not
/// set") and times before 1970 are `None`.
fn system_time(t: AmqpTimestamp) -> Option<SystemTime> {
    let ms = u64::try_from(t.milliseconds()).ok().filter(|ms| *ms > 0)?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

fn timestamp(at: SystemTime) -> AmqpTimestamp {
    let ms = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    AmqpTimestamp::from_milliseconds(ms)
}

fn rfc3339(at: SystemTime) -> Option<String> {
    OffsetDateTime::from(at).format(&Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FeedbackStatus;
    use fe2o3_amqp::types::messaging::{AmqpValue, Header};
    use fe2o3_amqp::types::primitives::Uuid;

    fn annotations(entries: Vec<(&str, Value)>) -> MessageAnnotations {
        let mut map = OrderedMap::new();
        for (k, v) in entries {
            map.insert(OwnedKey::Symbol(Symbol::from(k)), v);
        }
        MessageAnnotations(map)
    }

    fn delivery() -> Delivery {
        Delivery::Amqp {
            connection: 3,
            delivery_id: 7,
        }
    }

    #[test]
    fn an_outgoing_message_carries_every_field_the_hub_reads() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let message = Message::new("open")
            .message_id("m-1")
            .correlation_id("c-1")
            .user_id("me")
            .content_type("application/json")
            .content_encoding("utf-8")
            .ack(Ack::Full)
            .ttl(Duration::from_secs(60))
            .property("color", "red")
            .property("n", "3");
        let amqp = outgoing_message("dev 1+x", &message, now);
        let p = amqp.properties.as_ref().unwrap();
        assert_eq!(p.message_id, Some(MessageId::String("m-1".into())));
        assert_eq!(p.correlation_id, Some(MessageId::String("c-1".into())));
        assert_eq!(p.user_id.as_ref().map(|b| b.as_slice()), Some(&b"me"[..]));
        assert_eq!(
            p.to.as_deref(),
            Some("/devices/dev%201%2Bx/messages/devicebound")
        );
        assert_eq!(p.content_type, Some(Symbol::from("application/json")));
        assert_eq!(p.content_encoding, Some(Symbol::from("utf-8")));
        assert_eq!(
            p.absolute_expiry_time.as_ref().map(|t| t.milliseconds()),
            Some(1_800_000_060_000)
        );
        let app = &amqp.application_properties.as_ref().unwrap().0;
        let keys: Vec<&str> = app.keys().map(String::as_str).collect();
        assert_eq!(keys, ["iothub-ack", "color", "n"]);
        assert_eq!(
            app.get("iothub-ack"),
            Some(&SimpleValue::String("full".into()))
        );
        assert_eq!(amqp.body.0.as_slice(), b"open");
    }

    #[test]
    fn a_bare_outgoing_message_has_no_optional_fields() {
        let amqp = outgoing_message("d1", &Message::new(""), SystemTime::now());
        let p = amqp.properties.as_ref().unwrap();
        assert_eq!(p.message_id, None);
        assert_eq!(p.absolute_expiry_time, None);
        assert_eq!(p.to.as_deref(), Some("/devices/d1/messages/devicebound"));
        assert!(amqp.application_properties.is_none());
    }

    #[test]
    fn a_hub_c2d_message_maps_to_a_received_message() {
        let uuid = uuid::Uuid::parse_str("9f27c428-fa78-4568-af79-61a0378e3679").unwrap();
        let mut app = OrderedMap::new();
        app.insert("iothub-ack".to_owned(), SimpleValue::String("full".into()));
        app.insert("color".to_owned(), SimpleValue::String("red".into()));
        app.insert("n".to_owned(), SimpleValue::Int(3));
        app.insert(
            "skipped".to_owned(),
            SimpleValue::Binary(Binary::from(vec![1u8])),
        );
        let amqp = AmqpMessage {
            header: None,
            delivery_annotations: None,
            message_annotations: Some(annotations(vec![
                (
                    "x-opt-lock-token",
                    Value::String("1b9a0a5e-0000-4000-8000-000000000001".into()),
                ),
                ("x-opt-sequence-number", Value::Ulong(42)),
                (
                    "iothub-enqueuedtime",
                    Value::Timestamp(AmqpTimestamp::from_milliseconds(1_700_000_000_123)),
                ),
                ("iothub-deliverycount", Value::Ubyte(2)),
            ])),
            properties: Some(Properties {
                message_id: Some(MessageId::Uuid(Uuid::from(*uuid.as_bytes()))),
                correlation_id: Some(MessageId::Ulong(9)),
                user_id: Some(Binary::from(b"me".to_vec())),
                to: Some("/devices/d1/messages/devicebound".into()),
                content_type: Some(Symbol::from("text/plain")),
                content_encoding: Some(Symbol::from("utf-8")),
                absolute_expiry_time: Some(AmqpTimestamp::from_milliseconds(1_800_000_000_000)),
                creation_time: Some(AmqpTimestamp::from_milliseconds(1_600_000_000_000)),
                ..Properties::default()
            }),
            application_properties: Some(ApplicationProperties(app)),
            body: Body::Data(
                vec![
                    Data(Binary::from(b"he".to_vec())),
                    Data(Binary::from(b"llo".to_vec())),
                ]
                .into(),
            ),
            footer: None,
        };
        let m = received_message(amqp, delivery()).unwrap();
        assert_eq!(m.body_str(), Some("hello"));
        assert_eq!(
            m.message_id.as_deref(),
            Some("9f27c428-fa78-4568-af79-61a0378e3679")
        );
        assert_eq!(m.correlation_id.as_deref(), Some("9"));
        assert_eq!(m.user_id.as_deref(), Some("me"));
        assert_eq!(m.to.as_deref(), Some("/devices/d1/messages/devicebound"));
        assert_eq!(m.content_type.as_deref(), Some("text/plain"));
        assert_eq!(m.content_encoding.as_deref(), Some("utf-8"));
        assert_eq!(
            m.expiry,
            Some(UNIX_EPOCH + Duration::from_millis(1_800_000_000_000))
        );
        // The annotation wins over creation-time.
        assert_eq!(
            m.enqueued_time,
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
        );
        assert_eq!(m.sequence_number, Some(42));
        assert_eq!(m.delivery_count, Some(2));
        assert_eq!(
            m.lock_token.as_deref(),
            Some("1b9a0a5e-0000-4000-8000-000000000001")
        );
        assert_eq!(m.ack, Some(Ack::Full));
        assert_eq!(
            m.properties,
            vec![
                ("color".to_owned(), "red".to_owned()),
                ("n".to_owned(), "3".to_owned())
            ]
        );
        assert_eq!(m.delivery, delivery());
    }

    #[test]
    fn minimal_and_odd_bodies() {
        let bare = |body| AmqpMessage {
            header: Some(Header {
                delivery_count: 4,
                ..Header::default()
            }),
            delivery_annotations: None,
            message_annotations: None,
            properties: None,
            application_properties: None,
            body,
            footer: None,
        };
        let m = received_message(bare(Body::Empty), delivery()).unwrap();
        assert!(m.body.is_empty());
        assert_eq!(m.delivery_count, Some(4));
        assert_eq!(m.message_id, None);
        let m = received_message(
            bare(Body::Value(AmqpValue(Value::String("text".into())))),
            delivery(),
        )
        .unwrap();
        assert_eq!(m.body_str(), Some("text"));
        assert!(matches!(
            received_message(bare(Body::Value(AmqpValue(Value::Int(1)))), delivery()),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn a_feedback_message_maps_to_a_batch() {
        let json = br#"[{"originalMessageId":"m1","deviceGenerationId":"g","deviceId":"d1","enqueuedTimeUtc":"2026-11-23T06:06:56.889Z","statusCode":"Success","description":"Success"}]"#;
        let amqp = AmqpMessage {
            header: None,
            delivery_annotations: None,
            message_annotations: Some(annotations(vec![(
                "iothub-enqueuedtime",
                Value::Timestamp(AmqpTimestamp::from_milliseconds(1_700_000_000_123)),
            )])),
            properties: Some(Properties {
                message_id: Some(MessageId::String("lock-1".into())),
                user_id: Some(Binary::from(b"hub".to_vec())),
                content_type: Some(Symbol::from(
                    "application/vnd.microsoft.iothub.feedback.json",
                )),
                ..Properties::default()
            }),
            application_properties: None,
            body: Body::Data(vec![Data(Binary::from(json.to_vec()))].into()),
            footer: None,
        };
        let handle = FeedbackDelivery::Amqp {
            connection: 1,
            delivery_id: 5,
        };
        let batch = feedback_batch(amqp, handle.clone()).unwrap();
        assert_eq!(batch.lock_token.as_deref(), Some("lock-1"));
        assert_eq!(
            batch.enqueued_time_utc.as_deref(),
            Some("2023-11-14T22:13:20.123Z")
        );
        assert_eq!(batch.delivery_count, None);
        assert_eq!(batch.records.len(), 1);
        assert_eq!(batch.records[0].status_code, FeedbackStatus::Success);
        assert_eq!(batch.records[0].original_message_id, "m1");
        assert_eq!(batch.delivery, handle);
    }

    #[test]
    fn a_feedback_body_that_is_not_records_is_a_protocol_error() {
        let amqp = AmqpMessage {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: None,
            application_properties: None,
            body: Body::Data(vec![Data(Binary::from(b"{}".to_vec()))].into()),
            footer: None,
        };
        assert!(matches!(
            feedback_batch(amqp, FeedbackDelivery::None),
            Err(ClientError::Protocol(_))
        ));
    }
}
