//! The bench devices: registered, connected and removed in bulk, with a
//! bounded number of operations in flight so setup never floods the hub.

use std::net::IpAddr;

use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use crate::http::Service;
use crate::mqtt::{Counters, DeviceLogin, DeviceOutcome, MqttDevice};
use crate::options::Transport;
use crate::sdk_device::SdkDevice;
use crate::socket::Endpoint;
use crate::target::BenchTarget;
use crate::BenchError;

/// Registry calls in flight at once.
const REGISTRY_CONCURRENCY: usize = 64;
/// TLS handshakes + CONNECTs in flight at once.
const CONNECT_CONCURRENCY: usize = 64;

/// Ids `bench-0` … `bench-{n-1}`.
pub(crate) fn device_ids(n: u32) -> Vec<String> {
    (0..n).map(|i| format!("{PREFIX}{i}")).collect()
}

/// The prefix of every bench device id.
pub(crate) const PREFIX: &str = "bench-";

/// Creates every device with `key` and `max_queue_depth`.
pub(crate) async fn create(
    service: &Service,
    ids: &[String],
    key: &str,
    max_queue_depth: u32,
) -> Result<(), BenchError> {
    stream::iter(ids)
        .map(|id| async move {
            service
                .create_device(id, key, max_queue_depth)
                .await
                .map_err(|e| BenchError::CreateDevice {
                    device: id.clone(),
                    reason: format!("{} {}", e.kind, e.detail),
                })
        })
        .buffer_unordered(REGISTRY_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
}

/// Deletes every device; returns how many deletions failed.
pub(crate) async fn delete(service: &Service, ids: &[String]) -> u64 {
    stream::iter(ids)
        .map(|id| async move { service.delete_device(id).await.is_err() })
        .buffer_unordered(REGISTRY_CONCURRENCY)
        .fold(
            0_u64,
            |failed, error| async move { failed + u64::from(error) },
        )
        .await
}

/// Connects and subscribes every device to the hub with its SAS token, in
/// `ids` order, from the given loopback source addresses (round robin).
pub(crate) async fn connect(
    endpoint: &Endpoint,
    sources: &[IpAddr],
    target: &BenchTarget,
    ids: &[String],
    key: &str,
) -> Result<Vec<MqttDevice>, BenchError> {
    let tokens = ids
        .iter()
        .map(|id| target.device_token(id, key))
        .collect::<Result<Vec<_>, _>>()?;
    let logins = ids.iter().zip(&tokens).enumerate().map(|(i, (id, token))| {
        let user_name = format!("{}/{id}/?api-version=2021-04-12", target.host_name);
        DeviceLogin {
            endpoint,
            source: source(sources, i),
            device_id: id,
            credentials: Some((user_name, token.as_str())),
            clear_old_session: false,
        }
    });
    connect_all(logins).await
}

/// A connected bench device on any transport.
pub(crate) enum BenchDevice {
    /// The bench's own lean MQTT device.
    Mqtt(MqttDevice),
    /// A Rust SDK device (AMQP or HTTPS).
    Sdk(SdkDevice),
}

impl BenchDevice {
    /// Receives and settles messages until `stop` changes; see each device type.
    pub(crate) async fn receive(
        self,
        epoch: Instant,
        expected: usize,
        counters: Arc<Counters>,
        stop: watch::Receiver<bool>,
    ) -> DeviceOutcome {
        match self {
            Self::Mqtt(device) => device.receive(epoch, expected, counters, stop).await,
            Self::Sdk(device) => device.receive(epoch, expected, counters, stop).await,
        }
    }
}

/// Connects every device through the Rust SDK over `transport` (AMQP or HTTPS).
pub(crate) async fn connect_sdk(
    target: &BenchTarget,
    transport: Transport,
    ids: &[String],
    key: &str,
) -> Result<Vec<BenchDevice>, BenchError> {
    stream::iter(ids)
        .map(|id| async move {
            SdkDevice::connect(target, transport, id, key)
                .await
                .map(BenchDevice::Sdk)
        })
        .buffered(CONNECT_CONCURRENCY)
        .try_collect()
        .await
}

/// Connects and subscribes every device to a plain broker, anonymously,
/// clearing any session an earlier run left under the same client id.
pub(crate) async fn connect_to_broker(
    endpoint: &Endpoint,
    sources: &[IpAddr],
    ids: &[String],
) -> Result<Vec<MqttDevice>, BenchError> {
    let logins = ids.iter().enumerate().map(|(i, id)| DeviceLogin {
        endpoint,
        source: source(sources, i),
        device_id: id,
        credentials: None,
        clear_old_session: true,
    });
    connect_all(logins).await
}

/// The source address of connection `i`: round robin, none when empty.
pub(crate) fn source(sources: &[IpAddr], i: usize) -> Option<IpAddr> {
    (!sources.is_empty()).then(|| sources[i % sources.len()])
}

async fn connect_all<'a>(
    logins: impl Iterator<Item = DeviceLogin<'a>>,
) -> Result<Vec<MqttDevice>, BenchError> {
    stream::iter(logins)
        .map(|login| async move {
            let device = login.device_id.to_owned();
            MqttDevice::connect(login)
                .await
                .map_err(|reason| BenchError::Connect { device, reason })
        })
        .buffered(CONNECT_CONCURRENCY)
        .try_collect()
        .await
}
