//! What the supervisor lends a transport for one connection, and what the
//! transport reports when the connection ends. Each transport is one
//! `async fn run(session: Session<'_>) -> SessionEnd` that connects, serves
//! the connection until it ends, and returns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::credentials::Credentials;
use crate::net::Endpoint;
use crate::{ClientError, DeviceOptions, Outcome, ReceivedMessage};

/// Everything about one device that does not change between connections.
#[derive(Debug)]
pub(crate) struct DeviceConfig {
    /// The device id.
    pub(crate) device_id: String,
    /// The hub's host name (`HostName`): MQTT user names and token audiences.
    pub(crate) hub_host: String,
    /// Where to connect and with what TLS settings.
    pub(crate) endpoint: Endpoint,
    /// How the device proves itself.
    pub(crate) credentials: Credentials,
    /// The caller's options.
    pub(crate) options: DeviceOptions,
}

/// A request to settle one received message.
#[derive(Debug)]
pub(crate) struct Settle {
    /// The message, as received (its `delivery` names the delivery).
    pub(crate) message: ReceivedMessage,
    /// What to do with it.
    pub(crate) outcome: Outcome,
    /// Where the result goes.
    pub(crate) reply: oneshot::Sender<Result<(), ClientError>>,
}

/// How many callers are waiting in `receive` right now. HTTPS polls only
/// while one is (a polled message is locked from the moment it is returned).
#[derive(Debug, Default)]
pub(crate) struct Demand {
    waiting: AtomicUsize,
    changed: Notify,
}

impl Demand {
    /// Registers one waiting receiver until the guard drops.
    pub(crate) fn wait(self: &Arc<Self>) -> DemandGuard {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        DemandGuard(self.clone())
    }

    /// True while at least one receiver waits.
    pub(crate) fn is_wanted(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// Returns once more receivers wait than `buffered()` messages are
    /// ready for them: a message already in the inbox serves one waiter, so
    /// polling for it too would lock a message nobody is waiting for.
    pub(crate) async fn wanted_beyond(&self, buffered: impl Fn() -> usize) {
        loop {
            let changed = self.changed.notified();
            if self.waiting.load(Ordering::SeqCst) > buffered() {
                return;
            }
            changed.await;
        }
    }
}

/// One waiting receiver; dropping it withdraws the demand.
pub(crate) struct DemandGuard(Arc<Demand>);

impl Drop for DemandGuard {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// One connection's loan from the supervisor.
///
/// Contract for a transport's `run`:
/// - connect (within `options.operation_timeout`) and authenticate with
///   `config.credentials.token(now)`, then call `connected()` exactly once
///   when messages can flow;
/// - put each received message into `inbox` (`Delivery::…{ connection }`
///   set to `self.connection`); when the inbox is full, stop reading from
///   the hub (backpressure) but keep serving `settlements`;
/// - answer every `Settle` on `reply`; a message delivered on another
///   connection answers `ClientError::lock_lost_locally(…)`;
/// - renew the SAS token at its `renew_at`: in place where the protocol can
///   (AMQP CBS, HTTPS per request), else return `SessionEnd::RenewToken`;
/// - on `closing` cancelled, close cleanly and return `SessionEnd::Closed`;
/// - on any failure return `SessionEnd::Failed` with a typed error
///   (`Unauthorized`/`NotFound` for refusals, `Network` for broken
///   connections, `Timeout` for a silent peer).
pub(crate) struct Session<'a> {
    /// The device.
    pub(crate) config: &'a DeviceConfig,
    /// This connection's number, for `Delivery::connection`.
    pub(crate) connection: u64,
    /// Where received messages go.
    pub(crate) inbox: &'a mpsc::Sender<ReceivedMessage>,
    /// Settlement requests.
    pub(crate) settlements: &'a mut mpsc::Receiver<Settle>,
    /// Receivers waiting now.
    pub(crate) demand: &'a Demand,
    /// Cancelled when the application closes the client.
    pub(crate) closing: &'a CancellationToken,
    connected: Option<Box<dyn FnOnce() + Send + 'a>>,
}

impl<'a> Session<'a> {
    /// A session for connection number `connection`.
    pub(crate) fn new(
        config: &'a DeviceConfig,
        connection: u64,
        inbox: &'a mpsc::Sender<ReceivedMessage>,
        settlements: &'a mut mpsc::Receiver<Settle>,
        demand: &'a Demand,
        closing: &'a CancellationToken,
        connected: Box<dyn FnOnce() + Send + 'a>,
    ) -> Self {
        Self {
            config,
            connection,
            inbox,
            settlements,
            demand,
            closing,
            connected: Some(connected),
        }
    }

    /// Reports that the connection is up (only the first call counts).
    pub(crate) fn connected(&mut self) {
        if let Some(report) = self.connected.take() {
            report();
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// The application closed the client; the connection was closed cleanly.
    Closed,
    /// The SAS token is due and this transport renews by reconnecting.
    RenewToken,
    /// The connection failed or was refused.
    Failed(ClientError),
}
