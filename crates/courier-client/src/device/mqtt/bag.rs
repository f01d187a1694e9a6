//! The C2D topic as the hub writes it (wire spec §2.4):
//! `devices/{id}/messages/devicebound/{bag}`, where the bag is
//! percent-encoded `key=value` pairs joined by `&`, system properties first
//! (`%24.mid`, `%24.to`, `%24.exp`, `%24.cid`, `%24.uid`, `%24.ct`,
//! `%24.ce`, `iothub-ack`), then the application properties in the sender's
//! order. The hub's encoder is `courier-mqtt/src/topic.rs`; this is its
//! decoder, tolerant of what other hubs write too (a raw `$`, a bare `key`,
//! an empty `key=`, a leading `?`).

use std::time::SystemTime;

use percent_encoding::percent_decode_str;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::{Ack, ReceivedMessage};

/// The filter the device subscribes to for C2D.
pub(super) fn c2d_filter(device_id: &str) -> String {
    format!("devices/{device_id}/messages/devicebound/#")
}

/// The property bag of `topic` when it is device `device_id`'s C2D topic
/// (empty when the topic has none), else `None`.
pub(super) fn c2d_bag<'t>(topic: &'t str, device_id: &str) -> Option<&'t str> {
    let rest = topic
        .strip_prefix("devices/")?
        .strip_prefix(device_id)?
        .strip_prefix("/messages/devicebound")?;
    if rest.is_empty() {
        return Some("");
    }
    let bag = rest.strip_prefix('/')?;
    // The docs show the bag as `/?k=v`; no hub sends the `?`, but it costs nothing to accept.
    Some(bag.strip_prefix('?').unwrap_or(bag))
}

/// Fills `message`'s properties from `bag`.
///
/// System properties land in their fields; an `iothub-ack` or `$.exp` that
/// cannot be read stays an application property rather than being lost, as
/// do `$.`-keys this SDK has no field for. A bare `key` and an empty `key=`
/// both read as an empty value.
pub(super) fn decode_into(bag: &str, message: &mut ReceivedMessage) {
    for pair in bag.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(raw_key);
        let value = decode(raw_value);
        match key.as_str() {
            "$.mid" => message.message_id = Some(value),
            "$.cid" => message.correlation_id = Some(value),
            "$.uid" => message.user_id = Some(value),
            "$.to" => message.to = Some(value),
            "$.ct" => message.content_type = Some(value),
            "$.ce" => message.content_encoding = Some(value),
            "$.exp" => match parse_expiry(&value) {
                Some(at) => message.expiry = Some(at),
                None => {
                    tracing::debug!(%value, "unreadable $.exp on a C2D topic; kept as a property");
                    message.properties.push((key, value));
                }
            },
            "iothub-ack" => match Ack::parse(&value) {
                Some(ack) => message.ack = Some(ack),
                None => message.properties.push((key, value)),
            },
            _ => message.properties.push((key, value)),
        }
    }
}

/// Percent-decodes one key or value; `+` stays `+` (the hub encodes a space
/// as `%20`), and bytes that are not UTF-8 become U+FFFD.
fn decode(raw: &str) -> String {
    percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

/// `$.exp`: .NET's round-trip format (`2026-11-23T06:06:56.8890000Z`), i.e.
/// RFC 3339 with seven fractional digits; a time without an offset is UTC.
fn parse_expiry(value: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(value, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(&format!("{value}Z"), &Rfc3339))
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Delivery;
    use bytes::Bytes;
    use std::time::{Duration, UNIX_EPOCH};

    fn decoded(topic: &str, device: &str) -> ReceivedMessage {
        let mut m = ReceivedMessage::new(
            Bytes::new(),
            Delivery::Mqtt {
                connection: 1,
                packet_id: 1,
            },
        );
        decode_into(c2d_bag(topic, device).expect("a C2D topic"), &mut m);
        m
    }

    fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_python_trace_topic_decodes_to_every_field() {
        // courier-mqtt topic.rs test vector, as the hub wrote it in the trace.
        let m = decoded(
            "devices/harness-dev-1/messages/devicebound/%24.mid=9f27c428-fa78-4568-af79-61a0378e3679&%24.to=%2Fdevices%2Fharness-dev-1%2Fmessages%2Fdevicebound&%24.cid=corr-df9c619e&%24.ct=application%2Fjson&%24.ce=utf-8&harness-nonce=df9c619ea9644759a3b7350e91d0329d&color=red",
            "harness-dev-1",
        );
        assert_eq!(
            m.message_id.as_deref(),
            Some("9f27c428-fa78-4568-af79-61a0378e3679")
        );
        assert_eq!(
            m.to.as_deref(),
            Some("/devices/harness-dev-1/messages/devicebound")
        );
        assert_eq!(m.correlation_id.as_deref(), Some("corr-df9c619e"));
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.content_encoding.as_deref(), Some("utf-8"));
        assert_eq!(m.ack, None);
        assert_eq!(
            m.properties,
            props(&[
                ("harness-nonce", "df9c619ea9644759a3b7350e91d0329d"),
                ("color", "red")
            ])
        );
    }

    #[test]
    fn iothub_ack_is_read_and_not_an_application_property() {
        let m = decoded(
            "devices/harness-dev-1/messages/devicebound/%24.mid=5e936255-547b-4b9e-a1c9-370521ebe410&%24.to=%2Fdevices%2Fharness-dev-1%2Fmessages%2Fdevicebound&iothub-ack=positive&shape=circle",
            "harness-dev-1",
        );
        assert_eq!(m.ack, Some(Ack::Positive));
        assert_eq!(m.properties, props(&[("shape", "circle")]));
        let odd = decoded("devices/d/messages/devicebound/iothub-ack=sometimes", "d");
        assert_eq!(odd.ack, None);
        assert_eq!(odd.properties, props(&[("iothub-ack", "sometimes")]));
    }

    #[test]
    fn every_system_property_and_the_expiry_in_dotnet_round_trip_format() {
        let m = decoded(
            "devices/d1/messages/devicebound/%24.mid=m&%24.to=%2Fdevices%2Fd1%2Fmessages%2Fdevicebound&%24.exp=2026-11-23T06%3A06%3A56.8890000Z&%24.cid=c&%24.uid=u&%24.ct=t&%24.ce=e&iothub-ack=negative&z=1&a=2",
            "d1",
        );
        assert_eq!(m.message_id.as_deref(), Some("m"));
        assert_eq!(m.correlation_id.as_deref(), Some("c"));
        assert_eq!(m.user_id.as_deref(), Some("u"));
        assert_eq!(m.content_type.as_deref(), Some("t"));
        assert_eq!(m.content_encoding.as_deref(), Some("e"));
        assert_eq!(m.ack, Some(Ack::Negative));
        assert_eq!(
            m.expiry,
            Some(UNIX_EPOCH + Duration::from_millis(1_795_414_016_889))
        );
        assert_eq!(m.properties, props(&[("z", "1"), ("a", "2")]));
        // The latest time .NET can show, which the hub sends for far expiries.
        let far = decoded(
            "devices/d1/messages/devicebound/%24.exp=9999-12-31T23%3A59%3A59.9999999Z",
            "d1",
        );
        assert!(far.expiry.is_some());
        let local = decoded(
            "devices/d1/messages/devicebound/%24.exp=2026-11-23T06%3A06%3A56.8890000",
            "d1",
        );
        assert_eq!(local.expiry, m.expiry);
        let bad = decoded("devices/d1/messages/devicebound/%24.exp=soon", "d1");
        assert_eq!(bad.expiry, None);
        assert_eq!(bad.properties, props(&[("$.exp", "soon")]));
    }

    #[test]
    fn strictly_encoded_keys_and_values_decode_to_the_original_text() {
        // The bag courier-mqtt writes for these properties (its encoding test).
        let m = decoded(
            "devices/d1/messages/devicebound/%24.to=%2Fdevices%2Fd1%2Fmessages%2Fdevicebound&a%20key=a%20value&k%2F%26%3D=v%2F%26%3D&plus%2B=100%25&gr%C3%BC%C3%9Fe=%E6%97%A5%E6%9C%AC&safe-._~=AZaz09-._~&%24weird=%3F%23%2A",
            "d1",
        );
        assert_eq!(
            m.properties,
            props(&[
                ("a key", "a value"),
                ("k/&=", "v/&="),
                ("plus+", "100%"),
                ("grüße", "日本"),
                ("safe-._~", "AZaz09-._~"),
                ("$weird", "?#*"),
            ])
        );
    }

    #[test]
    fn the_embedded_sdk_vectors_with_raw_dollars_and_slashes() {
        let m = decoded(
            "devices/useragent_c/messages/devicebound/%24.to=%2Fdevices%2Fuseragent_c%2Fmessages%2FdeviceBound&abc=123&ghi=%2Fsome%2Fthing&jkl=%2Fsome%2Fthing%2F%3Fbla%3Dbla",
            "useragent_c",
        );
        assert_eq!(
            m.to.as_deref(),
            Some("/devices/useragent_c/messages/deviceBound")
        );
        assert_eq!(
            m.properties,
            props(&[
                ("abc", "123"),
                ("ghi", "/some/thing"),
                ("jkl", "/some/thing/?bla=bla")
            ])
        );
        let raw = decoded(
            "devices/useragent_c/messages/devicebound/$.mid=79eadb01-bd0d-472d-bd35-ccb76e70eab8&$.to=/devices/useragent_c/messages/deviceBound&iothub-ack=full",
            "useragent_c",
        );
        assert_eq!(
            raw.message_id.as_deref(),
            Some("79eadb01-bd0d-472d-bd35-ccb76e70eab8")
        );
        assert_eq!(
            raw.to.as_deref(),
            Some("/devices/useragent_c/messages/deviceBound")
        );
        assert_eq!(raw.ack, Some(Ack::Full));
        assert!(raw.properties.is_empty());
    }

    #[test]
    fn bare_and_empty_values_leading_question_mark_and_no_bag() {
        // The docs' example bag: `/?prop1&prop2=&prop3=a%20string`.
        let m = decoded(
            "devices/d1/messages/devicebound/?prop1&prop2=&prop3=a%20string&&%24.cid",
            "d1",
        );
        assert_eq!(
            m.properties,
            props(&[("prop1", ""), ("prop2", ""), ("prop3", "a string")])
        );
        assert_eq!(m.correlation_id.as_deref(), Some(""));
        for topic in [
            "devices/d1/messages/devicebound/",
            "devices/d1/messages/devicebound",
        ] {
            let none = decoded(topic, "d1");
            assert!(none.properties.is_empty() && none.message_id.is_none());
        }
        // A `+` is a plus: the hub writes spaces as %20.
        assert_eq!(
            decoded("devices/d1/messages/devicebound/k=a+b", "d1").properties,
            props(&[("k", "a+b")])
        );
    }

    #[test]
    fn only_this_devices_c2d_topic_has_a_bag() {
        assert_eq!(
            c2d_bag("devices/d1/messages/devicebound/a=b", "d1"),
            Some("a=b")
        );
        for topic in [
            "devices/d2/messages/devicebound/a=b",
            "devices/d1x/messages/devicebound/a=b",
            "devices/d1/messages/deviceboundx",
            "devices/d1/messages/events/a=b",
            "$iothub/twin/res/200/?$rid=1",
        ] {
            assert_eq!(c2d_bag(topic, "d1"), None, "{topic}");
        }
        assert_eq!(c2d_filter("d1"), "devices/d1/messages/devicebound/#");
    }
}
