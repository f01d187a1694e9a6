//! Which devices hold a live protocol connection (MQTT, later AMQP), as the
//! heads report it: IoT Hub's `connectionState`. Live state only, never
//! persisted: after a restart every device is disconnected until it
//! reconnects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use courier_core::{Clock, DeviceId, Timestamp};

/// Whether a device is connected (`connectionState`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConnectionState {
    /// No live connection.
    #[default]
    Disconnected,
    /// At least one live connection.
    Connected,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    connections: u32,
    updated: Timestamp,
}

/// Live connections per device.
pub(crate) struct Presence {
    clock: Arc<dyn Clock>,
    map: Mutex<HashMap<DeviceId, Entry>>,
}

impl Presence {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        Presence {
            clock,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Entry>> {
        // A poisoned lock only means a panic mid-update of a plain map.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn opened(&self, id: &DeviceId) {
        let now = self.clock.now();
        let mut map = self.lock();
        let entry = map.entry(id.clone()).or_insert(Entry {
            connections: 0,
            updated: now,
        });
        if entry.connections == 0 {
            entry.updated = now;
        }
        entry.connections += 1;
    }

    pub(crate) fn closed(&self, id: &DeviceId) {
        let now = self.clock.now();
        let mut map = self.lock();
        if let Some(entry) = map.get_mut(id) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 {
                entry.updated = now;
            }
        }
    }

    /// The device's state and when it last changed (`None`: never connected).
    pub(crate) fn state(&self, id: &DeviceId) -> (ConnectionState, Option<Timestamp>) {
        match self.lock().get(id) {
            Some(e) if e.connections > 0 => (ConnectionState::Connected, Some(e.updated)),
            Some(e) => (ConnectionState::Disconnected, Some(e.updated)),
            None => (ConnectionState::Disconnected, None),
        }
    }

    pub(crate) fn connected_count(&self) -> usize {
        self.lock().values().filter(|e| e.connections > 0).count()
    }

    pub(crate) fn forget(&self, id: &DeviceId) {
        self.lock().remove(id);
    }
}

/// Held by a protocol head for the life of one device connection; the device
/// counts as connected while any guard for it lives.
pub struct ConnectionGuard {
    presence: Arc<Presence>,
    device_id: DeviceId,
}

impl ConnectionGuard {
    pub(crate) fn new(presence: Arc<Presence>, device_id: DeviceId) -> Self {
        presence.opened(&device_id);
        ConnectionGuard {
            presence,
            device_id,
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.presence.closed(&self.device_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    struct Manual(AtomicI64);
    impl Clock for Manual {
        fn now(&self) -> Timestamp {
            Timestamp(self.0.load(Ordering::SeqCst))
        }
    }

    #[test]
    fn a_device_is_connected_while_any_guard_lives() {
        let clock = Arc::new(Manual(AtomicI64::new(1000)));
        let presence = Arc::new(Presence::new(clock.clone()));
        let id = DeviceId::new("d").unwrap();
        assert_eq!(presence.state(&id), (ConnectionState::Disconnected, None));
        let first = ConnectionGuard::new(presence.clone(), id.clone());
        clock.0.store(2000, Ordering::SeqCst);
        let second = ConnectionGuard::new(presence.clone(), id.clone());
        assert_eq!(
            presence.state(&id),
            (ConnectionState::Connected, Some(Timestamp(1000)))
        );
        assert_eq!(presence.connected_count(), 1);
        drop(first);
        assert_eq!(presence.state(&id).0, ConnectionState::Connected);
        clock.0.store(3000, Ordering::SeqCst);
        drop(second);
        assert_eq!(
            presence.state(&id),
            (ConnectionState::Disconnected, Some(Timestamp(3000)))
        );
        assert_eq!(presence.connected_count(), 0);
    }
}
