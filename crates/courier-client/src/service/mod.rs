//! [`ServiceClient`]: a back end's client: send a message to one device,
//! read delivery feedback, purge a queue; transient failures are retried by
//! the retry policy.

mod amqp;
mod http;

use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_auth::ConnectionString;
use serde::{Deserialize, Serialize};

use crate::credentials::Credentials;
use crate::net::Endpoint;
use crate::{
    Ack, ClientError, FeedbackBatch, Message, Outcome, RegistryManager, RetryPolicy,
    ServiceOptions, ServiceTransport,
};

/// Everything about one service identity that does not change.
#[derive(Debug)]
pub(crate) struct ServiceConfig {
    /// The hub's host name (`HostName`): token audience.
    pub(crate) hub_host: String,
    /// Where to connect and with what TLS settings.
    pub(crate) endpoint: Endpoint,
    /// The policy's credentials.
    pub(crate) credentials: Credentials,
    /// The caller's options.
    pub(crate) options: ServiceOptions,
}

impl ServiceConfig {
    /// The configuration for a service connection string.
    pub(crate) fn new(
        connection_string: &str,
        options: ServiceOptions,
    ) -> Result<Self, ClientError> {
        let cs = ConnectionString::parse(connection_string)
            .map_err(|e| ClientError::ConnectionString(e.to_string()))?;
        let credentials = Credentials::service(&cs, options.token_lifetime)?;
        let host = cs.gateway_host_name.as_deref().unwrap_or(&cs.host_name);
        let endpoint = Endpoint::new(host, &options.connectivity, None)?;
        Ok(Self {
            hub_host: cs.host_name.clone(),
            endpoint,
            credentials,
            options,
        })
    }
}

pub(crate) use self::http::HttpService;

/// What the hub answered to a send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SendReceipt {
    /// The device.
    pub device_id: String,
    /// The message id, if it has one.
    pub message_id: Option<String>,
    /// Position in the device's queue (HTTPS only: AMQP does not report it).
    pub sequence_number: Option<u64>,
    /// When the hub queued it, RFC 3339 (HTTPS only).
    pub enqueued_time_utc: Option<String>,
    /// When it expires, RFC 3339 (HTTPS only).
    pub expiry_time_utc: Option<String>,
}

/// What a purge removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct PurgeResult {
    /// How many queued messages were removed.
    pub total_messages_purged: u64,
    /// The device.
    pub device_id: String,
}

/// A back end's client for one hub.
///
/// Cheap to clone; clones share connections.
///
/// ```no_run
/// use courier_client::{Ack, Message, ServiceClient};
/// use std::time::Duration;
///
/// # async fn run() -> Result<(), courier_client::ClientError> {
/// let service = ServiceClient::from_connection_string(
///     "HostName=localhost;SharedAccessKeyName=service;SharedAccessKey=…",
/// )?;
/// let message = Message::new("reboot").message_id("m-1").ack(Ack::Full);
/// service.send("dev1", &message, Duration::from_secs(30)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServiceClient {
    inner: Arc<ServiceInner>,
}

struct ServiceInner {
    config: Arc<ServiceConfig>,
    http: Arc<HttpService>,
    amqp: Option<amqp::AmqpService>,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("hub", &self.inner.config.hub_host)
            .field("transport", &self.inner.config.options.transport)
            .finish_non_exhaustive()
    }
}

impl ServiceClient {
    /// A client for the policy in `connection_string`, over AMQP with
    /// default options. Nothing connects until the first operation.
    pub fn from_connection_string(connection_string: &str) -> Result<Self, ClientError> {
        Self::with_options(connection_string, ServiceOptions::default())
    }

    /// A client for the policy in `connection_string` with these options.
    ///
    /// ```
    /// use courier_client::{ServiceClient, ServiceOptions, ServiceTransport};
    ///
    /// let service = ServiceClient::with_options(
    ///     "HostName=localhost;SharedAccessKeyName=service;SharedAccessKey=AAAA",
    ///     ServiceOptions::new().transport(ServiceTransport::Http).https_port(8443),
    /// )?;
    /// # let _ = service;
    /// # Ok::<(), courier_client::ClientError>(())
    /// ```
    pub fn with_options(
        connection_string: &str,
        options: ServiceOptions,
    ) -> Result<Self, ClientError> {
        let config = Arc::new(ServiceConfig::new(connection_string, options)?);
        let http = Arc::new(HttpService::new(config.clone())?);
        let amqp = match config.options.transport {
            ServiceTransport::Amqp => Some(amqp::AmqpService::new(config.clone(), false)),
            ServiceTransport::AmqpWs => Some(amqp::AmqpService::new(config.clone(), true)),
            ServiceTransport::Http => None,
        };
        Ok(Self {
            inner: Arc::new(ServiceInner { config, http, amqp }),
        })
    }

    /// Sends `message` to `device_id`'s queue, retrying transient failures
    /// by the retry policy until `timeout` has passed. Returns once the hub
    /// has durably queued it. A message that asks for feedback but has no
    /// message id is given a random one (feedback names messages by id); the
    /// receipt says which.
    pub async fn send(
        &self,
        device_id: &str,
        message: &Message,
        timeout: Duration,
    ) -> Result<SendReceipt, ClientError> {
        if device_id.is_empty() {
            return Err(ClientError::InvalidArgument(
                "the device id is empty".into(),
            ));
        }
        let with_id;
        let message = if message.ack != Ack::None && message.message_id.is_none() {
            with_id = message.clone().message_id(uuid::Uuid::new_v4().to_string());
            &with_id
        } else {
            message
        };
        let policy = &self.inner.config.options.retry_policy;
        with_retry(policy, timeout, "send", || async {
            match &self.inner.amqp {
                Some(amqp) => amqp.send(device_id, message).await,
                None => self.inner.http.send(device_id, message).await,
            }
        })
        .await
    }

    /// Opens a receiver of delivery feedback batches.
    pub async fn feedback_receiver(&self) -> Result<FeedbackReceiver, ClientError> {
        let inner = match &self.inner.amqp {
            Some(amqp) => FeedbackInner::Amqp(amqp.feedback().await?),
            None => FeedbackInner::Http(self.inner.http.clone()),
        };
        Ok(FeedbackReceiver { inner })
    }

    /// Removes every message queued for `device_id` (purged messages get
    /// `Purged` feedback when they asked for negative feedback).
    pub async fn purge(&self, device_id: &str) -> Result<PurgeResult, ClientError> {
        let policy = &self.inner.config.options.retry_policy;
        let timeout = self.inner.config.options.operation_timeout;
        with_retry(policy, timeout, "purge", || {
            self.inner.http.purge(device_id)
        })
        .await
    }

    /// A registry manager with the same connection string and options.
    pub fn registry(&self) -> RegistryManager {
        RegistryManager::from_http(self.inner.http.clone())
    }

    /// Closes connections cleanly.
    pub async fn close(&self) {
        if let Some(amqp) = &self.inner.amqp {
            amqp.close().await;
        }
    }
}

/// Runs `operation` until it succeeds, fails for good, the policy gives
/// up, or `timeout` has passed.
pub(crate) async fn with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    timeout: Duration,
    what: &'static str,
    mut operation: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = Instant::now() + timeout;
    let mut attempt = 0;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let error = match tokio::time::timeout(remaining, operation()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) if error.is_transient() => error,
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(ClientError::Timeout {
                    operation: what,
                    after: timeout,
                })
            }
        };
        let hinted = match &error {
            ClientError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        };
        let Some(delay) = policy
            .delay(attempt)
            .map(|d| hinted.map_or(d, |h| h.max(d)))
        else {
            return Err(error);
        };
        if Instant::now() + delay >= deadline {
            return Err(error);
        }
        tracing::debug!(operation = what, error = %error, ?delay, attempt, "transient failure; retrying");
        attempt += 1;
        tokio::time::sleep(delay).await;
    }
}

/// Receives delivery feedback batches; complete or abandon each.
///
/// ```no_run
/// # async fn run(service: courier_client::ServiceClient) -> Result<(), courier_client::ClientError> {
/// use std::time::Duration;
///
/// let mut feedback = service.feedback_receiver().await?;
/// while let Some(batch) = feedback.receive(Duration::from_secs(60)).await? {
///     for record in &batch.records {
///         println!("{} {}", record.original_message_id, record.status_code.as_str());
///     }
///     feedback.complete(&batch).await?;
/// }
/// # Ok(()) }
/// ```
pub struct FeedbackReceiver {
    inner: FeedbackInner,
}

enum FeedbackInner {
    Amqp(amqp::AmqpFeedback),
    Http(Arc<HttpService>),
}

impl std::fmt::Debug for FeedbackReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedbackReceiver").finish_non_exhaustive()
    }
}

impl FeedbackReceiver {
    /// Waits up to `timeout` for the next batch; `None` when none came.
    pub async fn receive(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<FeedbackBatch>, ClientError> {
        match &mut self.inner {
            FeedbackInner::Amqp(amqp) => amqp.receive(timeout).await,
            FeedbackInner::Http(http) => http.receive_feedback(timeout).await,
        }
    }

    /// Completes the batch: its records are not delivered again.
    pub async fn complete(&mut self, batch: &FeedbackBatch) -> Result<(), ClientError> {
        self.settle(batch, Outcome::Complete).await
    }

    /// Abandons the batch: it is delivered again.
    pub async fn abandon(&mut self, batch: &FeedbackBatch) -> Result<(), ClientError> {
        self.settle(batch, Outcome::Abandon).await
    }

    async fn settle(&mut self, batch: &FeedbackBatch, outcome: Outcome) -> Result<(), ClientError> {
        match &mut self.inner {
            FeedbackInner::Amqp(amqp) => amqp.settle(batch, outcome).await,
            FeedbackInner::Http(http) => http.settle_feedback(batch, outcome).await,
        }
    }

    /// Closes the receiver's link.
    pub async fn close(self) {
        if let FeedbackInner::Amqp(amqp) = self.inner {
            amqp.close().await;
        }
    }
}
