//! A device that polls for cloud-to-device messages with a timeout and
//! completes each one. `COUNT=n` stops after n messages; otherwise it runs
//! until a receive times out `IDLE_LIMIT` times in a row (default: forever).
//!
//! ```sh
//! DEVICE_CONNECTION_STRING='HostName=localhost;DeviceId=thermostat-1;SharedAccessKey=…' \
//!   COURIER_TRANSPORT=http cargo run -p courier-client --example polling_device
//! ```
//! Settings: see `examples/common/mod.rs`.

mod common;

use std::time::Duration;

use courier_client::DeviceClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let connection_string = common::required("DEVICE_CONNECTION_STRING")?;
    let count: Option<u64> = std::env::var("COUNT").ok().map(|c| c.parse()).transpose()?;
    let idle_limit: Option<u32> = std::env::var("IDLE_LIMIT")
        .ok()
        .map(|c| c.parse())
        .transpose()?;
    let client = DeviceClient::with_options(
        &connection_string,
        common::transport()?,
        common::device_options()?,
    )?;
    client.connect().await?;
    let mut received = 0u64;
    let mut idle = 0u32;
    while count.is_none_or(|n| received < n) {
        match client.receive(Duration::from_secs(10)).await? {
            Some(message) => {
                idle = 0;
                received += 1;
                println!(
                    "received {}: {} {:?}",
                    message.message_id.as_deref().unwrap_or("(no id)"),
                    String::from_utf8_lossy(&message.body),
                    message.properties
                );
                client.complete(&message).await?;
            }
            None => {
                idle += 1;
                println!("no message in 10 s");
                if idle_limit.is_some_and(|limit| idle >= limit) {
                    break;
                }
            }
        }
    }
    client.close().await;
    Ok(())
}
