//! The bench devices: registered, connected and removed in bulk, with a
//! bounded number of operations in flight so setup never floods the hub.

use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use tokio_rustls::rustls::pki_types::ServerName;

use crate::http::Service;
use crate::mqtt::{DeviceLogin, MqttDevice};
use crate::target::BenchTarget;
use crate::BenchError;

/// Registry calls in flight at once.
const REGISTRY_CONCURRENCY: usize = 32;
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

/// Connects and subscribes every device, in `ids` order.
pub(crate) async fn connect(
    target: &BenchTarget,
    port: u16,
    ids: &[String],
    key: &str,
) -> Result<Vec<MqttDevice>, BenchError> {
    let tls = target.mqtt_tls()?;
    let server_name = ServerName::try_from(target.server_name())
        .map_err(|e| BenchError::Ca(format!("server name: {e}")))?;
    let host = target.connect_host();
    let tokens = ids
        .iter()
        .map(|id| target.device_token(id, key))
        .collect::<Result<Vec<_>, _>>()?;
    stream::iter(ids.iter().zip(&tokens))
        .map(|(id, token)| {
            let login = DeviceLogin {
                tls: tls.clone(),
                host: &host,
                port,
                server_name: server_name.clone(),
                hub_host_name: &target.host_name,
                device_id: id,
                token,
            };
            async move {
                MqttDevice::connect(login)
                    .await
                    .map_err(|reason| BenchError::Connect {
                        device: id.clone(),
                        reason,
                    })
            }
        })
        .buffered(CONNECT_CONCURRENCY)
        .try_collect()
        .await
}
