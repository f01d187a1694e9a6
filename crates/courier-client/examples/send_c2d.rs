//! A back end that sends one cloud-to-device message with properties and
//! `ack=full`, then waits for its delivery feedback.
//!
//! ```sh
//! SERVICE_CONNECTION_STRING='HostName=localhost;SharedAccessKeyName=service;SharedAccessKey=…' \
//!   cargo run -p courier-client --example send_c2d -- thermostat-1 'set 21.5'
//! ```
//! Settings: see `examples/common/mod.rs`.

mod common;

use std::time::Duration;

use courier_client::{Ack, FeedbackStatus, Message, ServiceClient};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(device_id), Some(body)) = (args.next(), args.next()) else {
        return Err("usage: send_c2d <device-id> <body>".into());
    };
    let connection_string = common::required("SERVICE_CONNECTION_STRING")?;
    let service = ServiceClient::with_options(&connection_string, common::service_options()?)?;
    let message_id = uuid::Uuid::new_v4().to_string();
    let message = Message::new(body)
        .message_id(message_id.clone())
        .property("unit", "celsius")
        .ack(Ack::Full)
        .ttl(Duration::from_secs(3600));
    // Open the feedback receiver first so that fast feedback is not missed.
    let mut feedback = service.feedback_receiver().await?;
    service
        .send(&device_id, &message, Duration::from_secs(30))
        .await?;
    println!("sent {message_id} to {device_id}; waiting for feedback");
    loop {
        let Some(batch) = feedback.receive(Duration::from_secs(120)).await? else {
            return Err("no feedback within 120 s".into());
        };
        feedback.complete(&batch).await?;
        if let Some(record) = batch
            .records
            .iter()
            .find(|r| r.original_message_id == message_id)
        {
            println!("feedback: {}", record.status_code.as_str());
            service.close().await;
            return match record.status_code {
                FeedbackStatus::Success => Ok(()),
                _ => Err(format!(
                    "the device did not complete it: {}",
                    record.status_code.as_str()
                )
                .into()),
            };
        }
    }
}
