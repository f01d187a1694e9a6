//! Link and message addresses as the SDKs write them (wire spec §3.4, §3.7,
//! §3.8): relative (`/devices/d1/messages/devicebound`) or absolute
//! (`amqps://{host}[:5671]/…`), in any letter case, device ids URL-encoded by
//! some SDKs.

use percent_encoding::percent_decode_str;

/// What a link address names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    /// `$cbs`: the claims-based security node.
    Cbs,
    /// `/messages/devicebound`: the service's C2D send node.
    ServiceDevicebound,
    /// `/messages/serviceBound/feedback`: the feedback queue.
    Feedback,
    /// `/devices/{id}/messages/devicebound`: a device's C2D queue.
    DeviceBound(String),
    /// `/devices/{id}/messages/events`: a device's telemetry.
    DeviceEvents(String),
}

/// The node `address` names, or `None` for anything Courier does not serve.
pub(crate) fn classify(address: &str) -> Option<Node> {
    if address == "$cbs" {
        return Some(Node::Cbs);
    }
    let path = strip_authority(address);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let is = |s: &str, want: &str| s.eq_ignore_ascii_case(want);
    match segments.as_slice() {
        [m, d] if is(m, "messages") && is(d, "devicebound") => Some(Node::ServiceDevicebound),
        [m, s, f] if is(m, "messages") && is(s, "servicebound") && is(f, "feedback") => {
            Some(Node::Feedback)
        }
        [d, id, m, kind] if is(d, "devices") && is(m, "messages") && !id.is_empty() => {
            let id = device_id(id);
            if is(kind, "devicebound") {
                Some(Node::DeviceBound(id))
            } else if is(kind, "events") {
                Some(Node::DeviceEvents(id))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The device a C2D message's `to` names (`/devices/{id}/messages/devicebound`).
pub(crate) fn devicebound_target(to: &str) -> Option<String> {
    match classify(to)? {
        Node::DeviceBound(id) => Some(id),
        _ => None,
    }
}

/// `amqps://host:port/path` → `/path`; a relative address is returned as is.
fn strip_authority(address: &str) -> &str {
    match address.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => address,
    }
}

/// Node and .NET URL-encode the id; C, Java and Python send it raw. Device ids
/// may legally contain `%`, so an id that does not decode stays raw, and `+`
/// is never a space.
fn device_id(segment: &str) -> String {
    percent_decode_str(segment)
        .decode_utf8()
        .map_or_else(|_| segment.to_owned(), |s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sdk_spelling_of_each_node() {
        let d = |s: &str| Some(Node::DeviceBound(s.to_owned()));
        assert_eq!(classify("/devices/d1/messages/devicebound"), d("d1"));
        assert_eq!(
            classify("amqps://hub.courier.test:5671/devices/d%2B1/messages/deviceBound"),
            d("d+1")
        );
        assert_eq!(classify("/devices/a+b/messages/devicebound"), d("a+b"));
        assert_eq!(
            classify("/devices/d1/messages/events"),
            Some(Node::DeviceEvents("d1".into()))
        );
        assert_eq!(
            classify("/messages/devicebound"),
            Some(Node::ServiceDevicebound)
        );
        assert_eq!(
            classify("amqps://hub.courier.test/messages/deviceBound"),
            Some(Node::ServiceDevicebound)
        );
        assert_eq!(
            classify("/messages/serviceBound/feedback"),
            Some(Node::Feedback)
        );
        assert_eq!(
            classify("amqps://h/messages/servicebound/feedback"),
            Some(Node::Feedback)
        );
        assert_eq!(classify("$cbs"), Some(Node::Cbs));
    }

    #[test]
    fn unknown_addresses_are_none() {
        assert_eq!(classify("/messages/serviceBound/filenotifications"), None);
        assert_eq!(classify("/devices//messages/devicebound"), None);
        assert_eq!(classify("/devices/d1/twin"), None);
        assert_eq!(classify(""), None);
        assert_eq!(devicebound_target("/messages/devicebound"), None);
        assert_eq!(
            devicebound_target("/devices/d%201/messages/devicebound"),
            Some("d 1".into())
        );
    }
}
