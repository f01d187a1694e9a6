//! One service sender, over AMQP or HTTPS: the hub's side of `bench c2d`
//! and `bench fill`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use courier_client::{Ack, ClientError, Message, ServiceClient};

use crate::http::{CallError, Service};
use crate::job::SendJob;
use crate::mqtt::stamped_body;
use crate::options::AckMode;

/// How long one AMQP send may take, retries included.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// What one sender sends through.
#[derive(Clone)]
pub(crate) enum SendVia {
    /// One HTTPS request per message.
    Https(Service),
    /// A transfer on a sender link the client may share with other senders.
    Amqp(ServiceClient),
}

impl SendVia {
    async fn send(&self, device: &str, body: Bytes, ack: AckMode) -> Result<(), CallError> {
        match self {
            Self::Https(service) => service.send(device, body, ack).await,
            Self::Amqp(client) => {
                let ack = match ack {
                    AckMode::None => Ack::None,
                    AckMode::Full => Ack::Full,
                };
                let message = Message::new(body).ack(ack);
                client
                    .send(device, &message, SEND_TIMEOUT)
                    .await
                    .map(drop)
                    .map_err(|e| CallError {
                        kind: format!("send: AMQP {}", error_kind(&e)),
                        detail: e.to_string(),
                    })
            }
        }
    }
}

/// The label an AMQP send failure is counted under.
fn error_kind(error: &ClientError) -> String {
    if let Some(hub) = error.hub_error() {
        return format!("{} {}", hub.code, hub.name);
    }
    match error {
        ClientError::Network(_) => "network".into(),
        ClientError::Tls(_) => "TLS".into(),
        ClientError::Timeout { .. } => "timeout".into(),
        ClientError::Closed(_) => "closed".into(),
        ClientError::Protocol(_) => "protocol".into(),
        _ => "other".into(),
    }
}

/// One service sender: takes the next message number, waits for its slot
/// when a rate is set, and sends it to its device.
pub(crate) struct Sender {
    pub(crate) via: SendVia,
    pub(crate) ack: AckMode,
    pub(crate) job: SendJob,
}

impl Sender {
    /// Sends until every message is taken; returns when its last success was answered.
    pub(crate) async fn run(self) -> Option<Instant> {
        let job = &self.job;
        let mut last_ok = None;
        while let Some(number) = job.take() {
            if let Some(due) = job.due(number) {
                tokio::time::sleep_until(due.into()).await;
            }
            let Some(device) = job.device(number) else {
                break;
            };
            let body = Bytes::from(stamped_body(job.body_bytes, job.stamp()));
            match self.via.send(device, body, self.ack).await {
                Ok(()) => {
                    job.counters.sent.fetch_add(1, Ordering::Relaxed);
                    last_ok = Some(Instant::now());
                }
                Err(e) => job.errors.add(e.kind, 1),
            }
        }
        last_ok
    }
}
