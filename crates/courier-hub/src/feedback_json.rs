//! Feedback batches as IoT Hub's JSON (wire spec §3.8, §4.3): an array of
//! records with camelCase keys, `statusCode` as the status *name* and
//! `description` equal to it (the C service SDK reads the status from
//! `description`), times as RFC 3339 UTC with milliseconds. Every head that
//! delivers feedback (HTTPS, AMQP) encodes it here.

use courier_core::{FeedbackBatch, FeedbackRecord, Timestamp};
use serde::Serialize;
use time::macros::format_description;
use time::OffsetDateTime;

/// The content type IoT Hub gives feedback batches.
pub const FEEDBACK_CONTENT_TYPE: &str = "application/vnd.microsoft.iothub.feedback.json";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordJson<'a> {
    original_message_id: &'a str,
    device_generation_id: &'a str,
    device_id: &'a str,
    enqueued_time_utc: String,
    status_code: &'static str,
    description: &'static str,
}

impl<'a> RecordJson<'a> {
    fn new(record: &'a FeedbackRecord) -> Self {
        RecordJson {
            original_message_id: record.original_message_id.as_deref().unwrap_or(""),
            device_generation_id: &record.device_generation_id,
            device_id: record.device_id.as_str(),
            enqueued_time_utc: rfc3339_millis(record.enqueued_time_utc),
            status_code: record.status.status_name(),
            description: record.status.status_name(),
        }
    }
}

/// `batch` as IoT Hub's feedback JSON body.
pub fn feedback_json(batch: &FeedbackBatch) -> Result<Vec<u8>, serde_json::Error> {
    let records: Vec<RecordJson<'_>> = batch.records.iter().map(RecordJson::new).collect();
    serde_json::to_vec(&records)
}

/// `ts` as RFC 3339 UTC with exactly three fractional digits; instants
/// beyond year 9999 show as its last millisecond, which every client parses.
pub fn rfc3339_millis(ts: Timestamp) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    let nanos = i128::from(ts.as_millis()) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .filter(|t| (0..=9999).contains(&t.year()))
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "9999-12-31T23:59:59.999Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::{DeviceId, Outcome};

    #[test]
    fn records_are_camel_case_with_status_names() {
        let batch = FeedbackBatch {
            records: vec![FeedbackRecord {
                original_message_id: Some("m1".into()),
                device_id: DeviceId::new("d1").unwrap(),
                device_generation_id: "g".into(),
                enqueued_time_utc: Timestamp(1_795_414_016_889),
                status: Outcome::Rejected,
            }],
        };
        let json = String::from_utf8(feedback_json(&batch).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"[{"originalMessageId":"m1","deviceGenerationId":"g","deviceId":"d1","enqueuedTimeUtc":"2026-11-23T06:06:56.889Z","statusCode":"Rejected","description":"Rejected"}]"#
        );
    }
}
