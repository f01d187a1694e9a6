//! Which connection each device has, and the persistent sessions
//! (CleanSession 0) the head remembers between connections, in memory.
//!
//! A session remembers only the C2D subscription: the messages themselves
//! stay in the hub's queue whatever the MQTT session does (wire spec §2.3).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rumqttc::mqttbytes::QoS;
use tokio::sync::oneshot;

/// What a resumed session brings back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The C2D subscription's granted QoS.
    pub(crate) subscription: Option<QoS>,
}

#[derive(Default)]
struct Entry {
    /// The live connection and the way to close it.
    live: Option<(u64, oneshot::Sender<()>)>,
    /// The persistent session, if the last connection asked for one.
    stored: Option<Stored>,
}

/// What attaching a connection to its device gives.
pub(crate) struct Attached {
    /// This connection's id in the registry.
    pub(crate) id: u64,
    /// Fires when a newer connection of the same device replaces this one.
    pub(crate) replaced: oneshot::Receiver<()>,
    /// The resumed session, for CleanSession 0 when one was stored.
    pub(crate) resumed: Option<Stored>,
}

/// Device id → live connection and stored session.
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
    next_id: AtomicU64,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A poisoned lock only means a panic mid-update of a plain map.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes a new connection the device's only one (the older one is told
    /// to close) and resumes or clears its session.
    pub(crate) fn attach(&self, device_id: &str, clean_session: bool) -> Attached {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, replaced) = oneshot::channel();
        let mut map = self.lock();
        let entry = map.entry(device_id.to_owned()).or_default();
        if let Some((_, older)) = entry.live.replace((id, tx)) {
            let _ = older.send(());
        }
        let resumed = if clean_session {
            entry.stored = None;
            None
        } else {
            let resumed = entry.stored;
            entry.stored.get_or_insert_with(Stored::default);
            resumed
        };
        Attached {
            id,
            replaced,
            resumed,
        }
    }

    /// Records the subscription of connection `id` if it is still the
    /// device's live one and keeps a persistent session.
    pub(crate) fn remember(&self, device_id: &str, id: u64, subscription: Option<QoS>) {
        let mut map = self.lock();
        if let Some(entry) = map.get_mut(device_id) {
            let live = entry.live.as_ref().is_some_and(|(l, _)| *l == id);
            if let (true, Some(stored)) = (live, entry.stored.as_mut()) {
                stored.subscription = subscription;
            }
        }
    }

    /// Forgets connection `id`; a device with neither a live connection nor a
    /// stored session leaves the map.
    pub(crate) fn detach(&self, device_id: &str, id: u64) {
        let mut map = self.lock();
        if let Some(entry) = map.get_mut(device_id) {
            if entry.live.as_ref().is_some_and(|(l, _)| *l == id) {
                entry.live = None;
            }
            if entry.live.is_none() && entry.stored.is_none() {
                map.remove(device_id);
            }
        }
    }

    /// Whether the device has a live connection.
    #[cfg(test)]
    pub(crate) fn live(&self, device_id: &str) -> bool {
        self.lock().get(device_id).is_some_and(|e| e.live.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_replaces_the_older_one() {
        let sessions = Sessions::default();
        let mut first = sessions.attach("d1", false);
        let second = sessions.attach("d1", false);
        assert!(first.replaced.try_recv().is_ok());
        // The older connection leaving does not unregister the newer one.
        sessions.detach("d1", first.id);
        assert!(sessions.live("d1"));
        sessions.detach("d1", second.id);
        assert!(!sessions.live("d1"));
    }

    #[test]
    fn clean_session_zero_resumes_the_subscription_and_one_clears_it() {
        let sessions = Sessions::default();
        let a = sessions.attach("d1", false);
        assert_eq!(a.resumed, None);
        sessions.remember("d1", a.id, Some(QoS::AtLeastOnce));
        sessions.detach("d1", a.id);
        let b = sessions.attach("d1", false);
        assert_eq!(
            b.resumed,
            Some(Stored {
                subscription: Some(QoS::AtLeastOnce)
            })
        );
        sessions.detach("d1", b.id);
        let c = sessions.attach("d1", true);
        assert_eq!(c.resumed, None);
        sessions.detach("d1", c.id);
        let d = sessions.attach("d1", false);
        assert_eq!(d.resumed, None);
    }

    #[test]
    fn a_replaced_connection_cannot_overwrite_the_session() {
        let sessions = Sessions::default();
        let old = sessions.attach("d1", false);
        let new = sessions.attach("d1", false);
        sessions.remember("d1", old.id, Some(QoS::AtMostOnce));
        sessions.remember("d1", new.id, Some(QoS::AtLeastOnce));
        sessions.detach("d1", new.id);
        let next = sessions.attach("d1", false);
        assert_eq!(
            next.resumed.and_then(|s| s.subscription),
            Some(QoS::AtLeastOnce)
        );
    }
}
