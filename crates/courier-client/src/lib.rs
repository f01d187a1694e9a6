//! Courier's Rust SDK: a [`DeviceClient`] that receives cloud-to-device
//! messages over MQTT, AMQP or HTTPS (each also over WebSockets where IoT Hub
//! offers it) and completes, rejects or abandons them; a [`ServiceClient`]
//! that sends messages, reads delivery feedback and purges queues; and a
//! [`RegistryManager`] for devices. It speaks IoT Hub's protocols, so it
//! works against Courier and against Azure IoT Hub alike.
//!
//! Connections are kept up by a [`RetryPolicy`] (exponential back-off with
//! jitter by default), SAS tokens minted from keys are renewed before they
//! expire, and every failure is a typed [`ClientError`] that tells
//! throttling, unauthorized, not found, queue full and network faults apart.
//!
//! This crate holds no hub logic: it only translates the programming model
//! to the wire and back.
//!
//! ```no_run
//! use courier_client::{Ack, DeviceClient, Message, Outcome, ServiceClient, Transport};
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), courier_client::ClientError> {
//! let device = DeviceClient::from_connection_string(
//!     "HostName=localhost;DeviceId=dev1;SharedAccessKey=…",
//!     Transport::Amqp,
//! )?;
//! device.set_message_handler(|message| async move {
//!     println!("{:?}", message.body_str());
//!     Outcome::Complete
//! });
//! device.connect().await?;
//!
//! let service = ServiceClient::from_connection_string(
//!     "HostName=localhost;SharedAccessKeyName=service;SharedAccessKey=…",
//! )?;
//! service
//!     .send("dev1", &Message::new("hello").ack(Ack::Full), Duration::from_secs(30))
//!     .await?;
//! # Ok(()) }
//! ```

mod amqp;
mod credentials;
mod device;
mod error;
mod feedback;
mod http;
mod message;
mod net;
mod options;
mod registry;
mod retry;
mod service;
mod status;

pub use device::DeviceClient;
pub use error::{ClientError, HubError};
pub use feedback::{FeedbackBatch, FeedbackRecord, FeedbackStatus};
pub use message::{Ack, Expiry, Message, Outcome, ReceivedMessage};
pub use options::{DeviceOptions, ServiceOptions, ServiceTransport, Transport, X509Identity};
pub use registry::{
    Authentication, AuthenticationType, C2dLimits, Device, DeviceStatus, RegistryManager,
    SymmetricKey, X509Thumbprint,
};
pub use retry::RetryPolicy;
pub use service::{FeedbackReceiver, PurgeResult, SendReceipt, ServiceClient};
pub use status::{ConnectionStatus, StatusChange, StatusReason};
/// Cancels a pending `receive_with_cancel` (re-exported from tokio-util).
pub use tokio_util::sync::CancellationToken;
