//! A simulated device that receives cloud-to-device messages with a
//! callback, prints each body and its properties, and completes it; the
//! connection status is printed as it changes. Stops on Ctrl-C.
//!
//! ```sh
//! DEVICE_CONNECTION_STRING='HostName=localhost;DeviceId=thermostat-1;SharedAccessKey=…' \
//!   cargo run -p courier-client --example simulated_device
//! ```
//! Settings: see `examples/common/mod.rs`.

mod common;

use courier_client::{DeviceClient, Outcome};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let connection_string = common::required("DEVICE_CONNECTION_STRING")?;
    let client = DeviceClient::with_options(
        &connection_string,
        common::transport()?,
        common::device_options()?,
    )?;
    client.set_connection_status_handler(|change| match &change.error {
        Some(error) => println!("status: {:?} ({:?}): {error}", change.status, change.reason),
        None => println!("status: {:?} ({:?})", change.status, change.reason),
    });
    client.set_message_handler(|message| async move {
        println!("received: {}", String::from_utf8_lossy(&message.body));
        if let Some(id) = &message.message_id {
            println!("  message id: {id}");
        }
        for (name, value) in &message.properties {
            println!("  {name} = {value}");
        }
        Outcome::Complete
    });
    client.connect().await?;
    println!(
        "waiting for messages on {} (Ctrl-C to stop)",
        client.transport()
    );
    tokio::signal::ctrl_c().await?;
    client.close().await;
    Ok(())
}
