//! The engine over the real write-ahead log: answers come after durability,
//! a restart replays to the same queues, locks survive restarts and lapse on
//! the injected clock, feedback flows, long-polls wake on arrival.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use courier_core::{
    AckMode, C2dMessage, Clock, DeviceId, DeviceSpec, HubError, HubSettings, IfMatch,
    MessageProperties, Outcome, Timestamp,
};
use courier_hub::{Error, Hub, HubOptions};
use courier_store::{WalOptions, WalStore};

/// A clock the test moves by hand: time is a source of non-determinism.
struct ManualClock(AtomicI64);

impl ManualClock {
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

fn open(dir: &std::path::Path, clock: Arc<ManualClock>) -> (Hub, courier_hub::HubTask) {
    let store = WalStore::open(dir, WalOptions::default()).unwrap();
    let (hub, task, _) = Hub::open(
        Arc::new(store),
        HubSettings::default(),
        clock,
        HubOptions::default(),
    )
    .unwrap();
    (hub, task)
}

fn msg(id: &str, ack: AckMode) -> C2dMessage {
    C2dMessage {
        properties: MessageProperties {
            message_id: Some(id.into()),
            ack,
            ..Default::default()
        },
        body: id.as_bytes().to_vec(),
    }
}

async fn stop(hub: Hub, task: courier_hub::HubTask) {
    hub.shutdown().await;
    task.await.unwrap();
}

#[tokio::test]
async fn messages_and_locks_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(AtomicI64::new(1_700_000_000_000)));
    let dev = DeviceId::new("dev1").unwrap();
    let (hub, task) = open(dir.path(), clock.clone());
    hub.put_device(dev.clone(), DeviceSpec::default(), IfMatch::Absent)
        .await
        .unwrap();
    for i in 0..3 {
        hub.send(&dev, msg(&format!("m{i}"), AckMode::Full))
            .await
            .unwrap();
    }
    let first = hub.receive(&dev).await.unwrap().unwrap();
    assert_eq!(first.message.properties.message_id.as_deref(), Some("m0"));
    let second = hub.receive(&dev).await.unwrap().unwrap();
    hub.complete(&dev, second.lock_token).await.unwrap();
    stop(hub, task).await;

    let (hub, task) = open(dir.path(), clock.clone());
    let info = hub.get_device(&dev).await.unwrap();
    assert_eq!(
        info.cloud_to_device_message_count, 2,
        "m0 locked + m2 queued"
    );
    // m0 is still locked: the next receive gets m2.
    let next = hub.receive(&dev).await.unwrap().unwrap();
    assert_eq!(next.message.properties.message_id.as_deref(), Some("m2"));
    // The old lock token still settles... until its lock lapses.
    clock.advance(Duration::from_secs(61));
    assert_eq!(
        hub.complete(&dev, first.lock_token).await,
        Err(Error::Hub(HubError::LockLost))
    );
    let again = hub.receive(&dev).await.unwrap().unwrap();
    assert_eq!(again.message.properties.message_id.as_deref(), Some("m0"));
    assert_eq!(again.delivery_count, 1);
    stop(hub, task).await;
}

#[tokio::test]
async fn feedback_is_batched_and_received() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(AtomicI64::new(1_700_000_000_000)));
    let dev = DeviceId::new("dev1").unwrap();
    let (hub, task) = open(dir.path(), clock.clone());
    let created = hub
        .put_device(dev.clone(), DeviceSpec::default(), IfMatch::Absent)
        .await
        .unwrap();
    hub.send(&dev, msg("ok", AckMode::Positive)).await.unwrap();
    hub.send(&dev, msg("bad", AckMode::Negative)).await.unwrap();
    let a = hub.receive(&dev).await.unwrap().unwrap();
    hub.complete(&dev, a.lock_token).await.unwrap();
    let b = hub.receive(&dev).await.unwrap().unwrap();
    hub.reject(&dev, b.lock_token).await.unwrap();
    assert!(
        hub.receive_feedback().await.unwrap().is_none(),
        "window still open"
    );
    clock.advance(Duration::from_secs(1));
    let fb = hub
        .receive_feedback_wait(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("a batch once the window passed");
    let got: Vec<_> = fb
        .batch
        .records
        .iter()
        .map(|r| (r.original_message_id.clone().unwrap(), r.status))
        .collect();
    assert_eq!(
        got,
        vec![
            ("ok".into(), Outcome::Completed),
            ("bad".into(), Outcome::Rejected)
        ]
    );
    assert_eq!(
        fb.batch.records[0].device_generation_id,
        created.device.generation_id
    );
    hub.complete_feedback(fb.lock_token).await.unwrap();
    assert!(hub.receive_feedback().await.unwrap().is_none());
    stop(hub, task).await;
}

#[tokio::test]
async fn a_waiting_receiver_wakes_when_a_message_arrives() {
    let (_dir, hub, task, dev) = hub_with_one_device().await;
    let waiter = {
        let hub = hub.clone();
        let dev = dev.clone();
        tokio::spawn(async move { hub.receive_wait(&dev, Duration::from_secs(30)).await })
    };
    // Let the waiter register; it must not matter whether it has or not.
    tokio::task::yield_now().await;
    hub.send(&dev, msg("wake", AckMode::None)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken well before its own 30 s deadline")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.message.body, b"wake");
    stop(hub, task).await;
}

#[tokio::test]
async fn many_concurrent_sends_are_all_durable_and_ordered_per_device() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(AtomicI64::new(1_700_000_000_000)));
    let (hub, task) = open(dir.path(), clock.clone());
    let spec = DeviceSpec {
        limits: courier_core::LimitOverrides {
            max_queue_depth: Some(1000),
            ..Default::default()
        },
        ..Default::default()
    };
    let devs: Vec<DeviceId> = (0..8)
        .map(|i| DeviceId::new(format!("d{i}")).unwrap())
        .collect();
    for d in &devs {
        hub.put_device(d.clone(), spec.clone(), IfMatch::Absent)
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for d in devs.clone() {
        let hub = hub.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                hub.send(&d, msg(&format!("{i}"), AckMode::None))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    stop(hub, task).await;
    let (hub, task) = open(dir.path(), clock);
    for d in &devs {
        for i in 0..100 {
            let got = hub.receive(d).await.unwrap().unwrap();
            assert_eq!(got.message.body, format!("{i}").as_bytes());
            hub.complete(d, got.lock_token).await.unwrap();
        }
        assert!(hub.receive(d).await.unwrap().is_none());
    }
    stop(hub, task).await;
}

#[tokio::test]
async fn a_full_queue_refuses_with_403004_and_loses_nothing() {
    let (_dir, hub, task, dev) = hub_with_one_device().await;
    for i in 0..50 {
        hub.send(&dev, msg(&format!("{i}"), AckMode::None))
            .await
            .unwrap();
    }
    let err = hub
        .send(&dev, msg("51st", AckMode::None))
        .await
        .unwrap_err();
    assert_eq!(err.code().number(), 403004);
    assert_eq!(
        hub.get_device(&dev)
            .await
            .unwrap()
            .cloud_to_device_message_count,
        50
    );
    stop(hub, task).await;
}

#[tokio::test]
async fn a_receive_whose_caller_went_away_releases_the_message_at_once() {
    let (_dir, hub, task, dev) = hub_with_one_device().await;
    hub.send(&dev, msg("m1", AckMode::None)).await.unwrap();
    // Polled once, the receive is queued to the engine; then the caller is
    // gone (as an HTTP client that disconnects) before the answer arrives.
    let dropped_pending = tokio::select! {
        biased;
        _ = hub.receive(&dev) => false,
        () = std::future::ready(()) => true,
    };
    assert!(
        dropped_pending,
        "the receive must still be pending when dropped"
    );
    // The manual clock never moves: only a release can bring it back.
    let got = hub
        .receive_wait(&dev, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("released to the queue without waiting for the lock to lapse");
    assert_eq!(got.message.properties.message_id.as_deref(), Some("m1"));
    assert_eq!(
        got.delivery_count, 0,
        "a delivery nobody got does not count"
    );
    stop(hub, task).await;
}

#[tokio::test]
async fn a_feedback_receive_whose_caller_went_away_releases_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(AtomicI64::new(1_700_000_000_000)));
    let dev = DeviceId::new("dev1").unwrap();
    let (hub, task) = open(dir.path(), clock.clone());
    hub.put_device(dev.clone(), DeviceSpec::default(), IfMatch::Absent)
        .await
        .unwrap();
    hub.send(&dev, msg("m1", AckMode::Positive)).await.unwrap();
    let d = hub.receive(&dev).await.unwrap().unwrap();
    hub.complete(&dev, d.lock_token).await.unwrap();
    clock.advance(Duration::from_secs(1));
    let first = hub
        .receive_feedback_wait(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("the batch closes once its window passed");
    hub.abandon_feedback(first.lock_token).await.unwrap();
    let dropped_pending = tokio::select! {
        biased;
        _ = hub.receive_feedback() => false,
        () = std::future::ready(()) => true,
    };
    assert!(
        dropped_pending,
        "the receive must still be pending when dropped"
    );
    let again = hub
        .receive_feedback_wait(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("released to the feedback queue without waiting for the lock");
    assert_eq!(
        again.delivery_count, 1,
        "the abandon counted, the dropped receive did not"
    );
    stop(hub, task).await;
}

/// A fresh hub on a manual clock that never moves, with device `dev1`.
async fn hub_with_one_device() -> (tempfile::TempDir, Hub, courier_hub::HubTask, DeviceId) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(AtomicI64::new(1_700_000_000_000)));
    let dev = DeviceId::new("dev1").unwrap();
    let (hub, task) = open(dir.path(), clock);
    hub.put_device(dev.clone(), DeviceSpec::default(), IfMatch::Absent)
        .await
        .unwrap();
    (dir, hub, task, dev)
}

/// Spawns `receive_wait` and gives it time to park in the engine.
async fn parked(
    hub: &Hub,
    dev: &DeviceId,
    wait: Duration,
) -> tokio::task::JoinHandle<Result<Option<courier_core::Delivery>, Error>> {
    let (hub, dev) = (hub.clone(), dev.clone());
    let task = tokio::spawn(async move { hub.receive_wait(&dev, wait).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    task
}

/// Spawns `receive_parked` and gives it time to park in the engine.
async fn parked_without_deadline(
    hub: &Hub,
    dev: &DeviceId,
) -> tokio::task::JoinHandle<Result<Option<courier_core::Delivery>, Error>> {
    let (hub, dev) = (hub.clone(), dev.clone());
    let task = tokio::spawn(async move { hub.receive_parked(&dev).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    task
}

#[tokio::test]
async fn a_wait_that_ends_first_leaves_nothing_locked() {
    let (_dir, hub, task, dev) = hub_with_one_device().await;
    let waited = hub
        .receive_wait(&dev, Duration::from_millis(30))
        .await
        .unwrap();
    assert!(waited.is_none());
    hub.send(&dev, msg("m1", AckMode::None)).await.unwrap();
    // The manual clock never moves, so a lock taken for the gone waiter
    // would never lapse: the message must be there now.
    let got = hub
        .receive(&dev)
        .await
        .unwrap()
        .expect("not locked for the receive that stopped waiting");
    assert_eq!(got.delivery_count, 0);
    stop(hub, task).await;
}

#[tokio::test]
async fn parked_receivers_each_get_their_own_message() {
    let (_dir, hub, task, dev) = hub_with_one_device().await;
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(parked(&hub, &dev, Duration::from_secs(30)).await);
    }
    for i in 0..3 {
        hub.send(&dev, msg(&format!("m{i}"), AckMode::None))
            .await
            .unwrap();
    }
    let mut bodies = Vec::new();
    for w in waiting {
        let got = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("answered well before its own deadline")
            .unwrap()
            .unwrap()
            .unwrap();
        bodies.push(String::from_utf8(got.message.body.clone()).unwrap());
    }
    bodies.sort();
    assert_eq!(bodies, ["m0", "m1", "m2"]);
    assert!(hub.receive(&dev).await.unwrap().is_none());
    stop(hub, task).await;
}

#[tokio::test]
async fn a_parked_receiver_gets_an_abandoned_message_back() {
    let (_dir, hub, task, dev) = hub_with_one_device().await;
    hub.send(&dev, msg("m1", AckMode::None)).await.unwrap();
    let first = hub.receive(&dev).await.unwrap().unwrap();
    let waiter = parked(&hub, &dev, Duration::from_secs(30)).await;
    hub.abandon(&dev, first.lock_token).await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken by the abandon")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(again.message.properties.message_id.as_deref(), Some("m1"));
    assert_ne!(again.lock_token, first.lock_token);
    stop(hub, task).await;
}

#[tokio::test]
async fn a_parked_receiver_learns_that_its_device_was_deleted() {
    let (_dir, hub, task, dev) = hub_with_one_device().await;
    let waiter = parked(&hub, &dev, Duration::from_secs(30)).await;
    hub.delete_device(&dev, IfMatch::Any).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("answered at the delete, not at its deadline")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code().number(), 404001);
    stop(hub, task).await;
}

#[tokio::test]
async fn a_receive_parked_without_a_deadline_gets_the_next_message_or_the_delete() {
    let (_dir, hub, task, dev) = hub_with_one_device().await;
    let waiter = parked_without_deadline(&hub, &dev).await;
    hub.send(&dev, msg("m1", AckMode::None)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken by the send")
        .unwrap()
        .unwrap()
        .expect("a parked receive answers with a message, never with nothing");
    assert_eq!(got.message.properties.message_id.as_deref(), Some("m1"));
    hub.complete(&dev, got.lock_token).await.unwrap();

    // Dropped while parked: nothing is locked for it.
    let dropped = parked_without_deadline(&hub, &dev).await;
    dropped.abort();
    let _ = dropped.await;
    hub.send(&dev, msg("m2", AckMode::None)).await.unwrap();
    let got = hub
        .receive(&dev)
        .await
        .unwrap()
        .expect("a dropped parked receive took nothing");
    assert_eq!(got.message.properties.message_id.as_deref(), Some("m2"));
    hub.complete(&dev, got.lock_token).await.unwrap();

    let waiter = parked_without_deadline(&hub, &dev).await;
    hub.delete_device(&dev, IfMatch::Any).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("answered at the delete")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code().number(), 404001);
    stop(hub, task).await;
}
