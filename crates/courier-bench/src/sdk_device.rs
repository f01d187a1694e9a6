//! One bench device over AMQP or HTTPS, through the Rust SDK's `DeviceClient`
//! (as the CLI connects): it receives each message and completes it, one at
//! a time, until told to stop.
//!
//! Heavier per device than the MQTT bench device, which speaks its protocol
//! itself, but the same client code a Courier user runs; each device holds
//! its own connection (AMQP) or its own long poll (HTTPS, Courier's `wait`
//! extension) as the official SDKs do.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_client::{ClientError, DeviceClient, DeviceOptions, Transport as ClientTransport};
use tokio::sync::watch;

use crate::mqtt::{latency_micros, Counters, DeviceOutcome};
use crate::options::Transport;
use crate::target::BenchTarget;
use crate::BenchError;

/// How long connecting one device may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// One receive call's wait; a run ends by `stop`, not by this.
const RECEIVE_WAIT: Duration = Duration::from_secs(3600);
/// How long the HTTPS client waits between two polls that found nothing; the
/// hub holds each of them open up to this long, so a message that arrives
/// meanwhile is answered at once.
const HTTP_POLL_INTERVAL: Duration = Duration::from_secs(20);

/// A connected device on AMQP or HTTPS.
pub(crate) struct SdkDevice {
    client: DeviceClient,
    transport: Transport,
}

impl SdkDevice {
    /// Connects device `device_id` (key `key`) over `transport`.
    pub(crate) async fn connect(
        target: &BenchTarget,
        transport: Transport,
        device_id: &str,
        key: &str,
    ) -> Result<Self, BenchError> {
        let failed = |reason: String| BenchError::Connect {
            device: device_id.to_owned(),
            reason,
        };
        let client_transport = match transport {
            Transport::Amqp => ClientTransport::Amqp,
            Transport::Https => ClientTransport::Http,
            Transport::Mqtt => return Err(failed("MQTT devices are not SDK devices".into())),
        };
        let mut options = DeviceOptions::new()
            .ca_certificate_pem(target.ca_pem.clone())
            .http_poll_interval(HTTP_POLL_INTERVAL)
            .https_port(target.https_endpoint.port().unwrap_or(443));
        if let Some(port) = target.amqp_port {
            options = options.amqp_port(port);
        }
        let connection_string = target.device_connection_string(device_id, key);
        let client = DeviceClient::with_options(&connection_string, client_transport, options)
            .map_err(|e| failed(e.to_string()))?;
        tokio::time::timeout(CONNECT_TIMEOUT, client.connect())
            .await
            .map_err(|_| failed(format!("not connected within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| failed(e.to_string()))?;
        Ok(Self { client, transport })
    }

    /// Receives and completes messages until `stop` changes, then closes.
    ///
    /// Latency is measured as on MQTT: from the send time at the start of the
    /// body to the moment the message is received.
    pub(crate) async fn receive(
        self,
        epoch: Instant,
        expected: usize,
        counters: Arc<Counters>,
        mut stop: watch::Receiver<bool>,
    ) -> DeviceOutcome {
        let mut outcome = DeviceOutcome::expecting(expected);
        let (receive_failed, complete_failed) = match self.transport {
            Transport::Https => ("https: receive failed", "https: complete failed"),
            _ => ("amqp: receive failed", "amqp: complete failed"),
        };
        loop {
            let received = tokio::select! {
                biased;
                _ = stop.changed() => break,
                received = self.client.receive(RECEIVE_WAIT) => received,
            };
            let message = match received {
                Ok(Some(message)) => message,
                Ok(None) => continue,
                Err(ClientError::Closed(_)) if *stop.borrow() => break,
                Err(_) => {
                    outcome.error = Some(receive_failed);
                    break;
                }
            };
            let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let redelivered = message.delivery_count.is_some_and(|count| count > 0);
            if self.client.complete(&message).await.is_err() {
                outcome.error = Some(complete_failed);
                break;
            }
            outcome.last_ack = Some(Instant::now());
            if redelivered {
                outcome.redelivered += 1;
            } else {
                outcome.latencies.push(latency_micros(&message.body, now));
                outcome.delivered += 1;
                counters.delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.client.close().await;
        outcome
    }
}
