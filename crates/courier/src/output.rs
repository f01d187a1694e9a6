//! Printing results: text for people by default, one JSON document per line
//! with `--json`. Writes go through `io::Result` so that a closed pipe reaches
//! `main` as an error it can treat as a clean exit (a `println!` would panic).

use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::SystemTime;

use base64::Engine as _;
use courier_client::{Device, FeedbackRecord, ReceivedMessage};
use serde::Serialize;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use crate::api::HubInfo;

/// Where command results go, and in which form.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Printer {
    json: bool,
}

impl Printer {
    /// A printer for text (`json == false`) or JSON lines.
    pub(crate) fn new(json: bool) -> Self {
        Self { json }
    }

    /// Prints `value` as one JSON line, or the text `human` builds.
    pub(crate) fn emit<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce() -> String,
    ) -> io::Result<()> {
        if self.json {
            let mut out = io::stdout().lock();
            serde_json::to_writer(&mut out, value).map_err(io::Error::from)?;
            writeln!(out)?;
            out.flush()
        } else {
            self.text(&human())
        }
    }

    /// Prints text in human mode only (nothing with `--json`).
    pub(crate) fn note(&self, text: &str) -> io::Result<()> {
        if self.json {
            Ok(())
        } else {
            self.text(text)
        }
    }

    fn text(&self, text: &str) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            out.write_all(b"\n")?;
        }
        out.flush()
    }
}

/// A body as JSON: `body` when it is UTF-8 text, else `bodyBase64`.
pub(crate) fn body_fields(body: &[u8], into: &mut Map<String, Value>) {
    match std::str::from_utf8(body) {
        Ok(text) => into.insert("body".into(), Value::String(text.to_owned())),
        Err(_) => into.insert(
            "bodyBase64".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
        ),
    };
}

/// `at` as RFC 3339 UTC with milliseconds, as the hub writes times.
fn rfc3339(at: SystemTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    OffsetDateTime::from(at)
        .format(&format)
        .unwrap_or_else(|_| format!("{at:?}"))
}

/// A received message and how it is to be settled, as one JSON object.
pub(crate) fn message_json(message: &ReceivedMessage, settlement: &str) -> Value {
    let mut object = Map::new();
    let mut put = |key: &str, value: Value| {
        if !value.is_null() {
            object.insert(key.into(), value);
        }
    };
    put("lockToken", json!(message.lock_token));
    put("sequenceNumber", json!(message.sequence_number));
    put("deliveryCount", json!(message.delivery_count));
    put("messageId", json!(message.message_id));
    put("correlationId", json!(message.correlation_id));
    put("userId", json!(message.user_id));
    put("to", json!(message.to));
    put("ack", json!(message.ack.map(|a| a.as_str())));
    put("enqueuedTimeUtc", json!(message.enqueued_time.map(rfc3339)));
    put("expiryTimeUtc", json!(message.expiry.map(rfc3339)));
    put("contentType", json!(message.content_type));
    put("contentEncoding", json!(message.content_encoding));
    let properties: Map<String, Value> = message
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    object.insert("properties".into(), Value::Object(properties));
    body_fields(&message.body, &mut object);
    object.insert("settlement".into(), json!(settlement));
    Value::Object(object)
}

/// A received message, for people.
pub(crate) fn message_text(message: &ReceivedMessage) -> String {
    let mut text = String::new();
    let number = message
        .sequence_number
        .map_or_else(|| "?".to_owned(), |n| n.to_string());
    let _ = writeln!(text, "message {number}");
    let fields = [
        (
            "delivery count",
            message.delivery_count.map(|n| n.to_string()),
        ),
        ("lock token", message.lock_token.clone()),
        ("message id", message.message_id.clone()),
        ("correlation id", message.correlation_id.clone()),
        ("user id", message.user_id.clone()),
        ("ack", message.ack.map(|a| a.as_str().to_owned())),
        ("content type", message.content_type.clone()),
        ("content encoding", message.content_encoding.clone()),
        ("enqueued", message.enqueued_time.map(rfc3339)),
        ("expires", message.expiry.map(rfc3339)),
    ];
    for (label, value) in fields {
        if let Some(value) = value {
            let _ = writeln!(text, "  {label}: {value}");
        }
    }
    for (name, value) in &message.properties {
        let _ = writeln!(text, "  property {name}: {value}");
    }
    match std::str::from_utf8(&message.body) {
        Ok(body) => {
            let _ = write!(text, "  body: {body}");
        }
        Err(_) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(&message.body);
            let _ = write!(text, "  body (base64): {encoded}");
        }
    }
    text
}

/// One feedback record on one line, for people.
pub(crate) fn feedback_record_text(record: &FeedbackRecord) -> String {
    let id = if record.original_message_id.is_empty() {
        "(no message id)"
    } else {
        &record.original_message_id
    };
    format!(
        "{status} message {id} device {device} at {time}: {description}",
        status = record.status_code.as_str(),
        device = record.device_id,
        time = record.enqueued_time_utc,
        description = record.description,
    )
}

/// A device's registry entry, for people.
pub(crate) fn device_text(device: &Device) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "device id: {}", device.device_id);
    if let Some(status) = device.status {
        let _ = writeln!(text, "status: {}", status.as_str());
    }
    if let Some(reason) = device.status_reason.as_deref().filter(|r| !r.is_empty()) {
        let _ = writeln!(text, "status reason: {reason}");
    }
    if let Some(etag) = &device.etag {
        let _ = writeln!(text, "etag: {etag}");
    }
    if let Some(count) = device.cloud_to_device_message_count {
        let _ = writeln!(text, "queued messages: {count}");
    }
    if let Some(auth) = &device.authentication {
        let _ = writeln!(text, "authentication: {}", auth.kind.as_str());
        if let Some(keys) = &auth.symmetric_key {
            for (label, key) in [
                ("primary key", &keys.primary_key),
                ("secondary key", &keys.secondary_key),
            ] {
                if let Some(key) = key {
                    let _ = writeln!(text, "{label}: {key}");
                }
            }
        }
        if let Some(prints) = &auth.x509_thumbprint {
            let pairs = [
                ("primary thumbprint", &prints.primary_thumbprint),
                ("secondary thumbprint", &prints.secondary_thumbprint),
            ];
            for (label, print) in pairs {
                if let Some(print) = print {
                    let _ = writeln!(text, "{label}: {print}");
                }
            }
        }
    }
    if let Some(limits) = device.c2d_limits.as_ref().filter(|l| !l.is_empty()) {
        if let Ok(Value::Object(map)) = serde_json::to_value(limits) {
            for (name, value) in map {
                let _ = writeln!(text, "c2d limit {name}: {value}");
            }
        }
    }
    text
}

/// Devices as an aligned table, for people.
pub(crate) fn device_table(devices: &[Device]) -> String {
    let header = ["DEVICE ID", "STATUS", "AUTH", "QUEUED"];
    let rows: Vec<[String; 4]> = devices
        .iter()
        .map(|d| {
            [
                d.device_id.clone(),
                d.status.map_or("-", |s| s.as_str()).to_owned(),
                d.authentication
                    .as_ref()
                    .map_or("-", |a| a.kind.as_str())
                    .to_owned(),
                d.cloud_to_device_message_count
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: [&str; 4]| {
        let mut row = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                row.push_str(cell);
            } else {
                let _ = write!(row, "{cell:<width$}  ");
            }
        }
        let _ = writeln!(text, "{}", row.trim_end());
    };
    line(header);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3]]);
    }
    if devices.is_empty() {
        let _ = writeln!(text, "(no devices)");
    }
    text
}

/// What the hub says about itself, for people.
pub(crate) fn hub_info_text(info: &HubInfo) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "host name: {}", info.host_name);
    let _ = writeln!(text, "version: {}", info.version);
    let _ = writeln!(text, "devices: {}", info.device_count);
    let _ = writeln!(text, "queued messages: {}", info.queued_messages);
    let _ = writeln!(
        text,
        "pending feedback records: {}",
        info.pending_feedback_records
    );
    for (name, value) in &info.limits {
        let _ = writeln!(text, "limit {name}: {value}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_client::DeviceStatus;

    #[test]
    fn device_tables_align_columns_to_the_longest_cell() {
        let devices = [
            {
                let mut device = Device::new("a-long-device-id").with_status(DeviceStatus::Enabled);
                device.cloud_to_device_message_count = Some(3);
                device
            },
            Device::new("d2").with_status(DeviceStatus::Disabled),
        ];
        let table = device_table(&devices);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "DEVICE ID         STATUS    AUTH  QUEUED");
        assert_eq!(lines[1], "a-long-device-id  enabled   -     3");
        assert_eq!(lines[2], "d2                disabled  -     -");
    }

    #[test]
    fn binary_bodies_are_base64_in_json() {
        let mut map = Map::new();
        body_fields(&[0xff, 0x00], &mut map);
        assert_eq!(map.get("bodyBase64"), Some(&json!("/wA=")));
        let mut text = Map::new();
        body_fields(b"hi", &mut text);
        assert_eq!(text.get("body"), Some(&json!("hi")));
    }
}
