//! The service's AMQP transport, over TLS (5671) or a WebSocket (443): one
//! connection, opened on first use and again after a failure, with the
//! policy's SAS token on `$cbs` (renewed in place by a driver task), a
//! sender link on `/messages/devicebound` shared by every `send`, and a
//! receiver link on `/messages/serviceBound/feedback` per feedback receiver.
//!
//! Sends from clones take turns on the sender link only while handing over
//! the transfer (bounded by the operation timeout); each then waits for its
//! own disposition. A link or connection failure marks the connection
//! broken, so that the next operation opens a new one; the caller's retry
//! policy retries the failed send (network faults and timeouts are
//! transient).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::{CreditMode, RecvError, SendError};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{self, AmqpError, ReceiverSettleMode};
use fe2o3_amqp::types::messaging::{Body, Data, Message as AmqpMessage};
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::{Receiver, Sender};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{SendReceipt, ServiceConfig};
use crate::amqp::{self, Cbs, OpenOptions, Opened};
use crate::feedback::FeedbackDelivery;
use crate::net::within;
use crate::{ClientError, FeedbackBatch, Message, Outcome};

/// The service's C2D send node.
const SEND_NODE: &str = "/messages/devicebound";
/// The feedback queue.
const FEEDBACK_NODE: &str = "/messages/serviceBound/feedback";
/// The connection's idle timeout (fe2o3 announces half of it, and the hub
/// sends empty frames within that), so a dead connection is noticed even
/// when nothing is being sent.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Feedback batches the hub may send ahead of `receive` (it locks one at a
/// time anyway).
const FEEDBACK_CREDIT: u32 = 8;
/// Longest wait for the hub's answers while closing.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// A deadline that never comes, for a disabled branch.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// The service's AMQP connection, opened on first use.
pub(crate) struct AmqpService {
    shared: Arc<Shared>,
}

/// What the service and its feedback receivers share.
struct Shared {
    config: Arc<ServiceConfig>,
    websocket: bool,
    /// The connection in use; replaced when broken.
    current: Mutex<Option<Arc<ServiceConnection>>>,
    /// Numbers connections, so a feedback batch names the one it came on.
    opened: AtomicU64,
}

/// One open connection.
struct ServiceConnection {
    number: u64,
    /// Links are attached on it (feedback receivers attach later).
    session: Mutex<SessionHandle<()>>,
    /// `None` once closed.
    sender: Mutex<Option<Sender>>,
    /// Cancelled when the connection is unusable.
    broken: CancellationToken,
    /// Cancelled to make the driver close the connection.
    stop: CancellationToken,
    driver: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for ServiceConnection {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl AmqpService {
    /// A service connection for `config`; nothing connects yet.
    pub(crate) fn new(config: Arc<ServiceConfig>, websocket: bool) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                websocket,
                current: Mutex::new(None),
                opened: AtomicU64::new(0),
            }),
        }
    }

    /// Sends one message and waits for the hub's disposition: accepted is
    /// the receipt, rejected is the hub's typed refusal (NotFound for an
    /// unknown device, QueueFull, MessageTooLarge, …).
    pub(crate) async fn send(
        &self,
        device_id: &str,
        message: &Message,
    ) -> Result<SendReceipt, ClientError> {
        let timeout = self.shared.config.options.operation_timeout;
        let connection = self.shared.connection().await?;
        let transfer = amqp::outgoing_message(device_id, message, SystemTime::now());
        connection.send(transfer, timeout).await?;
        Ok(SendReceipt {
            device_id: device_id.to_owned(),
            message_id: message.message_id.clone(),
            sequence_number: None,
            enqueued_time_utc: None,
            expiry_time_utc: None,
        })
    }

    /// Opens the feedback receiver link.
    pub(crate) async fn feedback(&self) -> Result<AmqpFeedback, ClientError> {
        let mut feedback = AmqpFeedback {
            shared: self.shared.clone(),
            link: None,
        };
        feedback.link().await?;
        Ok(feedback)
    }

    /// Closes the connection: detaches the sender, closes the CBS links and
    /// the connection, each wait bounded.
    pub(crate) async fn close(&self) {
        let Ok(mut current) = tokio::time::timeout(CLOSE_TIMEOUT, self.shared.current.lock()).await
        else {
            return;
        };
        let Some(connection) = current.take() else {
            return;
        };
        drop(current);
        connection.close().await;
    }
}

impl Shared {
    /// The connection in use, or a new one if there is none or it broke.
    /// Concurrent callers wait for one opening (bounded by its timeout).
    async fn connection(&self) -> Result<Arc<ServiceConnection>, ClientError> {
        let timeout = self.config.options.operation_timeout;
        let mut current = within(timeout, "AMQP connect", async {
            Ok(self.current.lock().await)
        })
        .await?;
        if let Some(connection) = current.as_ref() {
            if !connection.broken.is_cancelled() {
                return Ok(connection.clone());
            }
        }
        if let Some(old) = current.take() {
            old.stop.cancel();
        }
        let number = self.opened.fetch_add(1, Ordering::Relaxed) + 1;
        let connection =
            Arc::new(ServiceConnection::open(&self.config, self.websocket, number).await?);
        *current = Some(connection.clone());
        Ok(connection)
    }
}

impl ServiceConnection {
    /// Connects, puts the policy token and attaches the sender link.
    async fn open(
        config: &Arc<ServiceConfig>,
        websocket: bool,
        number: u64,
    ) -> Result<Self, ClientError> {
        let timeout = config.options.operation_timeout;
        let minted = SystemTime::now();
        let token = config.credentials.token(minted)?.ok_or_else(|| {
            ClientError::InvalidArgument("a service authenticates with a SAS policy key".into())
        })?;
        let container_id = format!("courier-client-service-{}", uuid::Uuid::new_v4().simple());
        let open = OpenOptions {
            endpoint: &config.endpoint,
            websocket,
            hub_host: &config.hub_host,
            container_id: &container_id,
            sasl_anonymous: true,
            idle_timeout: IDLE_TIMEOUT,
            timeout,
        };
        // Boxed: the handshake's state is large, and every caller's task
        // would otherwise carry it.
        within(
            timeout,
            "AMQP connect",
            Box::pin(async {
                let mut opened = amqp::open(&open).await?;
                let mut cbs = Cbs::attach(&mut opened.session, timeout).await?;
                cbs.put_token(config.credentials.resource(), &token.value, timeout)
                    .await?;
                let sender = Box::pin(
                    Sender::builder()
                        .name(amqp::link_name("sender-link"))
                        .target(SEND_NODE)
                        .attach(&mut opened.session),
                )
                .await
                .map_err(amqp::sender_attach_error)?;
                let Opened {
                    connection,
                    session,
                } = opened;
                let broken = CancellationToken::new();
                let stop = CancellationToken::new();
                let driver = Driver {
                    config: config.clone(),
                    connection,
                    cbs,
                    renew_at: amqp::renewal_time(&token, minted),
                    broken: broken.clone(),
                    stop: stop.clone(),
                };
                tracing::debug!(connection = number, "service AMQP connection open");
                Ok(Self {
                    number,
                    session: Mutex::new(session),
                    sender: Mutex::new(Some(sender)),
                    broken,
                    stop,
                    driver: std::sync::Mutex::new(Some(tokio::spawn(driver.run()))),
                })
            }),
        )
        .await
    }

    /// Marks the connection unusable and passes `error` on.
    fn broken_by(&self, error: ClientError) -> ClientError {
        self.broken.cancel();
        error
    }

    /// Hands one transfer to the sender link and waits for its outcome.
    async fn send(
        &self,
        transfer: AmqpMessage<Data>,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let handed = within(timeout, "send", async {
            let mut sender = self.sender.lock().await;
            let Some(sender) = sender.as_mut() else {
                return Err(ClientError::Network(
                    "the AMQP connection is closing".into(),
                ));
            };
            Box::pin(sender.send_batchable(transfer))
                .await
                .map_err(|e| self.send_failure(&e))
        })
        .await;
        let pending = match handed {
            Ok(pending) => pending,
            Err(e @ ClientError::Timeout { .. }) => return Err(self.broken_by(e)),
            Err(e) => return Err(e),
        };
        let outcome = match tokio::time::timeout(timeout, pending).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => return Err(self.send_failure(&e)),
            Err(_) => {
                return Err(self.broken_by(ClientError::Timeout {
                    operation: "send",
                    after: timeout,
                }))
            }
        };
        amqp::outcome_result(outcome)
    }

    /// A failed send: an oversized message leaves the link usable; anything
    /// else is the link's or connection's end.
    fn send_failure(&self, error: &SendError) -> ClientError {
        let typed = amqp::send_error(error);
        match error {
            SendError::MessageSizeExceeded(_) | SendError::MessageEncodeError => typed,
            _ => self.broken_by(typed),
        }
    }

    /// Detaches the sender and makes the driver close the connection.
    async fn close(&self) {
        if let Ok(mut sender) = tokio::time::timeout(CLOSE_TIMEOUT, self.sender.lock()).await {
            if let Some(sender) = sender.take() {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, sender.close()).await;
            }
        }
        self.stop.cancel();
        let driver = self.driver.lock().ok().and_then(|mut d| d.take());
        if let Some(driver) = driver {
            // The driver bounds each of its closing steps; this only guards
            // against a stuck peer.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT * 3, driver).await;
        }
    }
}

/// The task that owns a connection: renews the token on `$cbs` before it
/// lapses, notices the connection's end, and closes it when asked.
struct Driver {
    config: Arc<ServiceConfig>,
    connection: ConnectionHandle<()>,
    cbs: Cbs,
    renew_at: Option<SystemTime>,
    broken: CancellationToken,
    stop: CancellationToken,
}

impl Driver {
    async fn run(mut self) {
        let timeout = self.config.options.operation_timeout;
        let ended = loop {
            let renewal = self
                .renew_at
                .map_or_else(|| tokio::time::Instant::now() + NEVER, amqp::deadline);
            tokio::select! {
                () = self.stop.cancelled() => break false,
                () = self.broken.cancelled() => break false,
                outcome = self.connection.on_close() => {
                    let error = match outcome {
                        Ok(()) => ClientError::Network("the hub closed the AMQP connection".into()),
                        Err(e) => amqp::connection_error(&e, IDLE_TIMEOUT),
                    };
                    tracing::debug!(error = %error, "service AMQP connection ended");
                    break true;
                }
                () = tokio::time::sleep_until(renewal), if self.renew_at.is_some() => {
                    if let Err(error) = self.renew(timeout).await {
                        tracing::warn!(error = %error, "cannot renew the service token; reconnecting on next use");
                        break false;
                    }
                }
            }
        };
        self.broken.cancel();
        if !ended {
            self.cbs.close(CLOSE_TIMEOUT).await;
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.connection.close()).await;
        }
    }

    async fn renew(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let minted = SystemTime::now();
        let Some(token) = self.config.credentials.token(minted)? else {
            self.renew_at = None;
            return Ok(());
        };
        self.cbs
            .put_token(self.config.credentials.resource(), &token.value, timeout)
            .await?;
        tracing::debug!("service SAS token renewed on $cbs");
        self.renew_at = amqp::renewal_time(&token, minted);
        Ok(())
    }
}

/// The feedback receiver link; reattached (on a new connection if needed)
/// after a failure.
pub(crate) struct AmqpFeedback {
    shared: Arc<Shared>,
    /// Boxed: an attached receiver is large, and this sits in an enum.
    link: Option<Box<FeedbackLink>>,
}

struct FeedbackLink {
    connection: Arc<ServiceConnection>,
    receiver: Receiver,
    /// Delivery info of every batch handed out and not yet settled.
    unsettled: HashMap<u32, DeliveryInfo>,
}

impl AmqpFeedback {
    /// The attached link, attaching it first if there is none or its
    /// connection broke.
    async fn link(&mut self) -> Result<&mut FeedbackLink, ClientError> {
        let link = match self.link.take() {
            Some(link) if !link.connection.broken.is_cancelled() => link,
            _ => Box::new(self.attach().await?),
        };
        Ok(self.link.insert(link))
    }

    async fn attach(&self) -> Result<FeedbackLink, ClientError> {
        let timeout = self.shared.config.options.operation_timeout;
        let connection = self.shared.connection().await?;
        let receiver = within(timeout, "feedback attach", async {
            let mut session = connection.session.lock().await;
            Box::pin(
                Receiver::builder()
                    .name(amqp::link_name("feedback-receiver"))
                    .source(FEEDBACK_NODE)
                    .receiver_settle_mode(ReceiverSettleMode::First)
                    .credit_mode(CreditMode::Auto(FEEDBACK_CREDIT))
                    .auto_accept(false)
                    .attach(&mut session),
            )
            .await
            .map_err(amqp::receiver_attach_error)
        })
        .await
        .map_err(|e| connection.broken_by(e))?;
        Ok(FeedbackLink {
            connection,
            receiver,
            unsettled: HashMap::new(),
        })
    }

    /// Waits up to `timeout` for one batch. A link that fails is attached
    /// again once within the same call; a second failure is returned.
    pub(crate) async fn receive(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<FeedbackBatch>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut reattached = false;
        loop {
            let link = self.link().await?;
            let received = match tokio::time::timeout_at(
                deadline,
                link.receiver.recv::<Body<Value>>(),
            )
            .await
            {
                Err(_) => return Ok(None),
                Ok(received) => received,
            };
            let delivery = match received {
                Ok(delivery) => delivery,
                Err(RecvError::MessageDecode(e)) => {
                    let _ = link
                        .receiver
                        .reject(e.info, decode_error("the batch cannot be decoded"))
                        .await;
                    return Err(ClientError::Protocol(format!(
                        "a feedback batch could not be decoded: {}",
                        e.source
                    )));
                }
                Err(e) => {
                    let error = link.connection.broken_by(amqp::recv_error(&e));
                    self.link = None;
                    if reattached || !error.is_transient() {
                        return Err(error);
                    }
                    tracing::debug!(error = %error, "feedback link lost; attaching again");
                    reattached = true;
                    continue;
                }
            };
            let (info, message) = delivery.into_parts();
            let delivery_id = info.delivery_id();
            let handle = FeedbackDelivery::Amqp {
                connection: link.connection.number,
                delivery_id,
            };
            return match amqp::feedback_batch(message, handle) {
                Ok(batch) => {
                    link.unsettled.insert(delivery_id, info);
                    Ok(Some(batch))
                }
                Err(e) => {
                    let _ = link
                        .receiver
                        .reject(info, decode_error(&e.to_string()))
                        .await;
                    Err(e)
                }
            };
        }
    }

    /// Settles one batch: complete → accepted, abandon → released.
    pub(crate) async fn settle(
        &mut self,
        batch: &FeedbackBatch,
        outcome: Outcome,
    ) -> Result<(), ClientError> {
        let FeedbackDelivery::Amqp {
            connection,
            delivery_id,
        } = batch.delivery
        else {
            return Err(ClientError::InvalidArgument(
                "this feedback batch was not received over AMQP".into(),
            ));
        };
        let timeout = self.shared.config.options.operation_timeout;
        let Some(link) = self
            .link
            .as_mut()
            .filter(|link| link.connection.number == connection)
        else {
            return Err(ClientError::lock_lost_locally(
                "the connection that received the feedback batch closed; the hub delivers it again",
            ));
        };
        let Some(info) = link.unsettled.remove(&delivery_id) else {
            return Err(ClientError::lock_lost_locally(
                "the feedback batch was already settled",
            ));
        };
        within(timeout, "settle feedback", async {
            let sent = match outcome {
                Outcome::Complete => link.receiver.accept(info).await,
                Outcome::Reject => link.receiver.reject(info, None).await,
                Outcome::Abandon => link.receiver.release(info).await,
            };
            sent.map_err(|e| {
                ClientError::lock_lost_locally(&format!(
                    "the link closed before the settlement was sent: {e}"
                ))
            })
        })
        .await
    }

    /// Detaches the link (the connection stays for the service).
    pub(crate) async fn close(self) {
        if let Some(link) = self.link {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, link.receiver.close()).await;
        }
    }
}

fn decode_error(why: &str) -> definitions::Error {
    definitions::Error::new(AmqpError::DecodeError, why.to_owned(), None)
}
