//! The C2D state machine's transitions, in memory only (no event encoding, no store): through
//! `HubState` for one device with an injected clock (what the engine runs per command), and
//! on a bare `LockedQueue` (the queue's own bookkeeping).
//!
//! Enqueue, lock and complete are each timed over 1,000 consecutive calls on a prepared state
//! (the queue grows to, or drains from, 1,000 messages); the abandon cycle is enqueue → lock →
//! abandon → lock → reject of one message on an empty queue; the sweeps return (lock expiry)
//! or expire (TTL) 10,000 messages in one call. Messages ask for no feedback (`ack` none), so
//! no feedback records pile up.
//!
//! Run: `cargo bench -p courier-core --bench queue` (short run: append
//! `-- --warm-up-time 1 --measurement-time 3`). `cargo test --benches` runs each once.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use courier_core::queue::QueuePolicy;
use courier_core::{
    C2dMessage, Clock, DeliveryCountMode, DeviceId, DeviceSpec, FreshIdentity, HubEvent,
    HubSettings, HubState, IfMatch, LockToken, LockedQueue, MessageProperties, Outcome, QueueEvent,
    QueueLimits, Timestamp,
};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// Calls timed per prepared state in the step benches.
const CHUNK: usize = 1_000;
/// Messages in the sweep benches.
const SWEPT: usize = 10_000;
const START: i64 = 1_795_410_000_000;
const LOCK: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(3600);

/// The injected clock: one millisecond later at every reading. Each prepared state carries
/// its own, so a clone starts again from the state's time and its messages never expire
/// during a measurement.
struct StepClock(AtomicI64);

impl StepClock {
    fn new() -> Self {
        StepClock(AtomicI64::new(START))
    }
}

impl Clone for StepClock {
    fn clone(&self) -> Self {
        StepClock(AtomicI64::new(self.0.load(Ordering::Relaxed)))
    }
}

impl Clock for StepClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.fetch_add(1, Ordering::Relaxed))
    }
}

/// Lock token number `n`.
fn token(n: usize) -> LockToken {
    LockToken((n as u128 + 1).to_le_bytes())
}

/// A 256-byte message with a message id and one application property, no feedback asked.
fn message(n: usize) -> C2dMessage {
    C2dMessage {
        properties: MessageProperties {
            message_id: Some(format!("msg-{n:08}")),
            correlation_id: Some("corr-df9c619e".into()),
            application: vec![("command".into(), "set-temperature".into())],
            ..Default::default()
        },
        body: vec![0x5a; 256],
    }
}

/// One device's hub state and what the timed calls consume.
#[derive(Clone)]
struct Hub {
    state: HubState,
    id: DeviceId,
    /// Messages to send, taken from the back.
    messages: Vec<C2dMessage>,
    /// Tokens of the locked messages, oldest first.
    locked: Vec<LockToken>,
    next_token: usize,
    out: Vec<HubEvent>,
    clock: StepClock,
}

impl Hub {
    fn new() -> Self {
        let settings = HubSettings {
            limits: QueueLimits {
                max_queue_depth: 2 * SWEPT as u32,
                lock_timeout: LOCK,
                default_ttl: TTL,
                ..QueueLimits::default()
            },
            ..HubSettings::default()
        };
        let mut state = HubState::new(settings);
        let id = DeviceId::new("sensor-0042").unwrap();
        let key = "wMM1Z/MRGFC67W/7+p6FRdLdz9Wq+Wdn5Gc0pPeQCeQ=".to_owned();
        let fresh = FreshIdentity {
            generation_id: "638000000000000000".into(),
            primary_key: key.clone(),
            secondary_key: key,
        };
        let mut out = Vec::new();
        state
            .put_device(
                Timestamp(START),
                id.clone(),
                DeviceSpec::default(),
                IfMatch::Absent,
                fresh,
                &mut out,
            )
            .unwrap();
        Hub {
            state,
            id,
            messages: Vec::new(),
            locked: Vec::new(),
            next_token: 0,
            out: Vec::new(),
            clock: StepClock::new(),
        }
    }

    fn with_messages(mut self, n: usize) -> Self {
        self.messages = (0..n).map(message).collect();
        self
    }

    fn send(&mut self) {
        let msg = self.messages.pop().expect("a message to send");
        let now = self.clock.now();
        self.state.send(now, &self.id, msg, &mut self.out).unwrap();
        self.out.clear();
    }

    fn receive(&mut self) -> LockToken {
        let t = token(self.next_token);
        self.next_token += 1;
        let now = self.clock.now();
        let got = self.state.receive(now, &self.id, t, &mut self.out).unwrap();
        assert!(got.is_some(), "a message to receive");
        self.out.clear();
        self.locked.push(t);
        t
    }

    fn complete(&mut self, t: LockToken) {
        let now = self.clock.now();
        self.state
            .complete(now, &self.id, t, &mut self.out)
            .unwrap();
        self.out.clear();
    }

    fn abandon(&mut self, t: LockToken) {
        let now = self.clock.now();
        self.state.abandon(now, &self.id, t, &mut self.out).unwrap();
        self.out.clear();
    }

    fn reject(&mut self, t: LockToken) {
        let now = self.clock.now();
        self.state.reject(now, &self.id, t, &mut self.out).unwrap();
        self.out.clear();
    }
}

/// Times `CHUNK` calls of `op` per clone of `prepared`, over as many clones as `iters` needs;
/// cloning and dropping the states is not timed.
fn chunked<S: Clone>(iters: u64, prepared: &S, mut op: impl FnMut(&mut S)) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0u64;
    while done < iters {
        let n = (iters - done).min(CHUNK as u64) as usize;
        let mut state = prepared.clone();
        let started = Instant::now();
        for _ in 0..n {
            op(&mut state);
        }
        total += started.elapsed();
        done += n as u64;
        drop(black_box(state));
    }
    total
}

/// `HubState` for one device: send, receive, complete, the abandon cycle, and the sweeps.
fn bench_hub(c: &mut Criterion) {
    let empty = Hub::new().with_messages(CHUNK);
    let mut queued = empty.clone();
    for _ in 0..CHUNK {
        queued.send();
    }
    let mut locked = queued.clone();
    for _ in 0..CHUNK {
        locked.receive();
    }
    locked.locked.reverse();

    let mut group = c.benchmark_group("hub_state");
    group.throughput(Throughput::Elements(1));
    group.bench_function("send", |b| {
        b.iter_custom(|iters| chunked(iters, &empty, |h| h.send()))
    });
    group.bench_function("receive", |b| {
        b.iter_custom(|iters| {
            chunked(iters, &queued, |h| {
                h.receive();
            })
        })
    });
    group.bench_function("complete", |b| {
        b.iter_custom(|iters| {
            chunked(iters, &locked, |h| {
                let t = h.locked.pop().unwrap();
                h.complete(t);
            })
        })
    });
    let mut cycling = Hub::new();
    let template = message(0);
    group.bench_function("send_receive_complete", |b| {
        b.iter_batched(
            || template.clone(),
            |msg| {
                let h = &mut cycling;
                h.messages.push(msg);
                h.send();
                let t = h.receive();
                h.complete(t);
                h.locked.clear();
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("send_receive_abandon_receive_reject", |b| {
        b.iter_batched(
            || template.clone(),
            |msg| {
                let h = &mut cycling;
                h.messages.push(msg);
                h.send();
                let t = h.receive();
                h.abandon(t);
                let t = h.receive();
                h.reject(t);
                h.locked.clear();
            },
            BatchSize::SmallInput,
        )
    });
    assert_eq!(cycling.state.stats().queued_messages, 0);
    group.finish();

    // 10,000 messages sent at once, each then locked at a different millisecond.
    let mut many = Hub::new().with_messages(SWEPT);
    let t0 = many.clock.now();
    for _ in 0..SWEPT {
        many.send();
    }
    for _ in 0..SWEPT {
        many.receive();
    }
    let after_locks = many.clock.now().saturating_add(LOCK);
    let after_ttl = t0
        .saturating_add(TTL)
        .saturating_add(Duration::from_secs(60));
    let mut group = c.benchmark_group("hub_state_sweep");
    group.throughput(Throughput::Elements(SWEPT as u64));
    group.sample_size(10);
    for (name, now) in [
        ("lock_expiry_10k", after_locks),
        ("ttl_expiry_10k", after_ttl),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || many.state.clone(),
                |mut state| {
                    let mut out = Vec::new();
                    state.tick(now, &mut out);
                    assert_eq!(out.len(), SWEPT);
                    (state, out)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// A bare queue of `u64` payloads: the transitions as `decide_*` + `apply`.
#[derive(Clone)]
struct Bare {
    queue: LockedQueue<u64>,
    locked: Vec<LockToken>,
    next_token: usize,
    clock: StepClock,
}

const POLICY: QueuePolicy = QueuePolicy {
    max_depth: u32::MAX,
    max_delivery_count: 10,
    count_mode: DeliveryCountMode::EveryDelivery,
    lock_timeout: LOCK,
};

impl Bare {
    fn new() -> Self {
        Bare {
            queue: LockedQueue::default(),
            locked: Vec::new(),
            next_token: 0,
            clock: StepClock::new(),
        }
    }

    fn enqueue(&mut self) {
        let now = self.clock.now();
        let expiry = now.saturating_add(TTL);
        let n = self.queue.next_sequence_number().0;
        let e = self.queue.decide_enqueue(now, expiry, n, &POLICY).unwrap();
        self.queue.apply(e);
    }

    fn lock(&mut self) -> LockToken {
        let t = token(self.next_token);
        self.next_token += 1;
        let now = self.clock.now();
        let e = self.queue.decide_receive(now, t, &POLICY).unwrap();
        self.queue.apply(e);
        self.locked.push(t);
        t
    }

    fn settle(&mut self, t: LockToken, outcome: Outcome) {
        let now = self.clock.now();
        let e = self.queue.decide_settle(now, t, outcome).unwrap();
        assert!(self.queue.apply(e).is_some());
    }

    fn abandon(&mut self, t: LockToken) {
        let now = self.clock.now();
        let e = self.queue.decide_abandon(now, t, &POLICY).unwrap();
        assert!(matches!(e, QueueEvent::Returned { .. }));
        self.queue.apply(e);
    }

    fn sweep(&mut self, now: Timestamp) -> usize {
        let events = self.queue.decide_sweep(now, &POLICY);
        let n = events.len();
        for e in events {
            self.queue.apply(e);
        }
        n
    }
}

/// `LockedQueue` alone: enqueue, lock, complete, the abandon cycle, and the sweeps.
fn bench_locked_queue(c: &mut Criterion) {
    let empty = Bare::new();
    let mut queued = empty.clone();
    for _ in 0..CHUNK {
        queued.enqueue();
    }
    let mut locked = queued.clone();
    for _ in 0..CHUNK {
        locked.lock();
    }
    locked.locked.reverse();

    let mut group = c.benchmark_group("locked_queue");
    group.throughput(Throughput::Elements(1));
    group.bench_function("enqueue", |b| {
        b.iter_custom(|iters| chunked(iters, &empty, |q| q.enqueue()))
    });
    group.bench_function("lock", |b| {
        b.iter_custom(|iters| {
            chunked(iters, &queued, |q| {
                q.lock();
            })
        })
    });
    group.bench_function("complete", |b| {
        b.iter_custom(|iters| {
            chunked(iters, &locked, |q| {
                let t = q.locked.pop().unwrap();
                q.settle(t, Outcome::Completed);
            })
        })
    });
    let mut cycling = Bare::new();
    group.bench_function("enqueue_lock_complete", |b| {
        b.iter(|| {
            let q = &mut cycling;
            q.enqueue();
            let t = q.lock();
            q.settle(t, Outcome::Completed);
            q.locked.clear();
        })
    });
    group.bench_function("enqueue_lock_abandon_lock_reject", |b| {
        b.iter(|| {
            let q = &mut cycling;
            q.enqueue();
            let t = q.lock();
            q.abandon(t);
            let t = q.lock();
            q.settle(t, Outcome::Rejected);
            q.locked.clear();
        })
    });
    assert!(cycling.queue.is_empty());
    group.finish();

    let mut many = Bare::new();
    let t0 = many.clock.now();
    for _ in 0..SWEPT {
        many.enqueue();
    }
    for _ in 0..SWEPT {
        many.lock();
    }
    let after_locks = many.clock.now().saturating_add(LOCK);
    let after_ttl = t0
        .saturating_add(TTL)
        .saturating_add(Duration::from_secs(60));
    let mut group = c.benchmark_group("locked_queue_sweep");
    group.throughput(Throughput::Elements(SWEPT as u64));
    group.sample_size(10);
    for (name, now) in [
        ("lock_expiry_10k", after_locks),
        ("ttl_expiry_10k", after_ttl),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || many.clone(),
                |mut q| {
                    assert_eq!(q.sweep(now), SWEPT);
                    q
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_hub, bench_locked_queue
}
criterion_main!(benches);
