//! IoT Hub's MQTT topic names: the C2D subscription filter, the C2D topic
//! with its property bag (wire spec §2.4), and the D2C topic (§2.6).

use std::fmt::Write as _;

use courier_core::{devicebound_address, AckMode, Delivery, Timestamp};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use time::macros::format_description;
use time::OffsetDateTime;

/// RFC 3986 strict: everything but `A-Z a-z 0-9 - . _ ~` is escaped, because
/// Java decodes `+` as a space and every SDK splits on raw `/`, `&` and `=`.
const STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The latest instant the .NET round-trip format can show.
const LATEST_EXPIRY: &str = "9999-12-31T23:59:59.9999999Z";

/// The filter every SDK subscribes to for C2D: `devices/{id}/messages/devicebound/#`.
pub(crate) fn c2d_filter(device_id: &str) -> String {
    format!("devices/{device_id}/messages/devicebound/#")
}

/// Whether `topic` is device `device_id`'s D2C topic: `…/messages/events`,
/// optionally followed by `/` and a property bag.
pub(crate) fn is_d2c_topic(topic: &str, device_id: &str) -> bool {
    topic
        .strip_prefix("devices/")
        .and_then(|t| t.strip_prefix(device_id))
        .and_then(|t| t.strip_prefix("/messages/events"))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The topic of a C2D PUBLISH: `devices/{id}/messages/devicebound/{bag}`.
///
/// The bag always starts with system properties (`%24.to` is always there),
/// in the order `%24.mid`, `%24.to`, `%24.exp`, `%24.cid`, `%24.uid`,
/// `%24.ct`, `%24.ce`, `iothub-ack`, then the application properties in the
/// sender's order: .NET indexes the fifth topic segment and crashes without a
/// bag, Java reads properties only from the first `%24` on, and C compares the
/// literal bytes `%24.mid`.
pub(crate) fn c2d_topic(device_id: &str, delivery: &Delivery) -> String {
    let p = &delivery.message.properties;
    let mut topic = format!("devices/{device_id}/messages/devicebound/");
    let mut bag = Bag(&mut topic, true);
    if let Some(mid) = &p.message_id {
        bag.pair("%24.mid", mid);
    }
    bag.pair("%24.to", &devicebound_address(device_id));
    if let Some(exp) = p.expiry_time_utc {
        bag.pair("%24.exp", &dotnet_round_trip(exp));
    }
    for (key, value) in [
        ("%24.cid", &p.correlation_id),
        ("%24.uid", &p.user_id),
        ("%24.ct", &p.content_type),
        ("%24.ce", &p.content_encoding),
    ] {
        if let Some(v) = value {
            bag.pair(key, v);
        }
    }
    if p.ack != AckMode::None {
        bag.pair("iothub-ack", p.ack.as_str());
    }
    for (key, value) in &p.application {
        bag.encoded_pair(key, value);
    }
    topic
}

/// Appends `key=value` pairs joined by `&`.
struct Bag<'a>(&'a mut String, bool);

impl Bag<'_> {
    /// A pair whose key is already in wire form.
    fn pair(&mut self, wire_key: &str, value: &str) {
        self.separator();
        // Writing to a String cannot fail.
        let _ = write!(self.0, "{wire_key}={}", utf8_percent_encode(value, STRICT));
    }

    /// An application property: key and value both encoded.
    fn encoded_pair(&mut self, key: &str, value: &str) {
        self.separator();
        let _ = write!(
            self.0,
            "{}={}",
            utf8_percent_encode(key, STRICT),
            utf8_percent_encode(value, STRICT)
        );
    }

    fn separator(&mut self) {
        if !std::mem::take(&mut self.1) {
            self.0.push('&');
        }
    }
}

/// `ts` in .NET's round-trip format (`"o"`): seven fractional digits and `Z`,
/// which the .NET SDK parses with `DateTime.ParseExact(v, "o")`.
pub(crate) fn dotnet_round_trip(ts: Timestamp) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts.as_millis()) * 1_000_000)
        .ok()
        .filter(|t| (1..=9999).contains(&t.year()))
        .and_then(|t| t.format(&format).ok())
        // Expiries saturate far in the future; show the latest time .NET can parse.
        .unwrap_or_else(|| LATEST_EXPIRY.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::{C2dMessage, DeviceId, LockToken, MessageProperties, SequenceNumber};
    use std::sync::Arc;

    fn delivery(device: &str, properties: MessageProperties) -> Delivery {
        Delivery {
            device_id: DeviceId::new(device).unwrap(),
            message: Arc::new(C2dMessage {
                properties,
                body: b"x".to_vec(),
            }),
            sequence_number: SequenceNumber(1),
            enqueued_time: Timestamp(0),
            expiry_time: Timestamp(3_600_000),
            delivery_count: 0,
            lock_token: LockToken([0; 16]),
            locked_until: Timestamp(60_000),
        }
    }

    fn app(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_python_trace_topic_is_reproduced_byte_for_byte() {
        let props = MessageProperties {
            message_id: Some("9f27c428-fa78-4568-af79-61a0378e3679".into()),
            correlation_id: Some("corr-df9c619e".into()),
            content_type: Some("application/json".into()),
            content_encoding: Some("utf-8".into()),
            application: app(&[
                ("harness-nonce", "df9c619ea9644759a3b7350e91d0329d"),
                ("color", "red"),
            ]),
            ..Default::default()
        };
        assert_eq!(
            c2d_topic("harness-dev-1", &delivery("harness-dev-1", props)),
            "devices/harness-dev-1/messages/devicebound/%24.mid=9f27c428-fa78-4568-af79-61a0378e3679&%24.to=%2Fdevices%2Fharness-dev-1%2Fmessages%2Fdevicebound&%24.cid=corr-df9c619e&%24.ct=application%2Fjson&%24.ce=utf-8&harness-nonce=df9c619ea9644759a3b7350e91d0329d&color=red"
        );
    }

    #[test]
    fn the_node_trace_topic_carries_iothub_ack_before_application_properties() {
        let props = MessageProperties {
            message_id: Some("5e936255-547b-4b9e-a1c9-370521ebe410".into()),
            ack: AckMode::Positive,
            application: app(&[("shape", "circle")]),
            ..Default::default()
        };
        assert_eq!(
            c2d_topic("harness-dev-1", &delivery("harness-dev-1", props)),
            "devices/harness-dev-1/messages/devicebound/%24.mid=5e936255-547b-4b9e-a1c9-370521ebe410&%24.to=%2Fdevices%2Fharness-dev-1%2Fmessages%2Fdevicebound&iothub-ack=positive&shape=circle"
        );
    }

    #[test]
    fn the_embedded_sdk_test_vector_values_are_encoded_as_it_expects() {
        // EMB test_az_iot_hub_client_c2d.c: `abc=123&ghi=%2Fsome%2Fthing&jkl=%2Fsome%2Fthing%2F%3Fbla%3Dbla`.
        let props = MessageProperties {
            application: app(&[
                ("abc", "123"),
                ("ghi", "/some/thing"),
                ("jkl", "/some/thing/?bla=bla"),
            ]),
            ..Default::default()
        };
        assert_eq!(
            c2d_topic("useragent_c", &delivery("useragent_c", props)),
            "devices/useragent_c/messages/devicebound/%24.to=%2Fdevices%2Fuseragent_c%2Fmessages%2Fdevicebound&abc=123&ghi=%2Fsome%2Fthing&jkl=%2Fsome%2Fthing%2F%3Fbla%3Dbla"
        );
        let full = MessageProperties {
            message_id: Some("79eadb01-bd0d-472d-bd35-ccb76e70eab8".into()),
            ack: AckMode::Full,
            ..Default::default()
        };
        assert_eq!(
            c2d_topic("useragent_c", &delivery("useragent_c", full)),
            "devices/useragent_c/messages/devicebound/%24.mid=79eadb01-bd0d-472d-bd35-ccb76e70eab8&%24.to=%2Fdevices%2Fuseragent_c%2Fmessages%2Fdevicebound&iothub-ack=full"
        );
    }

    #[test]
    fn a_message_without_properties_still_carries_to_and_the_trailing_slash() {
        assert_eq!(
            c2d_topic("d1", &delivery("d1", MessageProperties::default())),
            "devices/d1/messages/devicebound/%24.to=%2Fdevices%2Fd1%2Fmessages%2Fdevicebound"
        );
    }

    #[test]
    fn every_system_property_comes_in_the_recommended_order() {
        let props = MessageProperties {
            message_id: Some("m".into()),
            correlation_id: Some("c".into()),
            user_id: Some("u".into()),
            content_type: Some("t".into()),
            content_encoding: Some("e".into()),
            expiry_time_utc: Some(Timestamp(1_795_414_016_889)),
            ack: AckMode::Negative,
            application: app(&[("z", "1"), ("a", "2")]),
        };
        assert_eq!(
            c2d_topic("d1", &delivery("d1", props)),
            "devices/d1/messages/devicebound/%24.mid=m&%24.to=%2Fdevices%2Fd1%2Fmessages%2Fdevicebound&%24.exp=2026-11-23T06%3A06%3A56.8890000Z&%24.cid=c&%24.uid=u&%24.ct=t&%24.ce=e&iothub-ack=negative&z=1&a=2"
        );
    }

    #[test]
    fn special_characters_are_strictly_percent_encoded_with_upper_case_hex() {
        let props = MessageProperties {
            application: app(&[
                ("a key", "a value"),
                ("k/&=", "v/&="),
                ("plus+", "100%"),
                ("grüße", "日本"),
                ("safe-._~", "AZaz09-._~"),
                ("$weird", "?#*"),
            ]),
            ..Default::default()
        };
        let topic = c2d_topic("d1", &delivery("d1", props));
        let bag = topic
            .strip_prefix(
                "devices/d1/messages/devicebound/%24.to=%2Fdevices%2Fd1%2Fmessages%2Fdevicebound&",
            )
            .unwrap();
        assert_eq!(
            bag,
            "a%20key=a%20value&k%2F%26%3D=v%2F%26%3D&plus%2B=100%25&gr%C3%BC%C3%9Fe=%E6%97%A5%E6%9C%AC&safe-._~=AZaz09-._~&%24weird=%3F%23%2A"
        );
    }

    #[test]
    fn expiry_uses_seven_fractional_digits_and_saturates() {
        assert_eq!(
            dotnet_round_trip(Timestamp(0)),
            "1970-01-01T00:00:00.0000000Z"
        );
        assert_eq!(
            dotnet_round_trip(Timestamp(1_795_414_016_889)),
            "2026-11-23T06:06:56.8890000Z"
        );
        assert_eq!(dotnet_round_trip(Timestamp(i64::MAX)), LATEST_EXPIRY);
    }

    #[test]
    fn filters_and_d2c_topics_name_the_device_exactly() {
        assert_eq!(c2d_filter("d1"), "devices/d1/messages/devicebound/#");
        assert!(is_d2c_topic("devices/d1/messages/events/", "d1"));
        assert!(is_d2c_topic("devices/d1/messages/events", "d1"));
        assert!(is_d2c_topic(
            "devices/d1/messages/events/%24.ct=application%2Fjson&a=b",
            "d1"
        ));
        assert!(!is_d2c_topic("devices/d1/messages/eventsx", "d1"));
        assert!(!is_d2c_topic("devices/d2/messages/events/", "d1"));
        assert!(!is_d2c_topic("devices/d1x/messages/events/", "d1"));
        assert!(!is_d2c_topic(
            "$iothub/twin/PATCH/properties/reported/",
            "d1"
        ));
    }
}
