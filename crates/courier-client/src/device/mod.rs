//! [`DeviceClient`]: one device's connection to the hub, kept up by a
//! supervisor task that reconnects by the retry policy and renews tokens;
//! messages are taken with `receive` or given to a handler, and settled
//! with `complete`, `reject` or `abandon`.

mod amqp;
mod http;
mod mqtt;
mod session;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier_auth::ConnectionString;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::credentials::Credentials;
use crate::net::Endpoint;
use crate::status::{ConnectionStatus, StatusChange, StatusReason};
use crate::{ClientError, DeviceOptions, Outcome, ReceivedMessage, Transport};
use session::{Demand, DeviceConfig, Session, SessionEnd, Settle};

/// Settlement requests queued before callers wait.
const SETTLE_QUEUE: usize = 64;

type StatusHandler = Arc<dyn Fn(StatusChange) + Send + Sync>;

/// A device's client: connection, reconnection, receive and settle.
///
/// Cheap to clone; clones share one connection. The connection closes with
/// [`close`](Self::close) or when the last clone is dropped.
///
/// ```no_run
/// use courier_client::{DeviceClient, Transport};
/// use std::time::Duration;
///
/// # async fn run() -> Result<(), courier_client::ClientError> {
/// let client = DeviceClient::from_connection_string(
///     "HostName=localhost;DeviceId=dev1;SharedAccessKey=…",
///     Transport::Mqtt,
/// )?;
/// client.connect().await?;
/// while let Some(message) = client.receive(Duration::from_secs(30)).await? {
///     println!("{:?}", message.body_str());
///     client.complete(&message).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DeviceClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DeviceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceClient")
            .field("device_id", &self.inner.config.device_id)
            .field("transport", &self.inner.transport)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: Arc<DeviceConfig>,
    transport: Transport,
    demand: Arc<Demand>,
    closing: CancellationToken,
    settle_tx: mpsc::Sender<Settle>,
    inbox_rx: tokio::sync::Mutex<mpsc::Receiver<ReceivedMessage>>,
    status: watch::Sender<StatusChange>,
    status_handler: Arc<Mutex<Option<StatusHandler>>>,
    /// Parts the supervisor takes when it starts.
    start: Mutex<Option<(mpsc::Sender<ReceivedMessage>, mpsc::Receiver<Settle>)>>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    handler: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closing.cancel();
        if let Ok(mut handler) = self.handler.lock() {
            if let Some(task) = handler.take() {
                task.abort();
            }
        }
    }
}

impl DeviceClient {
    /// A client for the device in `connection_string`, with default options.
    /// Nothing connects until [`connect`](Self::connect) or the first receive.
    pub fn from_connection_string(
        connection_string: &str,
        transport: Transport,
    ) -> Result<Self, ClientError> {
        Self::with_options(connection_string, transport, DeviceOptions::default())
    }

    /// A client for the device in `connection_string` with these options.
    ///
    /// ```
    /// use courier_client::{DeviceClient, DeviceOptions, Transport};
    ///
    /// let options = DeviceOptions::new().mqtt_port(18883);
    /// let client = DeviceClient::with_options(
    ///     "HostName=localhost;DeviceId=dev1;SharedAccessKey=AAAA",
    ///     Transport::Mqtt,
    ///     options,
    /// )?;
    /// assert_eq!(client.device_id(), "dev1");
    /// # Ok::<(), courier_client::ClientError>(())
    /// ```
    pub fn with_options(
        connection_string: &str,
        transport: Transport,
        options: DeviceOptions,
    ) -> Result<Self, ClientError> {
        let cs = ConnectionString::parse(connection_string)
            .map_err(|e| ClientError::ConnectionString(e.to_string()))?;
        let credentials = Credentials::device(&cs, options.token_lifetime)?;
        if credentials.is_x509() && options.identity.is_none() {
            return Err(ClientError::InvalidArgument(
                "the connection string says x509=true: give the certificate with DeviceOptions::x509_identity".into(),
            ));
        }
        let host = cs.gateway_host_name.as_deref().unwrap_or(&cs.host_name);
        let endpoint = Endpoint::new(host, &options.connectivity, options.identity.as_ref())?;
        let config = DeviceConfig {
            device_id: cs.device_id.clone().unwrap_or_default(),
            hub_host: cs.host_name.clone(),
            endpoint,
            credentials,
            options,
        };
        let (inbox_tx, inbox_rx) = mpsc::channel(usize::from(config.options.prefetch));
        let (settle_tx, settle_rx) = mpsc::channel(SETTLE_QUEUE);
        let (status, _) = watch::channel(StatusChange::new(
            ConnectionStatus::Disconnected,
            StatusReason::ConnectionOk,
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                config: Arc::new(config),
                transport,
                demand: Arc::default(),
                closing: CancellationToken::new(),
                settle_tx,
                inbox_rx: tokio::sync::Mutex::new(inbox_rx),
                status,
                status_handler: Arc::default(),
                start: Mutex::new(Some((inbox_tx, settle_rx))),
                supervisor: Mutex::new(None),
                handler: Mutex::new(None),
            }),
        })
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        &self.inner.config.device_id
    }

    /// The transport in use.
    pub fn transport(&self) -> Transport {
        self.inner.transport
    }

    /// The current connection status.
    pub fn status(&self) -> StatusChange {
        self.inner.status.borrow().clone()
    }

    /// A watch on the connection status, for `changed().await` loops.
    pub fn status_watch(&self) -> watch::Receiver<StatusChange> {
        self.inner.status.subscribe()
    }

    /// Calls `handler` on every status change (Connected,
    /// DisconnectedRetrying, Disconnected, with the reason and error).
    ///
    /// ```
    /// # let client = courier_client::DeviceClient::from_connection_string(
    /// #     "HostName=h;DeviceId=d;SharedAccessKey=AAAA", courier_client::Transport::Mqtt).unwrap();
    /// client.set_connection_status_handler(|change| {
    ///     eprintln!("{:?} ({:?})", change.status, change.reason);
    /// });
    /// ```
    pub fn set_connection_status_handler(
        &self,
        handler: impl Fn(StatusChange) + Send + Sync + 'static,
    ) {
        if let Ok(mut slot) = self.inner.status_handler.lock() {
            *slot = Some(Arc::new(handler));
        }
    }

    /// Starts the connection and waits until it is up, or until it fails
    /// for good (bad credentials, or the retry policy gives up). Calling it
    /// again while connected returns at once.
    pub async fn connect(&self) -> Result<(), ClientError> {
        let mut status = self.inner.status.subscribe();
        self.start();
        loop {
            let change = status.borrow_and_update().clone();
            match change.status {
                ConnectionStatus::Connected => return Ok(()),
                ConnectionStatus::Disconnected if change.reason != StatusReason::ConnectionOk => {
                    return Err(change
                        .error
                        .map(|e| (*e).clone())
                        .unwrap_or_else(|| ClientError::Closed(format!("{:?}", change.reason))));
                }
                _ => {}
            }
            if status.changed().await.is_err() {
                return Err(ClientError::Closed("the client was dropped".into()));
            }
        }
    }

    /// Waits up to `timeout` for the next message; `None` when none came.
    /// Starts the connection if needed. Messages stay locked at the hub
    /// until settled.
    pub async fn receive(&self, timeout: Duration) -> Result<Option<ReceivedMessage>, ClientError> {
        let cancel = CancellationToken::new();
        let guard = cancel.clone().drop_guard();
        let result = tokio::select! {
            received = self.receive_with_cancel(&cancel) => received.map(Some),
            () = tokio::time::sleep(timeout) => Ok(None),
        };
        drop(guard);
        result
    }

    /// Waits for the next message until `cancel` is cancelled
    /// (then `ClientError::Cancelled`).
    ///
    /// ```no_run
    /// # async fn run(client: courier_client::DeviceClient) -> Result<(), courier_client::ClientError> {
    /// use courier_client::CancellationToken;
    ///
    /// let cancel = CancellationToken::new();
    /// let stopper = cancel.clone();
    /// tokio::spawn(async move {
    ///     tokio::signal::ctrl_c().await.ok();
    ///     stopper.cancel();
    /// });
    /// let message = client.receive_with_cancel(&cancel).await?;
    /// client.complete(&message).await?;
    /// # Ok(()) }
    /// ```
    pub async fn receive_with_cancel(
        &self,
        cancel: &CancellationToken,
    ) -> Result<ReceivedMessage, ClientError> {
        if self.has_handler() {
            return Err(ClientError::HandlerSet);
        }
        self.start();
        self.next_message(cancel).await
    }

    async fn next_message(
        &self,
        cancel: &CancellationToken,
    ) -> Result<ReceivedMessage, ClientError> {
        let _waiting = self.inner.demand.wait();
        let mut inbox = tokio::select! {
            inbox = self.inner.inbox_rx.lock() => inbox,
            () = cancel.cancelled() => return Err(ClientError::Cancelled),
        };
        tokio::select! {
            message = inbox.recv() => message.ok_or_else(|| self.closed_error()),
            () = cancel.cancelled() => Err(ClientError::Cancelled),
        }
    }

    fn closed_error(&self) -> ClientError {
        let last = self.status();
        match last.error {
            Some(e) if last.reason != StatusReason::ClientClose => (*e).clone(),
            _ => ClientError::Closed(format!("{:?}", last.reason)),
        }
    }

    /// Completes the message: the hub removes it and sends positive feedback
    /// if asked.
    pub async fn complete(&self, message: &ReceivedMessage) -> Result<(), ClientError> {
        self.settle(message, Outcome::Complete).await
    }

    /// Rejects the message: the hub dead-letters it and sends negative
    /// feedback if asked. Over MQTT this is `ClientError::NotSupported`.
    pub async fn reject(&self, message: &ReceivedMessage) -> Result<(), ClientError> {
        self.settle(message, Outcome::Reject).await
    }

    /// Abandons the message: the hub delivers it again. Over MQTT this is
    /// `ClientError::NotSupported`.
    pub async fn abandon(&self, message: &ReceivedMessage) -> Result<(), ClientError> {
        self.settle(message, Outcome::Abandon).await
    }

    /// Settles the message with `outcome`.
    pub async fn settle(
        &self,
        message: &ReceivedMessage,
        outcome: Outcome,
    ) -> Result<(), ClientError> {
        settle(
            &self.inner.settle_tx,
            self.inner.transport,
            &self.inner.config,
            message,
            outcome,
        )
        .await
    }

    /// Gives every message to `handler` and settles it with the outcome the
    /// handler returns; `receive` then answers `ClientError::HandlerSet`.
    /// Setting a new handler replaces the old one.
    ///
    /// ```no_run
    /// # async fn run(client: courier_client::DeviceClient) -> Result<(), courier_client::ClientError> {
    /// use courier_client::Outcome;
    ///
    /// client.set_message_handler(|message| async move {
    ///     println!("received {:?}", message.body_str());
    ///     Outcome::Complete
    /// });
    /// client.connect().await?;
    /// # Ok(()) }
    /// ```
    pub fn set_message_handler<F, Fut>(&self, handler: F)
    where
        F: Fn(ReceivedMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        self.start();
        // The task holds a weak reference so that dropping the last client
        // still closes the connection.
        let weak = Arc::downgrade(&self.inner);
        let closing = self.inner.closing.clone();
        let task = tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let client = DeviceClient { inner };
                let message = match client.next_message(&closing).await {
                    Ok(message) => message,
                    Err(_) => return,
                };
                let (settle_tx, transport, config) = (
                    client.inner.settle_tx.clone(),
                    client.inner.transport,
                    client.inner.config.clone(),
                );
                drop(client);
                let outcome = handler(message.clone()).await;
                if let Err(e) = settle(&settle_tx, transport, &config, &message, outcome).await {
                    tracing::warn!(device = %config.device_id, outcome = outcome.as_str(), error = %e, "cannot settle a message the handler returned");
                }
            }
        });
        if let Ok(mut slot) = self.inner.handler.lock() {
            if let Some(old) = slot.replace(task) {
                old.abort();
            }
        }
    }

    fn has_handler(&self) -> bool {
        self.inner
            .handler
            .lock()
            .map(|slot| slot.as_ref().is_some_and(|task| !task.is_finished()))
            .unwrap_or(false)
    }

    /// Closes the connection cleanly and waits for it to end. Receives then
    /// return `ClientError::Closed`.
    pub async fn close(&self) {
        self.inner.closing.cancel();
        let supervisor = self.inner.supervisor.lock().ok().and_then(|mut s| s.take());
        if let Some(task) = supervisor {
            let _ = task.await;
        }
        if let Ok(mut handler) = self.inner.handler.lock() {
            if let Some(task) = handler.take() {
                task.abort();
            }
        }
    }

    /// Starts the supervisor if it is not running yet.
    fn start(&self) {
        let Some((inbox_tx, settle_rx)) = self.inner.start.lock().ok().and_then(|mut s| s.take())
        else {
            return;
        };
        let supervisor = Supervisor {
            config: self.inner.config.clone(),
            transport: self.inner.transport,
            inbox: inbox_tx,
            settlements: settle_rx,
            demand: self.inner.demand.clone(),
            closing: self.inner.closing.clone(),
            status: self.inner.status.clone(),
            status_handler: self.inner.status_handler.clone(),
        };
        let task = tokio::spawn(supervisor.run());
        if let Ok(mut slot) = self.inner.supervisor.lock() {
            *slot = Some(task);
        }
    }
}

async fn settle(
    settle_tx: &mpsc::Sender<Settle>,
    transport: Transport,
    config: &DeviceConfig,
    message: &ReceivedMessage,
    outcome: Outcome,
) -> Result<(), ClientError> {
    if matches!(transport, Transport::Mqtt | Transport::MqttWs) && outcome != Outcome::Complete {
        return Err(ClientError::NotSupported {
            operation: outcome.as_str(),
            transport: transport.as_str(),
            why: "MQTT can only acknowledge (complete) a message; use AMQP or HTTPS to reject or abandon",
        });
    }
    let (reply, answer) = oneshot::channel();
    let request = Settle {
        message: message.clone(),
        outcome,
        reply,
    };
    let timeout = config.options.operation_timeout;
    crate::net::within(timeout, "settle", async {
        settle_tx
            .send(request)
            .await
            .map_err(|_| ClientError::Closed("the client is closed".into()))?;
        answer.await.map_err(|_| {
            ClientError::lock_lost_locally("the connection closed before the settlement was sent")
        })?
    })
    .await
}

/// The task that keeps one device connected.
struct Supervisor {
    config: Arc<DeviceConfig>,
    transport: Transport,
    inbox: mpsc::Sender<ReceivedMessage>,
    settlements: mpsc::Receiver<Settle>,
    demand: Arc<Demand>,
    closing: CancellationToken,
    status: watch::Sender<StatusChange>,
    status_handler: Arc<Mutex<Option<StatusHandler>>>,
}

impl Supervisor {
    fn publish(&self, change: StatusChange) {
        tracing::debug!(device = %self.config.device_id, status = ?change.status, reason = ?change.reason, "connection status");
        self.status.send_replace(change.clone());
        let handler = self.status_handler.lock().ok().and_then(|h| h.clone());
        if let Some(handler) = handler {
            handler(change);
        }
    }

    async fn run(mut self) {
        let mut connection = 0u64;
        let mut attempt = 0u32;
        loop {
            connection += 1;
            let (up_tx, mut up_rx) = oneshot::channel();
            let end = {
                let status = self.status.clone();
                let handler = self.status_handler.clone();
                let connected: Box<dyn FnOnce() + Send> = Box::new(move || {
                    let change =
                        StatusChange::new(ConnectionStatus::Connected, StatusReason::ConnectionOk);
                    status.send_replace(change.clone());
                    let handler = handler.lock().ok().and_then(|h| h.clone());
                    if let Some(handler) = handler {
                        handler(change);
                    }
                    let _ = up_tx.send(());
                });
                let session = Session::new(
                    &self.config,
                    connection,
                    &self.inbox,
                    &mut self.settlements,
                    &self.demand,
                    &self.closing,
                    connected,
                );
                match self.transport {
                    Transport::Mqtt | Transport::MqttWs => {
                        mqtt::run(session, self.transport == Transport::MqttWs).await
                    }
                    Transport::Amqp | Transport::AmqpWs => {
                        amqp::run(session, self.transport == Transport::AmqpWs).await
                    }
                    Transport::Http => http::run(session).await,
                }
            };
            if up_rx.try_recv().is_ok() {
                attempt = 0;
            }
            let error = match end {
                SessionEnd::Closed => break,
                SessionEnd::RenewToken => {
                    self.publish(StatusChange::new(
                        ConnectionStatus::DisconnectedRetrying,
                        StatusReason::ExpiredSasToken,
                    ));
                    continue;
                }
                SessionEnd::Failed(error) => error,
            };
            if self.closing.is_cancelled() {
                break;
            }
            let reason = if matches!(error, ClientError::Unauthorized(_))
                && self
                    .config
                    .credentials
                    .token(std::time::SystemTime::now())
                    .is_err()
            {
                StatusReason::ExpiredSasToken
            } else {
                StatusReason::for_error(&error)
            };
            let final_error = matches!(
                error,
                ClientError::Unauthorized(_)
                    | ClientError::NotFound(_)
                    | ClientError::InvalidArgument(_)
                    | ClientError::ConnectionString(_)
            );
            if final_error {
                tracing::warn!(device = %self.config.device_id, error = %error, "connection refused; not retrying");
                self.publish(
                    StatusChange::new(ConnectionStatus::Disconnected, reason).because(error),
                );
                return self.drain().await;
            }
            let Some(delay) = self.config.options.retry_policy.delay(attempt) else {
                self.publish(
                    StatusChange::new(ConnectionStatus::Disconnected, StatusReason::RetryExpired)
                        .because(error),
                );
                return self.drain().await;
            };
            attempt = attempt.saturating_add(1);
            tracing::info!(device = %self.config.device_id, error = %error, ?delay, attempt, "connection lost; retrying");
            self.publish(
                StatusChange::new(ConnectionStatus::DisconnectedRetrying, reason).because(error),
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.closing.cancelled() => break,
            }
        }
        self.publish(StatusChange::new(
            ConnectionStatus::Disconnected,
            StatusReason::ClientClose,
        ));
        self.drain().await;
    }

    /// After the last connection: refuse waiting settlements and end the
    /// inbox, so that callers see the client closed.
    async fn drain(mut self) {
        self.settlements.close();
        while let Some(request) = self.settlements.recv().await {
            let _ = request
                .reply
                .send(Err(ClientError::lock_lost_locally("the client is closed")));
        }
    }
}
