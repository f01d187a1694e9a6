//! One service sender, over AMQP or HTTPS: the hub's side of `bench c2d`
//! and `bench fill`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use courier_client::{Ack, ClientError, Message, ServiceClient};

use crate::http::{CallError, Service};
use crate::mqtt::{stamped_body, Counters};
use crate::options::AckMode;
use crate::stats::ErrorCounts;

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
/// when a rate is set, and sends it to device `number % devices`.
pub(crate) struct Sender {
    pub(crate) via: SendVia,
    pub(crate) ids: Arc<[String]>,
    pub(crate) next: Arc<AtomicU64>,
    pub(crate) total: u64,
    pub(crate) rate: Option<f64>,
    pub(crate) start: Instant,
    pub(crate) epoch: Instant,
    pub(crate) body_bytes: usize,
    pub(crate) ack: AckMode,
    pub(crate) counters: Arc<Counters>,
    pub(crate) errors: Arc<ErrorCounts>,
}

impl Sender {
    /// Sends until every message is taken; returns when its last success was answered.
    pub(crate) async fn run(self) -> Option<Instant> {
        let mut last_ok = None;
        let devices = self.ids.len() as u64;
        loop {
            let number = self.next.fetch_add(1, Ordering::Relaxed);
            if number >= self.total {
                return last_ok;
            }
            if let Some(rate) = self.rate {
                let due = self.start + Duration::from_secs_f64(number as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let Some(device) = usize::try_from(number % devices)
                .ok()
                .and_then(|i| self.ids.get(i))
            else {
                return last_ok;
            };
            let stamp = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let body = Bytes::from(stamped_body(self.body_bytes, stamp));
            match self.via.send(device, body, self.ack).await {
                Ok(()) => {
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    last_ok = Some(Instant::now());
                }
                Err(e) => self.errors.add(e.kind, 1),
            }
        }
    }
}
