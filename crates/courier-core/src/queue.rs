//! A locked queue: IoT Hub's C2D (and feedback) queue semantics, generic over
//! the payload.
//!
//! State machine (one item):
//!
//! | from      | event                         | to                          |
//! |-----------|-------------------------------|-----------------------------|
//! | —         | `Enqueued`                    | Enqueued (available)        |
//! | Enqueued  | `Locked` (receive)            | Invisible (locked)          |
//! | Invisible | `Returned` (abandon, lock expiry) | Enqueued, count updated |
//! | any       | `Removed` (complete, reject, expiry, count exceeded, purge) | gone (terminal) |
//!
//! Commands *decide* events from the current state; [`LockedQueue::apply`]
//! is the only code that changes state, so replaying the events rebuilds the
//! same queue. Events carry their results (new delivery count, lock deadline,
//! outcome time) so that replay never consults settings that may have changed.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::ids::{LockToken, SequenceNumber};
use crate::limits::DeliveryCountMode;
use crate::time::Timestamp;

/// How an item left the queue. For C2D messages these are IoT Hub's feedback
/// status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// Completed by the receiver (feedback `Success`).
    Completed,
    /// TTL passed (feedback `Expired`).
    Expired,
    /// Delivered the maximum number of times (feedback `DeliveryCountExceeded`).
    DeliveryCountExceeded,
    /// Rejected by the receiver (feedback `Rejected`).
    Rejected,
    /// Removed by a purge (feedback `Purged`).
    Purged,
}

impl Outcome {
    /// IoT Hub's feedback status name.
    pub fn status_name(self) -> &'static str {
        match self {
            Outcome::Completed => "Success",
            Outcome::Expired => "Expired",
            Outcome::DeliveryCountExceeded => "DeliveryCountExceeded",
            Outcome::Rejected => "Rejected",
            Outcome::Purged => "Purged",
        }
    }

    /// Parses a status name.
    pub fn from_status_name(s: &str) -> Option<Outcome> {
        [
            Outcome::Completed,
            Outcome::Expired,
            Outcome::DeliveryCountExceeded,
            Outcome::Rejected,
            Outcome::Purged,
        ]
        .into_iter()
        .find(|o| o.status_name() == s)
    }

    /// Whether this is a dead-lettering (asks for negative feedback).
    pub fn is_negative(self) -> bool {
        !matches!(self, Outcome::Completed)
    }
}

/// One change to a queue: what is persisted and replayed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueEvent<P> {
    /// A new item at the tail.
    Enqueued {
        /// Its sequence number (greater than every earlier one).
        seq: SequenceNumber,
        /// When it was accepted.
        enqueued_time: Timestamp,
        /// When it expires.
        expiry_time: Timestamp,
        /// The payload.
        payload: P,
    },
    /// Delivered and locked.
    Locked {
        /// The item.
        seq: SequenceNumber,
        /// The lock's token.
        lock_token: LockToken,
        /// When the lock lapses.
        locked_until: Timestamp,
    },
    /// Back to available after an abandon or a lapsed lock.
    Returned {
        /// The item.
        seq: SequenceNumber,
        /// Its delivery count from now on.
        delivery_count: u32,
    },
    /// The next sequence number is at least `next` (snapshots keep numbers
    /// growing after the queue emptied).
    Sequence {
        /// The floor for the next sequence number.
        next: SequenceNumber,
    },
    /// Gone for good.
    Removed {
        /// The item.
        seq: SequenceNumber,
        /// Why.
        outcome: Outcome,
        /// When.
        at: Timestamp,
    },
}

/// The lock held on a delivered item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lock {
    /// Its token.
    pub token: LockToken,
    /// When it lapses.
    pub until: Timestamp,
}

/// One queued item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item<P> {
    /// Sequence number.
    pub seq: SequenceNumber,
    /// When accepted.
    pub enqueued_time: Timestamp,
    /// When it expires.
    pub expiry_time: Timestamp,
    /// Earlier deliveries that ended without settlement (as counted by the mode).
    pub delivery_count: u32,
    /// The lock, while Invisible.
    pub lock: Option<Lock>,
    /// The payload.
    pub payload: P,
}

/// The rules a command applies; resolved per queue by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuePolicy {
    /// Items held at most.
    pub max_depth: u32,
    /// Deliveries before dead-lettering.
    pub max_delivery_count: u32,
    /// How the count grows.
    pub count_mode: DeliveryCountMode,
    /// Lock duration on receive.
    pub lock_timeout: Duration,
}

/// A refused enqueue: the queue is at its depth limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// A settlement named a lock that is not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockLost;

/// A per-item queue with locks, TTL and delivery counting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockedQueue<P> {
    items: BTreeMap<SequenceNumber, Item<P>>,
    available: BTreeSet<SequenceNumber>,
    locks: HashMap<LockToken, SequenceNumber>,
    lock_deadlines: BTreeSet<(Timestamp, SequenceNumber)>,
    expiries: BTreeSet<(Timestamp, SequenceNumber)>,
    next_seq: u64,
}

impl<P> Default for LockedQueue<P> {
    fn default() -> Self {
        LockedQueue {
            items: BTreeMap::new(),
            available: BTreeSet::new(),
            locks: HashMap::new(),
            lock_deadlines: BTreeSet::new(),
            expiries: BTreeSet::new(),
            next_seq: 1,
        }
    }
}

impl<P: Clone> LockedQueue<P> {
    /// Items held (Enqueued + Invisible).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Items available for delivery now (not locked).
    pub fn available_len(&self) -> usize {
        self.available.len()
    }

    /// The item with this sequence number.
    pub fn get(&self, seq: SequenceNumber) -> Option<&Item<P>> {
        self.items.get(&seq)
    }

    /// All items in sequence order.
    pub fn items(&self) -> impl Iterator<Item = &Item<P>> {
        self.items.values()
    }

    /// The sequence number the next enqueue will get.
    pub fn next_sequence_number(&self) -> SequenceNumber {
        SequenceNumber(self.next_seq)
    }

    /// The earliest lock lapse or expiry, when a sweep has work.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let lock = self.lock_deadlines.first().map(|(t, _)| *t);
        let exp = self.expiries.first().map(|(t, _)| *t);
        match (lock, exp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Events that expire items past their TTL and return or dead-letter
    /// items whose lock lapsed, as of `now`.
    pub fn decide_sweep(&self, now: Timestamp, policy: &QueuePolicy) -> Vec<QueueEvent<P>> {
        let mut out = Vec::new();
        let mut expired = BTreeSet::new();
        for &(t, seq) in &self.expiries {
            if t > now {
                break;
            }
            expired.insert(seq);
            out.push(QueueEvent::Removed {
                seq,
                outcome: Outcome::Expired,
                at: now,
            });
        }
        for &(t, seq) in &self.lock_deadlines {
            if t > now {
                break;
            }
            if expired.contains(&seq) {
                continue;
            }
            if let Some(item) = self.items.get(&seq) {
                let count = match policy.count_mode {
                    DeliveryCountMode::EveryDelivery => item.delivery_count.saturating_add(1),
                    DeliveryCountMode::AbandonOnly => item.delivery_count,
                };
                out.push(return_or_dead_letter(seq, count, policy, now));
            }
        }
        out
    }

    /// The event enqueuing `payload`, or `QueueFull`. Sweep first so that
    /// expired items do not count.
    pub fn decide_enqueue(
        &self,
        now: Timestamp,
        expiry_time: Timestamp,
        payload: P,
        policy: &QueuePolicy,
    ) -> Result<QueueEvent<P>, QueueFull> {
        if self.items.len() >= policy.max_depth as usize {
            return Err(QueueFull);
        }
        Ok(QueueEvent::Enqueued {
            seq: SequenceNumber(self.next_seq),
            enqueued_time: now,
            expiry_time,
            payload,
        })
    }

    /// The event locking the first available item, if any. Sweep first so
    /// that expired items are not delivered.
    pub fn decide_receive(
        &self,
        now: Timestamp,
        lock_token: LockToken,
        policy: &QueuePolicy,
    ) -> Option<QueueEvent<P>> {
        let seq = *self.available.first()?;
        Some(QueueEvent::Locked {
            seq,
            lock_token,
            locked_until: now.saturating_add(policy.lock_timeout),
        })
    }

    /// The event settling the item locked by `token` with `outcome`
    /// (`Completed` or `Rejected`). Sweep first so that a lapsed lock is lost.
    pub fn decide_settle(
        &self,
        now: Timestamp,
        token: LockToken,
        outcome: Outcome,
    ) -> Result<QueueEvent<P>, LockLost> {
        let seq = *self.locks.get(&token).ok_or(LockLost)?;
        Ok(QueueEvent::Removed {
            seq,
            outcome,
            at: now,
        })
    }

    /// The event abandoning the item locked by `token`: back to available
    /// with one more delivery counted, or dead-lettered past the maximum.
    pub fn decide_abandon(
        &self,
        now: Timestamp,
        token: LockToken,
        policy: &QueuePolicy,
    ) -> Result<QueueEvent<P>, LockLost> {
        let seq = *self.locks.get(&token).ok_or(LockLost)?;
        let item = self.items.get(&seq).ok_or(LockLost)?;
        let count = item.delivery_count.saturating_add(1);
        Ok(return_or_dead_letter(seq, count, policy, now))
    }

    /// The event unlocking the item locked by `token` without counting a
    /// delivery: for a delivery that never reached its receiver (it went
    /// away before the answer could be handed over).
    pub fn decide_release(&self, token: LockToken) -> Result<QueueEvent<P>, LockLost> {
        let seq = *self.locks.get(&token).ok_or(LockLost)?;
        let item = self.items.get(&seq).ok_or(LockLost)?;
        Ok(QueueEvent::Returned {
            seq,
            delivery_count: item.delivery_count,
        })
    }

    /// Events removing every item as `Purged`.
    pub fn decide_purge(&self, now: Timestamp) -> Vec<QueueEvent<P>> {
        self.items
            .keys()
            .map(|&seq| QueueEvent::Removed {
                seq,
                outcome: Outcome::Purged,
                at: now,
            })
            .collect()
    }

    /// Applies one event; returns the removed item for `Removed`. Events that
    /// do not fit the state (a replay bug) are ignored in release builds and
    /// caught by debug assertions.
    pub fn apply(&mut self, event: QueueEvent<P>) -> Option<Item<P>> {
        match event {
            QueueEvent::Enqueued {
                seq,
                enqueued_time,
                expiry_time,
                payload,
            } => {
                debug_assert!(seq.0 >= self.next_seq, "sequence numbers must grow");
                self.next_seq = self.next_seq.max(seq.0 + 1);
                self.expiries.insert((expiry_time, seq));
                self.available.insert(seq);
                self.items.insert(
                    seq,
                    Item {
                        seq,
                        enqueued_time,
                        expiry_time,
                        delivery_count: 0,
                        lock: None,
                        payload,
                    },
                );
                None
            }
            QueueEvent::Locked {
                seq,
                lock_token,
                locked_until,
            } => {
                let item = self.items.get_mut(&seq);
                debug_assert!(item.as_ref().is_some_and(|i| i.lock.is_none()));
                if let Some(item) = item {
                    if let Some(old) = item.lock.take() {
                        self.locks.remove(&old.token);
                        self.lock_deadlines.remove(&(old.until, seq));
                    }
                    self.available.remove(&seq);
                    item.lock = Some(Lock {
                        token: lock_token,
                        until: locked_until,
                    });
                    self.locks.insert(lock_token, seq);
                    self.lock_deadlines.insert((locked_until, seq));
                }
                None
            }
            QueueEvent::Returned {
                seq,
                delivery_count,
            } => {
                if let Some(item) = self.items.get_mut(&seq) {
                    if let Some(lock) = item.lock.take() {
                        self.locks.remove(&lock.token);
                        self.lock_deadlines.remove(&(lock.until, seq));
                    }
                    item.delivery_count = delivery_count;
                    self.available.insert(seq);
                } else {
                    debug_assert!(false, "Returned for an unknown item");
                }
                None
            }
            QueueEvent::Sequence { next } => {
                self.next_seq = self.next_seq.max(next.0);
                None
            }
            QueueEvent::Removed { seq, .. } => {
                let item = self.items.remove(&seq);
                debug_assert!(item.is_some(), "Removed for an unknown item");
                let item = item?;
                if let Some(lock) = item.lock {
                    self.locks.remove(&lock.token);
                    self.lock_deadlines.remove(&(lock.until, seq));
                }
                self.available.remove(&seq);
                self.expiries.remove(&(item.expiry_time, seq));
                Some(item)
            }
        }
    }
}

impl<P: Clone> LockedQueue<P> {
    /// Events that rebuild this queue from empty: each item's enqueue, its
    /// delivery count and its lock, then the sequence floor.
    pub fn snapshot_events(&self) -> Vec<QueueEvent<P>> {
        let mut out = Vec::with_capacity(self.items.len() * 2 + 1);
        for item in self.items.values() {
            out.push(QueueEvent::Enqueued {
                seq: item.seq,
                enqueued_time: item.enqueued_time,
                expiry_time: item.expiry_time,
                payload: item.payload.clone(),
            });
            if item.delivery_count > 0 {
                out.push(QueueEvent::Returned {
                    seq: item.seq,
                    delivery_count: item.delivery_count,
                });
            }
            if let Some(lock) = item.lock {
                out.push(QueueEvent::Locked {
                    seq: item.seq,
                    lock_token: lock.token,
                    locked_until: lock.until,
                });
            }
        }
        out.push(QueueEvent::Sequence {
            next: SequenceNumber(self.next_seq),
        });
        out
    }
}

fn return_or_dead_letter<P>(
    seq: SequenceNumber,
    count: u32,
    policy: &QueuePolicy,
    now: Timestamp,
) -> QueueEvent<P> {
    if count >= policy.max_delivery_count {
        QueueEvent::Removed {
            seq,
            outcome: Outcome::DeliveryCountExceeded,
            at: now,
        }
    } else {
        QueueEvent::Returned {
            seq,
            delivery_count: count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> QueuePolicy {
        QueuePolicy {
            max_depth: 3,
            max_delivery_count: 2,
            count_mode: DeliveryCountMode::EveryDelivery,
            lock_timeout: Duration::from_secs(60),
        }
    }

    fn t(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    fn tok(n: u8) -> LockToken {
        LockToken([n; 16])
    }

    fn step<P: Clone>(q: &mut LockedQueue<P>, e: QueueEvent<P>) {
        q.apply(e);
    }

    #[test]
    fn delivers_in_order_and_locks() {
        let mut q = LockedQueue::default();
        let p = policy();
        for i in 0..3 {
            let e = q.decide_enqueue(t(0), t(10_000_000), i, &p).unwrap();
            step(&mut q, e);
        }
        assert_eq!(q.decide_enqueue(t(0), t(1), 9, &p), Err(QueueFull));
        let e = q.decide_receive(t(1), tok(1), &p).unwrap();
        assert!(matches!(
            e,
            QueueEvent::Locked {
                seq: SequenceNumber(1),
                ..
            }
        ));
        step(&mut q, e);
        let e = q.decide_receive(t(1), tok(2), &p).unwrap();
        assert!(matches!(
            e,
            QueueEvent::Locked {
                seq: SequenceNumber(2),
                ..
            }
        ));
        step(&mut q, e);
        assert_eq!(q.available_len(), 1);
        let e = q.decide_settle(t(2), tok(1), Outcome::Completed).unwrap();
        step(&mut q, e);
        assert_eq!(q.len(), 2);
        assert_eq!(
            q.decide_settle(t(2), tok(1), Outcome::Completed),
            Err(LockLost)
        );
    }

    #[test]
    fn abandon_returns_to_original_position_and_counts() {
        let mut q = LockedQueue::default();
        let p = policy();
        for i in 0..2 {
            let e = q.decide_enqueue(t(0), t(10_000_000), i, &p).unwrap();
            step(&mut q, e);
        }
        let e = q.decide_receive(t(1), tok(1), &p).unwrap();
        step(&mut q, e);
        let e = q.decide_abandon(t(2), tok(1), &p).unwrap();
        assert_eq!(
            e,
            QueueEvent::Returned {
                seq: SequenceNumber(1),
                delivery_count: 1
            }
        );
        step(&mut q, e);
        let e = q.decide_receive(t(3), tok(2), &p).unwrap();
        assert!(matches!(
            e,
            QueueEvent::Locked {
                seq: SequenceNumber(1),
                ..
            }
        ));
        step(&mut q, e);
        // Second abandon reaches max_delivery_count = 2.
        let e = q.decide_abandon(t(4), tok(2), &p).unwrap();
        assert!(matches!(
            e,
            QueueEvent::Removed {
                outcome: Outcome::DeliveryCountExceeded,
                ..
            }
        ));
    }

    #[test]
    fn lock_expiry_counts_only_in_every_delivery_mode() {
        for (mode, expected) in [
            (DeliveryCountMode::EveryDelivery, 1),
            (DeliveryCountMode::AbandonOnly, 0),
        ] {
            let p = QueuePolicy {
                count_mode: mode,
                ..policy()
            };
            let mut q = LockedQueue::default();
            let e = q.decide_enqueue(t(0), t(10_000_000), (), &p).unwrap();
            step(&mut q, e);
            let e = q.decide_receive(t(0), tok(1), &p).unwrap();
            step(&mut q, e);
            assert!(q.decide_sweep(t(59_999), &p).is_empty());
            assert_eq!(q.next_deadline(), Some(t(60_000)));
            let evs = q.decide_sweep(t(60_000), &p);
            assert_eq!(
                evs,
                vec![QueueEvent::Returned {
                    seq: SequenceNumber(1),
                    delivery_count: expected
                }]
            );
        }
    }

    #[test]
    fn expiry_wins_over_lock_lapse() {
        let p = policy();
        let mut q = LockedQueue::default();
        let e = q.decide_enqueue(t(0), t(1000), (), &p).unwrap();
        step(&mut q, e);
        let e = q.decide_receive(t(0), tok(1), &p).unwrap();
        step(&mut q, e);
        let evs = q.decide_sweep(t(70_000), &p);
        assert_eq!(
            evs,
            vec![QueueEvent::Removed {
                seq: SequenceNumber(1),
                outcome: Outcome::Expired,
                at: t(70_000)
            }]
        );
    }
}
