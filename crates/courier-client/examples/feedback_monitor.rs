//! Prints every delivery feedback record as it arrives and completes each
//! batch. `COUNT=n` stops after n batches and `IDLE_LIMIT=n` after n minutes
//! without feedback; otherwise it runs until Ctrl-C.
//!
//! ```sh
//! SERVICE_CONNECTION_STRING='HostName=localhost;SharedAccessKeyName=service;SharedAccessKey=…' \
//!   cargo run -p courier-client --example feedback_monitor
//! ```
//! Settings: see `examples/common/mod.rs`.

mod common;

use std::time::Duration;

use courier_client::ServiceClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let connection_string = common::required("SERVICE_CONNECTION_STRING")?;
    let count: Option<u64> = std::env::var("COUNT").ok().map(|c| c.parse()).transpose()?;
    let idle_limit: Option<u32> = std::env::var("IDLE_LIMIT")
        .ok()
        .map(|c| c.parse())
        .transpose()?;
    let service = ServiceClient::with_options(&connection_string, common::service_options()?)?;
    let mut feedback = service.feedback_receiver().await?;
    println!("waiting for feedback (Ctrl-C to stop)");
    let mut idle = 0;
    let mut batches = 0u64;
    while count.is_none_or(|n| batches < n) {
        let batch = tokio::select! {
            batch = feedback.receive(Duration::from_secs(60)) => batch?,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(batch) = batch else {
            idle += 1;
            if idle_limit.is_some_and(|limit| idle >= limit) {
                break;
            }
            continue;
        };
        idle = 0;
        for record in &batch.records {
            println!(
                "{} {} {} {}",
                record.enqueued_time_utc,
                record.device_id,
                record.original_message_id,
                record.status_code.as_str()
            );
        }
        feedback.complete(&batch).await?;
        batches += 1;
    }
    feedback.close().await;
    service.close().await;
    Ok(())
}
