//! The whole hub's state: registry, one C2D queue per device, the feedback
//! batcher and the feedback queue.
//!
//! Every command takes `now` and appends the events it decided to `out`,
//! applying each as it goes; [`HubState::apply`] alone replays them. So after
//! any sequence of commands, replaying `out` into a fresh state gives an equal
//! state (a property test checks this).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::error::HubError;
use crate::feedback::{FeedbackBatch, FeedbackRecord};
use crate::ids::{DeviceId, LockToken, SequenceNumber};
use crate::limits::{HubSettings, QueueLimits};
use crate::message::C2dMessage;
use crate::queue::{LockedQueue, Outcome, QueueEvent, QueuePolicy};
use crate::registry::{
    validate_key, validate_thumbprint, AuthenticationType, Device, DeviceSpec, DeviceStatus,
    FreshIdentity, IfMatch, SymmetricKey,
};
use crate::time::Timestamp;

/// One persisted change to the hub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HubEvent {
    /// A device was created or replaced (the full record).
    DeviceWritten(Box<Device>),
    /// A device and its queue were deleted.
    DeviceDeleted(DeviceId),
    /// A change to one device's C2D queue.
    Queue {
        /// The device.
        device_id: DeviceId,
        /// The change.
        event: QueueEvent<Arc<C2dMessage>>,
    },
    /// A change to the feedback queue.
    Feedback(QueueEvent<Arc<FeedbackBatch>>),
    /// A batch closed from the oldest pending records: takes them from the
    /// pending ones and enqueues the batch (an `Enqueued` event).
    FeedbackClosed(QueueEvent<Arc<FeedbackBatch>>),
    /// A feedback record waiting for its batch (written by snapshots only;
    /// live records follow from `Removed` events).
    FeedbackPending(FeedbackRecord),
}

impl HubEvent {
    /// The device this event belongs to, if any (a store may partition by it).
    pub fn device_id(&self) -> Option<&DeviceId> {
        match self {
            HubEvent::DeviceWritten(d) => Some(&d.device_id),
            HubEvent::DeviceDeleted(id) | HubEvent::Queue { device_id: id, .. } => Some(id),
            HubEvent::Feedback(_) | HubEvent::FeedbackClosed(_) | HubEvent::FeedbackPending(_) => {
                None
            }
        }
    }
}

/// A device's registry entry and queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceEntry {
    /// The registry record.
    pub device: Device,
    /// Its C2D queue.
    pub queue: LockedQueue<Arc<C2dMessage>>,
    /// The queue's next deadline as the hub-wide index holds it.
    indexed_deadline: Option<Timestamp>,
}

/// What a sender learns of an accepted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendReceipt {
    /// The sequence number in the device's queue.
    pub sequence_number: SequenceNumber,
    /// When accepted.
    pub enqueued_time: Timestamp,
    /// When it expires.
    pub expiry_time: Timestamp,
}

/// A message delivered to a device, locked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The device.
    pub device_id: DeviceId,
    /// The message.
    pub message: Arc<C2dMessage>,
    /// Its sequence number.
    pub sequence_number: SequenceNumber,
    /// When it was enqueued.
    pub enqueued_time: Timestamp,
    /// When it expires.
    pub expiry_time: Timestamp,
    /// Earlier deliveries that ended unsettled.
    pub delivery_count: u32,
    /// The lock's token (IoT Hub's ETag / AMQP delivery tag).
    pub lock_token: LockToken,
    /// When the lock lapses.
    pub locked_until: Timestamp,
}

/// A feedback batch delivered to the back end, locked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedbackDelivery {
    /// The records.
    pub batch: Arc<FeedbackBatch>,
    /// When the batch was closed.
    pub enqueued_time: Timestamp,
    /// Earlier deliveries that ended unsettled.
    pub delivery_count: u32,
    /// The lock's token.
    pub lock_token: LockToken,
}

/// Counters for `hub info`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Registered devices.
    pub devices: usize,
    /// Enabled devices.
    pub enabled_devices: usize,
    /// Messages held in all device queues.
    pub queued_messages: usize,
    /// Feedback records not yet batched.
    pub pending_feedback_records: usize,
    /// Feedback batches held.
    pub feedback_batches: usize,
}

/// The hub's whole state. Pure: no I/O, no clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubState {
    settings: HubSettings,
    devices: BTreeMap<DeviceId, DeviceEntry>,
    feedback_pending: VecDeque<FeedbackRecord>,
    feedback: LockedQueue<Arc<FeedbackBatch>>,
    deadlines: BTreeSet<(Timestamp, DeviceId)>,
}

impl HubState {
    /// An empty hub.
    pub fn new(settings: HubSettings) -> Self {
        HubState {
            settings,
            devices: BTreeMap::new(),
            feedback_pending: VecDeque::new(),
            feedback: LockedQueue::default(),
            deadlines: BTreeSet::new(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    /// A device's entry.
    pub fn device(&self, id: &DeviceId) -> Option<&DeviceEntry> {
        self.devices.get(id)
    }

    /// Devices in id order.
    pub fn devices(&self) -> impl Iterator<Item = &DeviceEntry> {
        self.devices.values()
    }

    /// The effective limits of a device.
    pub fn limits_of(&self, device: &Device) -> QueueLimits {
        device.limits.apply_to(&self.settings.limits)
    }

    /// Feedback records not yet batched.
    pub fn pending_feedback(&self) -> impl Iterator<Item = &FeedbackRecord> {
        self.feedback_pending.iter()
    }

    /// The feedback queue.
    pub fn feedback_queue(&self) -> &LockedQueue<Arc<FeedbackBatch>> {
        &self.feedback
    }

    /// Counters.
    pub fn stats(&self) -> HubStats {
        HubStats {
            devices: self.devices.len(),
            enabled_devices: self
                .devices
                .values()
                .filter(|e| e.device.status == DeviceStatus::Enabled)
                .count(),
            queued_messages: self.devices.values().map(|e| e.queue.len()).sum(),
            pending_feedback_records: self.feedback_pending.len(),
            feedback_batches: self.feedback.len(),
        }
    }

    /// The earliest instant at which [`HubState::tick`] has work.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let devices = self.deadlines.first().map(|(t, _)| *t);
        let flush = self.feedback_pending.front().map(|r| {
            r.enqueued_time_utc
                .saturating_add(self.settings.feedback.batch_window)
        });
        let fq = self.feedback.next_deadline();
        [devices, flush, fq].into_iter().flatten().min()
    }

    // ----- registry -----

    /// Creates or replaces a device (`PUT /devices/{id}`).
    pub fn put_device(
        &mut self,
        now: Timestamp,
        id: DeviceId,
        spec: DeviceSpec,
        if_match: IfMatch,
        fresh: FreshIdentity,
        out: &mut Vec<HubEvent>,
    ) -> Result<Device, HubError> {
        if let Some(body_id) = &spec.device_id {
            if *body_id != id {
                return Err(HubError::InvalidArgument(format!(
                    "deviceId '{body_id}' in the body does not match '{id}' in the path"
                )));
            }
        }
        spec.limits
            .validate(&self.settings.limits)
            .map_err(HubError::InvalidArgument)?;
        let existing = self.devices.get(&id).map(|e| &e.device);
        match (&if_match, existing) {
            (IfMatch::Absent, Some(_)) => return Err(HubError::DeviceAlreadyExists(id)),
            (IfMatch::Etag(_), None) => return Err(HubError::DeviceNotFound(id)),
            (IfMatch::Etag(e), Some(d)) if *e != d.etag() => {
                return Err(HubError::PreconditionFailed {
                    device: id,
                    expected: e.clone(),
                    current: d.etag(),
                })
            }
            _ => {}
        }
        let mut auth = spec.authentication;
        match auth.kind {
            AuthenticationType::Sas => {
                let given = auth.symmetric_key.take().unwrap_or_default();
                let keep = existing.and_then(|d| d.authentication.symmetric_key.clone());
                let pick = |given: String, kept: Option<String>, fresh: String| {
                    if !given.is_empty() {
                        given
                    } else {
                        kept.unwrap_or(fresh)
                    }
                };
                let key = SymmetricKey {
                    primary_key: pick(
                        given.primary_key,
                        keep.as_ref().map(|k| k.primary_key.clone()),
                        fresh.primary_key,
                    ),
                    secondary_key: pick(
                        given.secondary_key,
                        keep.map(|k| k.secondary_key),
                        fresh.secondary_key,
                    ),
                };
                validate_key(&key.primary_key).map_err(HubError::InvalidArgument)?;
                validate_key(&key.secondary_key).map_err(HubError::InvalidArgument)?;
                auth.symmetric_key = Some(key);
            }
            AuthenticationType::SelfSigned => {
                let t = &auth.x509_thumbprint;
                let primary = t.primary_thumbprint.as_deref().ok_or_else(|| {
                    HubError::InvalidArgument("selfSigned needs a primaryThumbprint".into())
                })?;
                validate_thumbprint(primary).map_err(HubError::InvalidArgument)?;
                if let Some(s) = &t.secondary_thumbprint {
                    validate_thumbprint(s).map_err(HubError::InvalidArgument)?;
                }
                auth.symmetric_key = None;
            }
            AuthenticationType::CertificateAuthority | AuthenticationType::None => {
                auth.symmetric_key = None;
            }
        }
        let device = match existing {
            Some(old) => Device {
                device_id: id,
                generation_id: old.generation_id.clone(),
                version: old.version + 1,
                status_updated_time: if old.status != spec.status {
                    Some(now)
                } else {
                    old.status_updated_time
                },
                status: spec.status,
                status_reason: spec.status_reason,
                authentication: auth,
                iot_edge: spec.iot_edge,
                limits: spec.limits,
            },
            None => Device {
                device_id: id,
                generation_id: fresh.generation_id,
                version: 1,
                status_updated_time: Some(now),
                status: spec.status,
                status_reason: spec.status_reason,
                authentication: auth,
                iot_edge: spec.iot_edge,
                limits: spec.limits,
            },
        };
        self.emit(out, HubEvent::DeviceWritten(Box::new(device.clone())));
        Ok(device)
    }

    /// Deletes a device and its queue (`DELETE /devices/{id}`).
    pub fn delete_device(
        &mut self,
        id: &DeviceId,
        if_match: IfMatch,
        out: &mut Vec<HubEvent>,
    ) -> Result<(), HubError> {
        let entry = self
            .devices
            .get(id)
            .ok_or_else(|| HubError::DeviceNotFound(id.clone()))?;
        if let IfMatch::Etag(e) = &if_match {
            if *e != entry.device.etag() {
                return Err(HubError::PreconditionFailed {
                    device: id.clone(),
                    expected: e.clone(),
                    current: entry.device.etag(),
                });
            }
        }
        self.emit(out, HubEvent::DeviceDeleted(id.clone()));
        Ok(())
    }

    // ----- C2D -----

    /// Accepts a message into a device's queue.
    pub fn send(
        &mut self,
        now: Timestamp,
        id: &DeviceId,
        message: C2dMessage,
        out: &mut Vec<HubEvent>,
    ) -> Result<SendReceipt, HubError> {
        let entry = self
            .devices
            .get(id)
            .ok_or_else(|| HubError::DeviceNotFound(id.clone()))?;
        if entry.device.status == DeviceStatus::Disabled {
            return Err(HubError::DeviceDisabled(id.clone()));
        }
        let limits = self.limits_of(&entry.device);
        let size = message.counted_size();
        if size > limits.max_message_size as usize {
            return Err(HubError::MessageTooLarge {
                size,
                max: limits.max_message_size,
            });
        }
        if let Some(mid) = &message.properties.message_id {
            if mid.len() > 128 {
                return Err(HubError::InvalidArgument(
                    "messageId must be at most 128 characters".into(),
                ));
            }
        }
        let latest = now.saturating_add(limits.max_ttl);
        let expiry_time = match message.properties.expiry_time_utc {
            Some(t) if t <= now => {
                return Err(HubError::InvalidExpiry(
                    "the expiry time is in the past".into(),
                ))
            }
            Some(t) if t > latest => {
                return Err(HubError::InvalidExpiry(format!(
                    "the expiry time is beyond the maximum TTL of {} s",
                    limits.max_ttl.as_secs()
                )))
            }
            Some(t) => t,
            None => now.saturating_add(limits.default_ttl),
        };
        self.sweep_device(now, id, out);
        let Some(entry) = self.devices.get(id) else {
            return Err(HubError::DeviceNotFound(id.clone()));
        };
        let policy = self.policy_for(entry);
        let event = entry
            .queue
            .decide_enqueue(now, expiry_time, Arc::new(message), &policy)
            .map_err(|_| HubError::QueueFull {
                device: id.clone(),
                depth: policy.max_depth,
            })?;
        let sequence_number = entry.queue.next_sequence_number();
        self.emit(
            out,
            HubEvent::Queue {
                device_id: id.clone(),
                event,
            },
        );
        Ok(SendReceipt {
            sequence_number,
            enqueued_time: now,
            expiry_time,
        })
    }

    /// Delivers the next available message to the device and locks it.
    pub fn receive(
        &mut self,
        now: Timestamp,
        id: &DeviceId,
        lock_token: LockToken,
        out: &mut Vec<HubEvent>,
    ) -> Result<Option<Delivery>, HubError> {
        self.enabled_device(id)?;
        self.sweep_device(now, id, out);
        let entry = self.enabled_device(id)?;
        let policy = self.policy_for(entry);
        let Some(event) = entry.queue.decide_receive(now, lock_token, &policy) else {
            return Ok(None);
        };
        let QueueEvent::Locked {
            seq, locked_until, ..
        } = &event
        else {
            return Ok(None);
        };
        let (seq, locked_until) = (*seq, *locked_until);
        self.emit(
            out,
            HubEvent::Queue {
                device_id: id.clone(),
                event,
            },
        );
        let item = self
            .devices
            .get(id)
            .and_then(|e| e.queue.get(seq))
            .ok_or(HubError::LockLost)?;
        Ok(Some(Delivery {
            device_id: id.clone(),
            message: item.payload.clone(),
            sequence_number: seq,
            enqueued_time: item.enqueued_time,
            expiry_time: item.expiry_time,
            delivery_count: item.delivery_count,
            lock_token,
            locked_until,
        }))
    }

    /// Completes the message locked by `token`.
    pub fn complete(
        &mut self,
        now: Timestamp,
        id: &DeviceId,
        token: LockToken,
        out: &mut Vec<HubEvent>,
    ) -> Result<(), HubError> {
        self.settle(now, id, token, Outcome::Completed, out)
    }

    /// Rejects (dead-letters) the message locked by `token`.
    pub fn reject(
        &mut self,
        now: Timestamp,
        id: &DeviceId,
        token: LockToken,
        out: &mut Vec<HubEvent>,
    ) -> Result<(), HubError> {
        self.settle(now, id, token, Outcome::Rejected, out)
    }

    /// Abandons the message locked by `token`: back to the queue, one more
    /// delivery counted.
    pub fn abandon(
        &mut self,
        now: Timestamp,
        id: &DeviceId,
        token: LockToken,
        out: &mut Vec<HubEvent>,
    ) -> Result<(), HubError> {
        self.device_entry(id)?;
        self.sweep_device(now, id, out);
        let entry = self.device_entry(id)?;
        let policy = self.policy_for(entry);
        let event = entry
            .queue
            .decide_abandon(now, token, &policy)
            .map_err(|_| HubError::LockLost)?;
        self.emit(
            out,
            HubEvent::Queue {
                device_id: id.clone(),
                event,
            },
        );
        Ok(())
    }

    /// Unlocks the message locked by `token` without counting a delivery:
    /// the delivery never reached the device (its receiver went away before
    /// the answer could be handed over).
    pub fn release(
        &mut self,
        now: Timestamp,
        id: &DeviceId,
        token: LockToken,
        out: &mut Vec<HubEvent>,
    ) -> Result<(), HubError> {
        self.device_entry(id)?;
        self.sweep_device(now, id, out);
        let entry = self.device_entry(id)?;
        let event = entry
            .queue
            .decide_release(token)
            .map_err(|_| HubError::LockLost)?;
        self.emit(
            out,
            HubEvent::Queue {
                device_id: id.clone(),
                event,
            },
        );
        Ok(())
    }

    /// Removes every message of a device; returns how many.
    pub fn purge(
        &mut self,
        now: Timestamp,
        id: &DeviceId,
        out: &mut Vec<HubEvent>,
    ) -> Result<u32, HubError> {
        let entry = self.device_entry(id)?;
        let events = entry.queue.decide_purge(now);
        let n = u32::try_from(events.len()).unwrap_or(u32::MAX);
        for event in events {
            self.emit(
                out,
                HubEvent::Queue {
                    device_id: id.clone(),
                    event,
                },
            );
        }
        Ok(n)
    }

    // ----- feedback -----

    /// Delivers the next feedback batch and locks it.
    pub fn receive_feedback(
        &mut self,
        now: Timestamp,
        lock_token: LockToken,
        out: &mut Vec<HubEvent>,
    ) -> Option<FeedbackDelivery> {
        self.sweep_feedback(now, out);
        let policy = self.feedback_policy();
        let event = self.feedback.decide_receive(now, lock_token, &policy)?;
        let QueueEvent::Locked { seq, .. } = &event else {
            return None;
        };
        let seq = *seq;
        self.emit(out, HubEvent::Feedback(event));
        let item = self.feedback.get(seq)?;
        Some(FeedbackDelivery {
            batch: item.payload.clone(),
            enqueued_time: item.enqueued_time,
            delivery_count: item.delivery_count,
            lock_token,
        })
    }

    /// Completes a feedback batch.
    pub fn complete_feedback(
        &mut self,
        now: Timestamp,
        token: LockToken,
        out: &mut Vec<HubEvent>,
    ) -> Result<(), HubError> {
        self.sweep_feedback(now, out);
        let event = self
            .feedback
            .decide_settle(now, token, Outcome::Completed)
            .map_err(|_| HubError::LockLost)?;
        self.emit(out, HubEvent::Feedback(event));
        Ok(())
    }

    /// Abandons a feedback batch: it returns to the feedback queue.
    pub fn abandon_feedback(
        &mut self,
        now: Timestamp,
        token: LockToken,
        out: &mut Vec<HubEvent>,
    ) -> Result<(), HubError> {
        self.sweep_feedback(now, out);
        let policy = self.feedback_policy();
        let event = self
            .feedback
            .decide_abandon(now, token, &policy)
            .map_err(|_| HubError::LockLost)?;
        self.emit(out, HubEvent::Feedback(event));
        Ok(())
    }

    /// Unlocks a feedback batch without counting a delivery (its receiver
    /// went away before the answer reached it).
    pub fn release_feedback(
        &mut self,
        now: Timestamp,
        token: LockToken,
        out: &mut Vec<HubEvent>,
    ) -> Result<(), HubError> {
        self.sweep_feedback(now, out);
        let event = self
            .feedback
            .decide_release(token)
            .map_err(|_| HubError::LockLost)?;
        self.emit(out, HubEvent::Feedback(event));
        Ok(())
    }

    // ----- time -----

    /// Does everything due by `now`: expires messages, returns lapsed locks,
    /// closes feedback batches whose window passed, sweeps the feedback queue.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<HubEvent>) {
        let due: Vec<DeviceId> = self
            .deadlines
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| id.clone())
            .collect();
        for id in due {
            self.sweep_device(now, &id, out);
        }
        self.flush_feedback(now, out);
        self.sweep_feedback(now, out);
    }

    fn flush_feedback(&mut self, now: Timestamp, out: &mut Vec<HubEvent>) {
        let fb = self.settings.feedback;
        let max = fb.max_batch_records.max(1);
        loop {
            let Some(first) = self.feedback_pending.front() else {
                return;
            };
            let window_over = first.enqueued_time_utc.saturating_add(fb.batch_window) <= now;
            if self.feedback_pending.len() < max && !window_over {
                return;
            }
            let n = self.feedback_pending.len().min(max);
            let records: Vec<FeedbackRecord> =
                self.feedback_pending.iter().take(n).cloned().collect();
            let policy = self.feedback_policy();
            let Ok(event) = self.feedback.decide_enqueue(
                now,
                now.saturating_add(fb.ttl),
                Arc::new(FeedbackBatch { records }),
                &policy,
            ) else {
                return;
            };
            self.emit(out, HubEvent::FeedbackClosed(event));
        }
    }

    // ----- replay -----

    /// Applies one event: the only place state changes.
    pub fn apply(&mut self, event: HubEvent) {
        match event {
            HubEvent::DeviceWritten(device) => {
                let device = *device;
                let id = device.device_id.clone();
                match self.devices.get_mut(&id) {
                    Some(entry) => entry.device = device,
                    None => {
                        self.devices.insert(
                            id,
                            DeviceEntry {
                                device,
                                queue: LockedQueue::default(),
                                indexed_deadline: None,
                            },
                        );
                    }
                }
            }
            HubEvent::DeviceDeleted(id) => {
                if let Some(mut entry) = self.devices.remove(&id) {
                    index_deadline(&mut self.deadlines, &id, &mut entry.indexed_deadline, None);
                }
            }
            HubEvent::Queue { device_id, event } => {
                let Some(entry) = self.devices.get_mut(&device_id) else {
                    debug_assert!(false, "queue event for unknown device {device_id}");
                    return;
                };
                let outcome = match &event {
                    QueueEvent::Removed { outcome, at, .. } => Some((*outcome, *at)),
                    _ => None,
                };
                let removed = entry.queue.apply(event);
                if let (Some((outcome, at)), Some(item)) = (outcome, removed) {
                    let ack = item.payload.properties.ack;
                    let wanted = if outcome.is_negative() {
                        ack.wants_negative()
                    } else {
                        ack.wants_positive()
                    };
                    if wanted {
                        self.feedback_pending.push_back(FeedbackRecord {
                            original_message_id: item.payload.properties.message_id.clone(),
                            device_id: device_id.clone(),
                            device_generation_id: entry.device.generation_id.clone(),
                            enqueued_time_utc: at,
                            status: outcome,
                        });
                    }
                }
                let next = entry.queue.next_deadline();
                index_deadline(
                    &mut self.deadlines,
                    &device_id,
                    &mut entry.indexed_deadline,
                    next,
                );
            }
            HubEvent::Feedback(event) => {
                self.feedback.apply(event);
            }
            HubEvent::FeedbackClosed(event) => {
                if let QueueEvent::Enqueued { payload, .. } = &event {
                    let n = payload.records.len().min(self.feedback_pending.len());
                    debug_assert_eq!(n, payload.records.len());
                    self.feedback_pending.drain(..n);
                }
                self.feedback.apply(event);
            }
            HubEvent::FeedbackPending(record) => self.feedback_pending.push_back(record),
        }
    }

    /// Events that rebuild this state from empty: a compact stand-in for the
    /// whole history, for checkpoints.
    pub fn snapshot_events(&self) -> Vec<HubEvent> {
        let mut out = Vec::new();
        for entry in self.devices.values() {
            out.push(HubEvent::DeviceWritten(Box::new(entry.device.clone())));
            for event in entry.queue.snapshot_events() {
                out.push(HubEvent::Queue {
                    device_id: entry.device.device_id.clone(),
                    event,
                });
            }
        }
        out.extend(
            self.feedback
                .snapshot_events()
                .into_iter()
                .map(HubEvent::Feedback),
        );
        out.extend(
            self.feedback_pending
                .iter()
                .cloned()
                .map(HubEvent::FeedbackPending),
        );
        out
    }

    // ----- internals -----

    fn emit(&mut self, out: &mut Vec<HubEvent>, event: HubEvent) {
        self.apply(event.clone());
        out.push(event);
    }

    fn device_entry(&self, id: &DeviceId) -> Result<&DeviceEntry, HubError> {
        self.devices
            .get(id)
            .ok_or_else(|| HubError::DeviceNotFound(id.clone()))
    }

    fn enabled_device(&self, id: &DeviceId) -> Result<&DeviceEntry, HubError> {
        let entry = self.device_entry(id)?;
        if entry.device.status == DeviceStatus::Disabled {
            return Err(HubError::DeviceDisabled(id.clone()));
        }
        Ok(entry)
    }

    fn settle(
        &mut self,
        now: Timestamp,
        id: &DeviceId,
        token: LockToken,
        outcome: Outcome,
        out: &mut Vec<HubEvent>,
    ) -> Result<(), HubError> {
        self.device_entry(id)?;
        self.sweep_device(now, id, out);
        let entry = self.device_entry(id)?;
        let event = entry
            .queue
            .decide_settle(now, token, outcome)
            .map_err(|_| HubError::LockLost)?;
        self.emit(
            out,
            HubEvent::Queue {
                device_id: id.clone(),
                event,
            },
        );
        Ok(())
    }

    fn policy_for(&self, entry: &DeviceEntry) -> QueuePolicy {
        self.policy_with(self.limits_of(&entry.device))
    }

    fn policy_with(&self, limits: QueueLimits) -> QueuePolicy {
        QueuePolicy {
            max_depth: limits.max_queue_depth,
            max_delivery_count: limits.max_delivery_count,
            count_mode: self.settings.delivery_count_mode,
            lock_timeout: limits.lock_timeout,
        }
    }

    fn feedback_policy(&self) -> QueuePolicy {
        let fb = self.settings.feedback;
        QueuePolicy {
            max_depth: u32::MAX,
            max_delivery_count: fb.max_delivery_count,
            count_mode: self.settings.delivery_count_mode,
            lock_timeout: fb.lock_timeout,
        }
    }

    fn sweep_device(&mut self, now: Timestamp, id: &DeviceId, out: &mut Vec<HubEvent>) {
        let Some(entry) = self.devices.get(id) else {
            return;
        };
        if entry.queue.next_deadline().is_none_or(|t| t > now) {
            return;
        }
        let policy = self.policy_for(entry);
        for event in entry.queue.decide_sweep(now, &policy) {
            self.emit(
                out,
                HubEvent::Queue {
                    device_id: id.clone(),
                    event,
                },
            );
        }
    }

    fn sweep_feedback(&mut self, now: Timestamp, out: &mut Vec<HubEvent>) {
        if self.feedback.next_deadline().is_none_or(|t| t > now) {
            return;
        }
        let policy = self.feedback_policy();
        for event in self.feedback.decide_sweep(now, &policy) {
            self.emit(out, HubEvent::Feedback(event));
        }
    }
}

/// Moves `id` in the hub-wide deadline index from `*indexed` to `next`.
fn index_deadline(
    deadlines: &mut BTreeSet<(Timestamp, DeviceId)>,
    id: &DeviceId,
    indexed: &mut Option<Timestamp>,
    next: Option<Timestamp>,
) {
    if *indexed == next {
        return;
    }
    if let Some(old) = indexed.take() {
        deadlines.remove(&(old, id.clone()));
    }
    if let Some(next) = next {
        deadlines.insert((next, id.clone()));
    }
    *indexed = next;
}
