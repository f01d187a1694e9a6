//! The engine task: the one owner of the hub's state.
//!
//! Each turn of the loop takes every command already queued (up to a cap),
//! applies them to the state in arrival order, runs the sweeps that are due,
//! and hands all resulting events to the store as one batch. Replies wait for
//! that batch's commit, so a caller is answered only once what it caused is
//! durable, and one fsync serves the whole batch.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use courier_core::{
    Clock, DeviceId, DeviceSpec, FreshIdentity, HubEvent, HubState, IfMatch, LockToken, QueueEvent,
    Timestamp,
};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tracing::{error, info, warn};

use crate::codec;
use crate::error::Error;
use crate::handle::DeviceInfo;
use crate::views::CredentialView;
use courier_store::Store;

/// How many commands one turn takes at most.
const MAX_BATCH: usize = 512;
/// The longest the engine sleeps without looking at the clock, so that a
/// wall-clock jump is noticed within this time.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// Batches handed to the store but not yet durable, at most. When the disk
/// falls behind, the engine waits here, its command channel fills, and
/// callers wait in turn: backpressure instead of growth.
const MAX_IN_FLIGHT_BATCHES: usize = 64;

/// How a device settles a locked message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    Complete,
    Reject,
    Abandon,
    /// Unlock without counting a delivery (the receiver never got it).
    Release,
}

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// One request to the engine.
pub(crate) enum Command {
    PutDevice {
        id: DeviceId,
        spec: Box<DeviceSpec>,
        if_match: IfMatch,
        fresh: FreshIdentity,
        reply: Reply<DeviceInfo>,
    },
    DeleteDevice {
        id: DeviceId,
        if_match: IfMatch,
        reply: Reply<()>,
    },
    GetDevice {
        id: DeviceId,
        reply: Reply<DeviceInfo>,
    },
    ListDevices {
        top: usize,
        reply: Reply<Vec<DeviceInfo>>,
    },
    Stats {
        reply: Reply<courier_core::HubStats>,
    },
    Send {
        id: DeviceId,
        message: Box<courier_core::C2dMessage>,
        reply: Reply<courier_core::SendReceipt>,
    },
    Receive {
        id: DeviceId,
        token: LockToken,
        /// When the queue has nothing to give: `false` answers `None` at
        /// once; `true` parks the receive in the engine until a message is
        /// available (see [`Waiters`]) or the caller goes away.
        park: bool,
        reply: Reply<Option<courier_core::Delivery>>,
    },
    Settle {
        id: DeviceId,
        token: LockToken,
        how: Settle,
        reply: Reply<()>,
    },
    Purge {
        id: DeviceId,
        reply: Reply<u32>,
    },
    ReceiveFeedback {
        token: LockToken,
        reply: Reply<Option<courier_core::FeedbackDelivery>>,
    },
    SettleFeedback {
        token: LockToken,
        how: Settle,
        reply: Reply<()>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// State shared between the engine and every handle.
pub(crate) struct Shared {
    pub(crate) credentials: CredentialView,
    pub(crate) feedback_waiter: Notify,
    pub(crate) failed: AtomicBool,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Shared {
            credentials: CredentialView::default(),
            feedback_waiter: Notify::new(),
            failed: AtomicBool::new(false),
        }
    }
}

/// One parked receive: the caller's lock token and where its delivery goes.
struct Waiter {
    token: LockToken,
    reply: Reply<Option<courier_core::Delivery>>,
}

/// Receives parked in the engine, by device, oldest first.
///
/// A device's receiver (an MQTT connection, an AMQP link, an HTTPS long
/// poll) that finds the queue empty waits here instead of polling. When a
/// turn makes a message available to the device (a send, an abandon, a lock
/// that lapsed), the engine locks it for the oldest waiter in that same turn,
/// so the lock is written in the same batch as what made the message
/// available, and the waiter is answered when that batch is durable: one
/// engine command and one commit per delivery instead of a wake-up, a second
/// receive and a second commit. A waiter whose caller has gone (its wait
/// timed out, its connection closed) is skipped and dropped.
#[derive(Default)]
pub(crate) struct Waiters {
    by_device: HashMap<DeviceId, VecDeque<Waiter>>,
    /// Waiters held, live or not.
    count: usize,
    /// `count` after the last sweep of callers that went away.
    after_prune: usize,
}

impl Waiters {
    /// Number of waiters past which those whose callers went away are swept
    /// out, relative to the number left by the previous sweep.
    const PRUNE_SLACK: usize = 1024;

    fn park(&mut self, id: DeviceId, waiter: Waiter) {
        let queue = self.by_device.entry(id).or_default();
        let before = queue.len();
        queue.retain(|w| !w.reply.is_closed());
        self.count -= before - queue.len();
        queue.push_back(waiter);
        self.count += 1;
        if self.count > 2 * self.after_prune + Self::PRUNE_SLACK {
            self.by_device.retain(|_, q| {
                q.retain(|w| !w.reply.is_closed());
                !q.is_empty()
            });
            self.count = self.by_device.values().map(VecDeque::len).sum();
            self.after_prune = self.count;
        }
    }

    fn is_empty(&self) -> bool {
        self.by_device.is_empty()
    }

    fn take(&mut self, id: &DeviceId) -> Option<VecDeque<Waiter>> {
        let queue = self.by_device.remove(id)?;
        self.count -= queue.len();
        Some(queue)
    }

    fn put_back(&mut self, id: DeviceId, queue: VecDeque<Waiter>) {
        if !queue.is_empty() {
            self.count += queue.len();
            self.by_device.insert(id, queue);
        }
    }
}

/// An answer held until the batch that carries its events is durable.
type Deferred = Box<dyn FnOnce(Result<(), Error>) + Send>;

fn defer<T: Send + 'static>(reply: Reply<T>, result: Result<T, Error>) -> Deferred {
    Box::new(move |commit: Result<(), Error>| {
        let answer = match (commit, result) {
            (Ok(()), r) => r,
            // A refusal changed nothing, so it stands even if the batch failed.
            (Err(_), Err(refusal)) => Err(refusal),
            (Err(e), Ok(_)) => Err(e),
        };
        // The caller may have gone away; nothing to do then.
        let _ = reply.send(answer);
    })
}

/// Like [`defer`] for a receive: when the caller has gone away (an HTTP
/// client disconnected, a head dropped its pending receive), what it would
/// have got is released back to its queue at once, without counting a
/// delivery, instead of staying invisible until its lock lapses.
fn defer_or_release<T: Send + 'static>(
    reply: Reply<Option<T>>,
    result: Result<Option<T>, Error>,
    engine: mpsc::WeakSender<Command>,
    release: fn(T) -> Command,
) -> Deferred {
    Box::new(move |commit: Result<(), Error>| {
        let answer = match (commit, result) {
            (Ok(()), r) => r,
            (Err(_), Err(refusal)) => Err(refusal),
            (Err(e), Ok(_)) => Err(e),
        };
        if let Err(Ok(Some(unclaimed))) = reply.send(answer) {
            if let Some(tx) = engine.upgrade() {
                // If the engine is too busy to take it now, the lock lapses
                // as it would have anyway.
                let _ = tx.try_send(release(unclaimed));
            }
        }
    })
}

/// The command that returns an unclaimed delivery to its queue.
pub(crate) fn release_delivery(d: courier_core::Delivery) -> Command {
    Command::Settle {
        id: d.device_id,
        token: d.lock_token,
        how: Settle::Release,
        reply: oneshot::channel().0,
    }
}

/// The command that returns an unclaimed feedback batch to its queue.
pub(crate) fn release_feedback(d: courier_core::FeedbackDelivery) -> Command {
    Command::SettleFeedback {
        token: d.lock_token,
        how: Settle::Release,
        reply: oneshot::channel().0,
    }
}

/// The engine: state, store, and the bookkeeping around them.
pub(crate) struct Engine {
    pub(crate) state: HubState,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) rx: mpsc::Receiver<Command>,
    /// Lets deferred answers send commands back (releases) without keeping
    /// the channel open once every handle is gone.
    pub(crate) weak_tx: mpsc::WeakSender<Command>,
    pub(crate) last_activity: HashMap<DeviceId, Timestamp>,
    /// Receives waiting for their device's next message.
    pub(crate) waiters: Waiters,
    pub(crate) checkpoint_after_bytes: u64,
    pub(crate) checkpoint_running: Arc<AtomicBool>,
    pub(crate) in_flight: Arc<Semaphore>,
}

/// Permits for [`Engine::in_flight`].
pub(crate) fn in_flight_permits() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_IN_FLIGHT_BATCHES))
}

impl Engine {
    /// Runs until a `Shutdown` command or until every handle is dropped.
    pub(crate) async fn run(mut self) {
        let mut commands = Vec::with_capacity(MAX_BATCH);
        let mut shutdown: Option<oneshot::Sender<()>> = None;
        // One timer for the next deadline, moved only when a deadline comes
        // earlier than the one it is set for: a later one lets it fire early,
        // the turn finds nothing due, and it is set again. No timer is made
        // or moved per turn.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<tokio::time::Instant> = None;
        loop {
            let wake = tokio::time::Instant::now() + self.sleep_duration();
            if armed.is_none_or(|at| wake < at) {
                timer.as_mut().reset(wake);
                armed = Some(wake);
            }
            tokio::select! {
                n = self.rx.recv_many(&mut commands, MAX_BATCH) => {
                    if n == 0 {
                        break;
                    }
                }
                () = &mut timer => armed = None,
            }
            let now = self.clock.now();
            let mut events = Vec::new();
            let mut deferred: Vec<Deferred> = Vec::with_capacity(commands.len());
            for command in commands.drain(..) {
                if let Command::Shutdown { reply } = command {
                    shutdown = Some(reply);
                    continue;
                }
                self.handle(now, command, &mut events, &mut deferred);
            }
            self.state.tick(now, &mut events);
            self.serve_waiters(now, &mut events, &mut deferred);
            let last = self.commit(events, deferred).await;
            if let Some(reply) = shutdown.take() {
                // Wait for the last batch so that nothing acknowledged is lost.
                if let Some(last) = last {
                    let _ = last.await;
                }
                let _ = reply.send(());
                break;
            }
            self.maybe_checkpoint();
        }
        info!("hub engine stopped");
    }

    fn sleep_duration(&self) -> Duration {
        let now = self.clock.now();
        match self.state.next_deadline() {
            Some(t) if t <= now => Duration::from_millis(1),
            Some(t) => t.since(now).clamp(Duration::from_millis(1), MAX_IDLE),
            None => MAX_IDLE,
        }
    }

    fn handle(
        &mut self,
        now: Timestamp,
        command: Command,
        events: &mut Vec<HubEvent>,
        deferred: &mut Vec<Deferred>,
    ) {
        if self.shared.failed.load(Ordering::Acquire) {
            fail(command);
            return;
        }
        match command {
            Command::PutDevice {
                id,
                spec,
                if_match,
                fresh,
                reply,
            } => {
                let r = self
                    .state
                    .put_device(now, id, *spec, if_match, fresh, events)
                    .map_err(Error::from)
                    .map(|device| self.info(device));
                deferred.push(defer(reply, r));
            }
            Command::DeleteDevice {
                id,
                if_match,
                reply,
            } => {
                let r = self
                    .state
                    .delete_device(&id, if_match, events)
                    .map_err(Error::from);
                if r.is_ok() {
                    self.last_activity.remove(&id);
                }
                deferred.push(defer(reply, r));
            }
            Command::GetDevice { id, reply } => {
                let r = self
                    .state
                    .device(&id)
                    .map(|e| self.info(e.device.clone()))
                    .ok_or_else(|| Error::from(courier_core::HubError::DeviceNotFound(id)));
                deferred.push(defer(reply, r));
            }
            Command::ListDevices { top, reply } => {
                let list = self
                    .state
                    .devices()
                    .take(top)
                    .map(|e| self.info(e.device.clone()))
                    .collect();
                deferred.push(defer(reply, Ok(list)));
            }
            Command::Stats { reply } => {
                deferred.push(defer(reply, Ok(self.state.stats())));
            }
            Command::Send { id, message, reply } => {
                let r = self
                    .state
                    .send(now, &id, *message, events)
                    .map_err(Error::from);
                deferred.push(defer(reply, r));
            }
            Command::Receive {
                id,
                token,
                park,
                reply,
            } => {
                // Nobody would read the answer: lock nothing.
                if reply.is_closed() {
                    return;
                }
                let r = self
                    .state
                    .receive(now, &id, token, events)
                    .map_err(Error::from);
                if r.is_ok() {
                    self.last_activity.insert(id.clone(), now);
                }
                match r {
                    Ok(None) if park => self.waiters.park(id, Waiter { token, reply }),
                    r => deferred.push(defer_or_release(
                        reply,
                        r,
                        self.weak_tx.clone(),
                        release_delivery,
                    )),
                }
            }
            Command::Settle {
                id,
                token,
                how,
                reply,
            } => {
                let r = match how {
                    Settle::Complete => self.state.complete(now, &id, token, events),
                    Settle::Reject => self.state.reject(now, &id, token, events),
                    Settle::Abandon => self.state.abandon(now, &id, token, events),
                    Settle::Release => self.state.release(now, &id, token, events),
                }
                .map_err(Error::from);
                if r.is_ok() {
                    self.last_activity.insert(id, now);
                }
                deferred.push(defer(reply, r));
            }
            Command::Purge { id, reply } => {
                let r = self.state.purge(now, &id, events).map_err(Error::from);
                deferred.push(defer(reply, r));
            }
            Command::ReceiveFeedback { token, reply } => {
                let r = self.state.receive_feedback(now, token, events);
                deferred.push(defer_or_release(
                    reply,
                    Ok(r),
                    self.weak_tx.clone(),
                    release_feedback,
                ));
            }
            Command::SettleFeedback { token, how, reply } => {
                let r = match how {
                    // A back end completes or rejects a batch alike: it has read it.
                    Settle::Complete | Settle::Reject => {
                        self.state.complete_feedback(now, token, events)
                    }
                    Settle::Abandon => self.state.abandon_feedback(now, token, events),
                    Settle::Release => self.state.release_feedback(now, token, events),
                }
                .map_err(Error::from);
                deferred.push(defer(reply, r));
            }
            Command::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }

    /// Gives parked receives what this turn made available to their
    /// devices: a message enqueued or returned to the queue, or an answer
    /// that the device is gone or disabled. The locks join this turn's batch.
    fn serve_waiters(
        &mut self,
        now: Timestamp,
        events: &mut Vec<HubEvent>,
        deferred: &mut Vec<Deferred>,
    ) {
        if self.waiters.is_empty() {
            return;
        }
        let mut touched: Vec<DeviceId> = Vec::new();
        for event in events.iter() {
            let id = match event {
                HubEvent::Queue {
                    device_id,
                    event: QueueEvent::Enqueued { .. } | QueueEvent::Returned { .. },
                } => device_id,
                HubEvent::DeviceDeleted(id) => id,
                HubEvent::DeviceWritten(device) => &device.device_id,
                _ => continue,
            };
            if self.waiters.by_device.contains_key(id) && !touched.contains(id) {
                touched.push(id.clone());
            }
        }
        for id in touched {
            let Some(mut queue) = self.waiters.take(&id) else {
                continue;
            };
            while let Some(waiter) = queue.pop_front() {
                if waiter.reply.is_closed() {
                    continue;
                }
                match self.state.receive(now, &id, waiter.token, events) {
                    Ok(Some(delivery)) => {
                        self.last_activity.insert(id.clone(), now);
                        deferred.push(defer_or_release(
                            waiter.reply,
                            Ok(Some(delivery)),
                            self.weak_tx.clone(),
                            release_delivery,
                        ));
                    }
                    Ok(None) => {
                        queue.push_front(waiter);
                        break;
                    }
                    Err(e) => deferred.push(defer(waiter.reply, Err(Error::from(e)))),
                }
            }
            self.waiters.put_back(id, queue);
        }
    }

    fn info(&self, device: courier_core::Device) -> DeviceInfo {
        let count = self
            .state
            .device(&device.device_id)
            .map_or(0, |e| e.queue.len());
        let last_activity_time = self.last_activity.get(&device.device_id).copied();
        DeviceInfo {
            device,
            cloud_to_device_message_count: count,
            last_activity_time,
            // Filled by the handle from live presence, which the engine does not own.
            connection_state: crate::ConnectionState::Disconnected,
            connection_state_updated_time: None,
        }
    }

    /// Hands the turn's events to the store and answers callers once they are
    /// durable. Returns the commit's completion for shutdown to wait on.
    async fn commit(
        &mut self,
        events: Vec<HubEvent>,
        deferred: Vec<Deferred>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if events.is_empty() {
            for d in deferred {
                d(Ok(()));
            }
            return None;
        }
        let mut wake_feedback = false;
        for event in &events {
            match event {
                HubEvent::DeviceWritten(d) => self.shared.credentials.put(d),
                HubEvent::DeviceDeleted(id) => self.shared.credentials.remove(id.as_str()),
                HubEvent::FeedbackClosed(_) | HubEvent::Feedback(QueueEvent::Returned { .. }) => {
                    wake_feedback = true
                }
                _ => {}
            }
        }
        let records: Result<Vec<_>, _> = events.iter().map(codec::encode).collect();
        let shared = self.shared.clone();
        // The semaphore is never closed, so acquiring only waits.
        let permit = self.in_flight.clone().acquire_owned().await.ok();
        let commit = match records {
            Ok(records) => Some(self.store.append(records)),
            Err(e) => {
                error!(error = %e, "could not encode events; refusing further changes");
                shared.failed.store(true, Ordering::Release);
                None
            }
        };
        Some(tokio::spawn(async move {
            let result = match commit {
                Some(c) => c.await.map(|_| ()).map_err(|e| {
                    error!(error = %e, "store commit failed; refusing further changes");
                    shared.failed.store(true, Ordering::Release);
                    Error::Storage(e.to_string())
                }),
                None => Err(Error::Storage("event encoding failed".into())),
            };
            drop(permit);
            let ok = result.is_ok();
            for d in deferred {
                d(result.clone());
            }
            if ok && wake_feedback {
                shared.feedback_waiter.notify_waiters();
            }
        }))
    }

    fn maybe_checkpoint(&mut self) {
        if self.store.log_bytes_since_checkpoint() < self.checkpoint_after_bytes
            || self.checkpoint_running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let records: Result<Vec<_>, _> = self
            .state
            .snapshot_events()
            .iter()
            .map(codec::encode)
            .collect();
        let running = self.checkpoint_running.clone();
        match records {
            Ok(records) => {
                let n = records.len();
                let commit = self.store.checkpoint(records);
                tokio::spawn(async move {
                    match commit.await {
                        Ok(_) => info!(records = n, "checkpoint written"),
                        Err(e) => warn!(error = %e, "checkpoint failed"),
                    }
                    running.store(false, Ordering::Release);
                });
            }
            Err(e) => {
                warn!(error = %e, "could not encode the snapshot");
                running.store(false, Ordering::Release);
            }
        }
    }
}

/// Answers a command with the storage failure that stopped the hub.
fn fail(command: Command) {
    let e = || Error::Storage("the store failed earlier; the hub refuses changes".into());
    match command {
        Command::PutDevice { reply, .. } => drop(reply.send(Err(e()))),
        Command::DeleteDevice { reply, .. }
        | Command::Settle { reply, .. }
        | Command::SettleFeedback { reply, .. } => drop(reply.send(Err(e()))),
        Command::GetDevice { reply, .. } => drop(reply.send(Err(e()))),
        Command::ListDevices { reply, .. } => drop(reply.send(Err(e()))),
        Command::Stats { reply } => drop(reply.send(Err(e()))),
        Command::Send { reply, .. } => drop(reply.send(Err(e()))),
        Command::Receive { reply, .. } => drop(reply.send(Err(e()))),
        Command::Purge { reply, .. } => drop(reply.send(Err(e()))),
        Command::ReceiveFeedback { reply, .. } => drop(reply.send(Err(e()))),
        Command::Shutdown { reply } => drop(reply.send(())),
    }
}
