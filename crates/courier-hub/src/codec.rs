//! Events to store records and back. The encoding is postcard; the stream key
//! partitions by device so that a distributed backend can shard by it.

use courier_core::HubEvent;
use courier_store::Record;

/// Stream of the events that belong to no device.
const FEEDBACK_STREAM: &str = "feedback";

/// One event as a store record.
pub(crate) fn encode(event: &HubEvent) -> Result<Record, postcard::Error> {
    let stream = match event.device_id() {
        Some(id) => format!("d/{id}"),
        None => FEEDBACK_STREAM.to_owned(),
    };
    Ok(Record {
        stream,
        payload: postcard::to_stdvec(event)?,
    })
}

/// A store record back into its event.
pub(crate) fn decode(record: &Record) -> Result<HubEvent, postcard::Error> {
    postcard::from_bytes(&record.payload)
}
