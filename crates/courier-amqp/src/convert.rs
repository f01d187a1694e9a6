//! AMQP messages ↔ Courier's domain (wire spec §3.5, §3.7, §3.8). Pure
//! functions: no links, no hub.

use courier_core::{
    devicebound_address, AckMode, C2dMessage, Delivery, FeedbackDelivery, MessageProperties,
    Timestamp,
};
use courier_hub::feedback_json::FEEDBACK_CONTENT_TYPE;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Data, Message, MessageAnnotations, MessageId, Properties,
};
use fe2o3_amqp::types::primitives::{
    Binary, OrderedMap, SimpleValue, Symbol, Timestamp as AmqpTimestamp, Value,
};

/// The application property carrying the feedback request (`iothub-ack`).
const ACK: &str = "iothub-ack";

/// Why a service's C2D message cannot be queued as sent.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConvertError {
    /// `to` is missing or names no device queue.
    #[error("the message's 'to' must be /devices/{{deviceId}}/messages/devicebound, got {0:?}")]
    To(Option<String>),
    /// An application property value that is not a scalar.
    #[error("application property '{0}' must be a string (or a number or boolean)")]
    Property(String),
    /// `iothub-ack` not one of IoT Hub's values.
    #[error("iothub-ack must be none, positive, negative or full, got '{0}'")]
    Ack(String),
    /// A body that is neither data sections nor a string or binary value.
    #[error("the body must be data sections (or one string or binary amqp-value)")]
    Body,
}

/// The device and message a service's C2D transfer asks to queue.
pub(crate) fn c2d_from_service(
    message: Message<Body<Value>>,
) -> Result<(String, C2dMessage), ConvertError> {
    let p = message.properties.unwrap_or_default();
    let to = p.to.clone();
    let device = to
        .as_deref()
        .and_then(crate::address::devicebound_target)
        .ok_or(ConvertError::To(to))?;
    let mut properties = MessageProperties {
        message_id: p.message_id.map(message_id_string),
        correlation_id: p.correlation_id.map(message_id_string),
        user_id: p.user_id.map(|b| String::from_utf8_lossy(&b).into_owned()),
        content_type: p.content_type.map(|s| s.0),
        content_encoding: p.content_encoding.map(|s| s.0),
        // 0 is what some senders put for "not set".
        expiry_time_utc: p
            .absolute_expiry_time
            .map(|t| Timestamp(t.milliseconds()))
            .filter(|t| t.as_millis() > 0),
        ..MessageProperties::default()
    };
    for (key, value) in message
        .application_properties
        .map(|a| a.0)
        .unwrap_or_default()
    {
        let value = simple_string(&value).ok_or_else(|| ConvertError::Property(key.clone()))?;
        if key.eq_ignore_ascii_case(ACK) {
            properties.ack = AckMode::parse(&value).ok_or(ConvertError::Ack(value))?;
        } else {
            properties.application.push((key, value));
        }
    }
    let body = match message.body {
        Body::Data(sections) => sections.into_iter().flat_map(|d| d.0.into_vec()).collect(),
        Body::Value(v) => match v.0 {
            Value::Binary(b) => b.into_vec(),
            Value::String(s) => s.into_bytes(),
            _ => return Err(ConvertError::Body),
        },
        Body::Empty => Vec::new(),
        Body::Sequence(_) => return Err(ConvertError::Body),
    };
    Ok((device, C2dMessage { properties, body }))
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

/// A scalar application property as a string (IoT Hub's properties are strings).
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
        SimpleValue::Uuid(u) => uuid::Uuid::from_bytes(u.clone().into_inner()).to_string(),
        _ => return None,
    })
}

fn annotations(entries: Vec<(&str, Value)>) -> MessageAnnotations {
    let mut map = OrderedMap::new();
    for (k, v) in entries {
        map.insert(OwnedKey::Symbol(Symbol::from(k)), v);
    }
    MessageAnnotations(map)
}

fn timestamp(t: Timestamp) -> AmqpTimestamp {
    AmqpTimestamp::from_milliseconds(t.as_millis())
}

/// A locked C2D message as the device receives it (§3.5): one data section,
/// string application properties, IoT Hub's annotations.
pub(crate) fn device_message(d: &Delivery) -> Message<Data> {
    let m = &d.message;
    let p = &m.properties;
    let properties = Properties {
        message_id: p.message_id.clone().map(MessageId::String),
        correlation_id: p.correlation_id.clone().map(MessageId::String),
        to: Some(devicebound_address(d.device_id.as_str())),
        user_id: p
            .user_id
            .as_ref()
            .map(|u| Binary::from(u.as_bytes().to_vec())),
        content_type: p.content_type.as_deref().map(Symbol::from),
        content_encoding: p.content_encoding.as_deref().map(Symbol::from),
        absolute_expiry_time: Some(timestamp(d.expiry_time)),
        creation_time: Some(timestamp(d.enqueued_time)),
        ..Properties::default()
    };
    let mut app = OrderedMap::new();
    if p.ack != AckMode::None {
        app.insert(
            ACK.to_owned(),
            SimpleValue::String(p.ack.as_str().to_owned()),
        );
    }
    for (k, v) in &p.application {
        app.insert(k.clone(), SimpleValue::String(v.clone()));
    }
    let count = u8::try_from(d.delivery_count).unwrap_or(u8::MAX);
    Message {
        header: None,
        delivery_annotations: None,
        message_annotations: Some(annotations(vec![
            ("x-opt-lock-token", Value::String(d.lock_token.to_string())),
            ("x-opt-sequence-number", Value::Ulong(d.sequence_number.0)),
            (
                "iothub-enqueuedtime",
                Value::Timestamp(timestamp(d.enqueued_time)),
            ),
            ("iothub-deliverycount", Value::Ubyte(count)),
        ])),
        properties: Some(properties),
        application_properties: Some(ApplicationProperties(app)),
        body: Data(Binary::from(m.body.clone())),
        footer: None,
    }
}

/// A feedback batch as the service receives it (§3.8).
pub(crate) fn feedback_message(
    d: &FeedbackDelivery,
    hub_name: &str,
    json: Vec<u8>,
) -> Message<Data> {
    let properties = Properties {
        message_id: Some(MessageId::String(d.lock_token.to_string())),
        user_id: Some(Binary::from(hub_name.as_bytes().to_vec())),
        content_type: Some(Symbol::from(FEEDBACK_CONTENT_TYPE)),
        ..Properties::default()
    };
    Message {
        header: None,
        delivery_annotations: None,
        message_annotations: Some(annotations(vec![(
            "iothub-enqueuedtime",
            Value::Timestamp(timestamp(d.enqueued_time)),
        )])),
        properties: Some(properties),
        application_properties: None,
        body: Data(Binary::from(json)),
        footer: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::messaging::AmqpValue;
    use fe2o3_amqp::types::primitives::Uuid;

    fn service(
        props: Properties,
        app: Vec<(&str, SimpleValue)>,
        body: Body<Value>,
    ) -> Message<Body<Value>> {
        let mut map = OrderedMap::new();
        for (k, v) in app {
            map.insert(k.to_owned(), v);
        }
        Message {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: Some(props),
            application_properties: Some(ApplicationProperties(map)),
            body,
            footer: None,
        }
    }

    #[test]
    fn a_node_style_send_maps_every_field() {
        let uuid = uuid::Uuid::parse_str("9f27c428-fa78-4568-af79-61a0378e3679").unwrap();
        let props = Properties {
            message_id: Some(MessageId::Uuid(Uuid::from(*uuid.as_bytes()))),
            correlation_id: Some(MessageId::Ulong(7)),
            to: Some("/devices/d%201/messages/devicebound".into()),
            user_id: Some(Binary::from(b"me".to_vec())),
            content_type: Some(Symbol::from("application/json")),
            content_encoding: Some(Symbol::from("utf-8")),
            absolute_expiry_time: Some(AmqpTimestamp::from_milliseconds(1_800_000_000_000)),
            ..Properties::default()
        };
        let app = vec![
            ("iothub-ack", SimpleValue::String("full".into())),
            ("color", SimpleValue::String("red".into())),
            ("n", SimpleValue::Int(3)),
        ];
        let body = Body::Data(
            vec![
                Data(Binary::from(b"ab".to_vec())),
                Data(Binary::from(b"c".to_vec())),
            ]
            .into(),
        );
        let (device, m) = c2d_from_service(service(props, app, body)).unwrap();
        assert_eq!(device, "d 1");
        let p = &m.properties;
        assert_eq!(
            p.message_id.as_deref(),
            Some("9f27c428-fa78-4568-af79-61a0378e3679")
        );
        assert_eq!(p.correlation_id.as_deref(), Some("7"));
        assert_eq!(p.user_id.as_deref(), Some("me"));
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        assert_eq!(p.content_encoding.as_deref(), Some("utf-8"));
        assert_eq!(p.expiry_time_utc, Some(Timestamp(1_800_000_000_000)));
        assert_eq!(p.ack, AckMode::Full);
        assert_eq!(
            p.application,
            vec![
                ("color".to_owned(), "red".to_owned()),
                ("n".to_owned(), "3".to_owned())
            ]
        );
        assert_eq!(m.body, b"abc");
    }

    #[test]
    fn refusals_name_the_problem() {
        let to = |s: &str| Properties {
            to: Some(s.into()),
            ..Properties::default()
        };
        let ok_to = "/devices/d1/messages/devicebound";
        let err = |m| c2d_from_service(m).map(|_| ()).unwrap_err();
        assert_eq!(
            err(service(Properties::default(), vec![], Body::Empty)),
            ConvertError::To(None)
        );
        assert_eq!(
            err(service(to("/messages/devicebound"), vec![], Body::Empty)),
            ConvertError::To(Some("/messages/devicebound".into()))
        );
        assert_eq!(
            err(service(
                to(ok_to),
                vec![("iothub-ack", SimpleValue::String("Full!".into()))],
                Body::Empty
            )),
            ConvertError::Ack("Full!".into())
        );
        assert_eq!(
            err(service(
                to(ok_to),
                vec![],
                Body::Value(AmqpValue(Value::Int(1)))
            )),
            ConvertError::Body
        );
        let (_, m) = c2d_from_service(service(
            to(ok_to),
            vec![],
            Body::Value(AmqpValue(Value::String("hi".into()))),
        ))
        .unwrap();
        assert_eq!(m.body, b"hi");
    }
}
