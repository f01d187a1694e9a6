//! The handle through which protocol heads use the hub.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use courier_core::{
    C2dMessage, Clock, Delivery, Device, DeviceId, DeviceSpec, FeedbackDelivery, FreshIdentity,
    HubSettings, HubState, HubStats, IfMatch, LockToken, SendReceipt, Timestamp,
};
use courier_store::{ReplayError, Store};
use rand::RngCore;
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use crate::codec;
use crate::engine::{release_delivery, release_feedback, Command, Engine, Settle, Shared};
use crate::error::{Error, OpenError};
use crate::presence::{ConnectionGuard, ConnectionState, Presence};
use crate::views::DeviceCredentials;

/// A registry entry with the live facts IoT Hub reports beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The registry record.
    pub device: Device,
    /// Messages in the device's queue (`cloudToDeviceMessageCount`).
    pub cloud_to_device_message_count: usize,
    /// Last receive or settlement by the device since the hub started.
    pub last_activity_time: Option<Timestamp>,
    /// Whether a protocol head holds a live connection for the device.
    pub connection_state: ConnectionState,
    /// When that state last changed since the hub started.
    pub connection_state_updated_time: Option<Timestamp>,
}

/// Engine tuning.
#[derive(Clone, Debug)]
pub struct HubOptions {
    /// Commands queued at most before callers wait (backpressure).
    pub command_queue: usize,
    /// Log bytes after the last checkpoint that trigger a new one.
    pub checkpoint_after_bytes: u64,
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            command_queue: 16 * 1024,
            checkpoint_after_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What opening the hub found in the store.
#[derive(Clone, Debug, Default)]
pub struct OpenStats {
    /// Events replayed.
    pub events: u64,
    /// Time the replay took.
    pub elapsed: Duration,
    /// Devices after replay.
    pub devices: usize,
    /// Messages queued after replay.
    pub queued_messages: usize,
}

/// The running engine task; await it after [`Hub::shutdown`].
pub type HubTask = tokio::task::JoinHandle<()>;

/// A cheap, cloneable handle to the hub engine.
#[derive(Clone)]
pub struct Hub {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    settings: Arc<HubSettings>,
    presence: Arc<Presence>,
}

impl Hub {
    /// Replays `store` into memory and starts the engine task on the current
    /// tokio runtime.
    pub fn open(
        store: Arc<dyn Store>,
        settings: HubSettings,
        clock: Arc<dyn Clock>,
        options: HubOptions,
    ) -> Result<(Hub, HubTask, OpenStats), OpenError> {
        let started = Instant::now();
        let mut state = HubState::new(settings.clone());
        let mut events = 0u64;
        store.replay(&mut |record| {
            let event = codec::decode(&record)
                .map_err(|e| ReplayError(format!("undecodable event: {e}")))?;
            state.apply(event);
            events += 1;
            Ok(())
        })?;
        let stats = state.stats();
        let open = OpenStats {
            events,
            elapsed: started.elapsed(),
            devices: stats.devices,
            queued_messages: stats.queued_messages,
        };
        info!(
            events,
            devices = stats.devices,
            queued = stats.queued_messages,
            elapsed_ms = open.elapsed.as_millis() as u64,
            "store replayed"
        );
        let shared = Arc::new(Shared::new());
        for entry in state.devices() {
            shared.credentials.put(&entry.device);
        }
        let (tx, rx) = mpsc::channel(options.command_queue.max(1));
        let presence = Arc::new(Presence::new(clock.clone()));
        let engine = Engine {
            state,
            store,
            clock,
            shared: shared.clone(),
            rx,
            weak_tx: tx.downgrade(),
            last_activity: HashMap::new(),
            waiters: crate::engine::Waiters::default(),
            checkpoint_after_bytes: options.checkpoint_after_bytes,
            checkpoint_running: Arc::new(AtomicBool::new(false)),
            in_flight: crate::engine::in_flight_permits(),
        };
        let task = tokio::spawn(engine.run());
        let hub = Hub {
            tx,
            shared,
            settings: Arc::new(settings),
            presence,
        };
        Ok((hub, task, open))
    }

    /// The settings in force.
    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    /// A device's credentials, for authentication (no round trip to the engine).
    pub fn device_credentials(&self, id: &str) -> Option<DeviceCredentials> {
        self.shared.credentials.get(id)
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Command,
    ) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Creates or replaces a device; missing SAS keys are generated.
    pub async fn put_device(
        &self,
        id: DeviceId,
        spec: DeviceSpec,
        if_match: IfMatch,
    ) -> Result<DeviceInfo, Error> {
        let fresh = fresh_identity();
        self.call(|reply| Command::PutDevice {
            id,
            spec: Box::new(spec),
            if_match,
            fresh,
            reply,
        })
        .await
    }

    /// A device.
    pub async fn get_device(&self, id: &DeviceId) -> Result<DeviceInfo, Error> {
        let id = id.clone();
        let info = self.call(|reply| Command::GetDevice { id, reply }).await?;
        Ok(self.with_presence(info))
    }

    /// Up to `top` devices in id order.
    pub async fn list_devices(&self, top: usize) -> Result<Vec<DeviceInfo>, Error> {
        let list = self
            .call(|reply| Command::ListDevices { top, reply })
            .await?;
        Ok(list.into_iter().map(|i| self.with_presence(i)).collect())
    }

    fn with_presence(&self, mut info: DeviceInfo) -> DeviceInfo {
        let (state, updated) = self.presence.state(&info.device.device_id);
        info.connection_state = state;
        info.connection_state_updated_time = updated;
        info
    }

    /// Marks `id` connected until the returned guard is dropped; protocol
    /// heads hold one per authenticated device connection.
    pub fn connection_opened(&self, id: &DeviceId) -> ConnectionGuard {
        ConnectionGuard::new(self.presence.clone(), id.clone())
    }

    /// Devices with a live protocol connection (`connectedDeviceCount`).
    pub fn connected_device_count(&self) -> usize {
        self.presence.connected_count()
    }

    /// Deletes a device and its queue.
    pub async fn delete_device(&self, id: &DeviceId, if_match: IfMatch) -> Result<(), Error> {
        let device = id.clone();
        self.call(|reply| Command::DeleteDevice {
            id: device,
            if_match,
            reply,
        })
        .await?;
        self.presence.forget(id);
        Ok(())
    }

    /// Counters.
    pub async fn stats(&self) -> Result<HubStats, Error> {
        self.call(|reply| Command::Stats { reply }).await
    }

    /// Enqueues a C2D message; returns once it is durable.
    pub async fn send(&self, id: &DeviceId, message: C2dMessage) -> Result<SendReceipt, Error> {
        let id = id.clone();
        self.call(|reply| Command::Send {
            id,
            message: Box::new(message),
            reply,
        })
        .await
    }

    /// Receives and locks the device's next message, if one is available now.
    pub async fn receive(&self, id: &DeviceId) -> Result<Option<Delivery>, Error> {
        let id = id.clone();
        let token = new_lock_token();
        self.claim(
            |reply| Command::Receive {
                id,
                token,
                park: false,
                reply,
            },
            release_delivery,
        )
        .await
    }

    /// Like [`Hub::call`] for a receive. If the caller is dropped after the
    /// engine answered but before the answer was read (a head dropping a
    /// pending receive as its connection closes), the engine's answer is
    /// still in the channel: the guard hands it back for release, so the
    /// message does not stay invisible until its lock lapses.
    async fn claim<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<Option<T>, Error>>) -> Command,
        release: fn(T) -> Command,
    ) -> Result<Option<T>, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        let mut guard = Unclaimed {
            rx,
            engine: self.tx.clone(),
            release,
            read: false,
        };
        let answer = (&mut guard.rx).await;
        guard.read = true;
        answer.map_err(|_| Error::ShuttingDown)?
    }

    /// Like [`Hub::receive`], but waits up to `wait` for a message to arrive.
    ///
    /// The receive waits in the engine, which locks the device's next
    /// message for it in the turn that makes one available; a wait that
    /// ends first leaves nothing locked.
    pub async fn receive_wait(
        &self,
        id: &DeviceId,
        wait: Duration,
    ) -> Result<Option<Delivery>, Error> {
        if wait.is_zero() {
            return self.receive(id).await;
        }
        tokio::time::timeout(wait, self.receive_parked(id))
            .await
            .unwrap_or(Ok(None))
    }

    /// Like [`Hub::receive_wait`] without a deadline: waits in the engine
    /// until a message is available (`Some`), the device is deleted or
    /// disabled (an error), or the caller drops the future, which leaves
    /// nothing locked. For a receiver whose own life bounds the wait, such
    /// as a device's MQTT connection: no timer per receive.
    pub async fn receive_parked(&self, id: &DeviceId) -> Result<Option<Delivery>, Error> {
        let id = id.clone();
        let token = new_lock_token();
        self.claim(
            |reply| Command::Receive {
                id,
                token,
                park: true,
                reply,
            },
            release_delivery,
        )
        .await
    }

    /// Completes a locked message.
    pub async fn complete(&self, id: &DeviceId, token: LockToken) -> Result<(), Error> {
        self.settle(id, token, Settle::Complete).await
    }

    /// Rejects (dead-letters) a locked message.
    pub async fn reject(&self, id: &DeviceId, token: LockToken) -> Result<(), Error> {
        self.settle(id, token, Settle::Reject).await
    }

    /// Abandons a locked message: it returns to the queue.
    pub async fn abandon(&self, id: &DeviceId, token: LockToken) -> Result<(), Error> {
        self.settle(id, token, Settle::Abandon).await
    }

    /// Returns a locked message to the queue without counting a delivery
    /// (its delivery already counted, or never reached the device), e.g. a
    /// message in flight on a connection that closed.
    pub async fn release(&self, id: &DeviceId, token: LockToken) -> Result<(), Error> {
        self.settle(id, token, Settle::Release).await
    }

    async fn settle(&self, id: &DeviceId, token: LockToken, how: Settle) -> Result<(), Error> {
        let id = id.clone();
        self.call(|reply| Command::Settle {
            id,
            token,
            how,
            reply,
        })
        .await
    }

    /// Removes every message of a device; returns how many.
    pub async fn purge(&self, id: &DeviceId) -> Result<u32, Error> {
        let id = id.clone();
        self.call(|reply| Command::Purge { id, reply }).await
    }

    /// Receives and locks the next feedback batch, if one is available now.
    pub async fn receive_feedback(&self) -> Result<Option<FeedbackDelivery>, Error> {
        let token = new_lock_token();
        self.claim(
            |reply| Command::ReceiveFeedback { token, reply },
            release_feedback,
        )
        .await
    }

    /// Like [`Hub::receive_feedback`], but waits up to `wait` for a batch.
    pub async fn receive_feedback_wait(
        &self,
        wait: Duration,
    ) -> Result<Option<FeedbackDelivery>, Error> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.shared.feedback_waiter.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(d) = self.receive_feedback().await? {
                return Ok(Some(d));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    /// Completes a feedback batch.
    pub async fn complete_feedback(&self, token: LockToken) -> Result<(), Error> {
        self.call(|reply| Command::SettleFeedback {
            token,
            how: Settle::Complete,
            reply,
        })
        .await
    }

    /// Abandons a feedback batch.
    pub async fn abandon_feedback(&self, token: LockToken) -> Result<(), Error> {
        self.call(|reply| Command::SettleFeedback {
            token,
            how: Settle::Abandon,
            reply,
        })
        .await
    }

    /// Stops the engine after the commands already queued, once their
    /// changes are durable.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

fn new_lock_token() -> LockToken {
    LockToken(*uuid::Uuid::new_v4().as_bytes())
}

/// A generation id shaped like IoT Hub's (a .NET tick count, 18 digits) and
/// fresh keys for a device that brings none.
fn fresh_identity() -> FreshIdentity {
    let mut rng = rand::thread_rng();
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // .NET ticks are 100 ns since 0001-01-01; the low digits are random so
    // that two devices created in the same millisecond still differ.
    let ticks = (unix_ms + 62_135_596_800_000) * 10_000 + u64::from(rng.next_u32() % 10_000);
    let mut key = || {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    FreshIdentity {
        generation_id: ticks.to_string(),
        primary_key: key(),
        secondary_key: key(),
    }
}

/// A receive's answer channel, guarded: dropped unread with an answer in it,
/// it sends the answer's release to the engine.
struct Unclaimed<T> {
    rx: oneshot::Receiver<Result<Option<T>, Error>>,
    engine: mpsc::Sender<Command>,
    release: fn(T) -> Command,
    read: bool,
}

impl<T> Drop for Unclaimed<T> {
    fn drop(&mut self) {
        if self.read {
            return;
        }
        if let Ok(Ok(Some(unclaimed))) = self.rx.try_recv() {
            // If the engine is too busy to take it now, the lock lapses as
            // it would have anyway.
            let _ = self.engine.try_send((self.release)(unclaimed));
        }
    }
}
