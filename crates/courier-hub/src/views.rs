//! Read-mostly views of the registry that the heads consult synchronously
//! (authentication), kept current by the engine.

use courier_core::{Authentication, Device, DeviceStatus};
use std::collections::HashMap;
use std::sync::RwLock;

/// What authentication needs to know of a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCredentials {
    /// Enabled or disabled.
    pub status: DeviceStatus,
    /// Keys and thumbprints.
    pub authentication: Authentication,
}

/// Device id → credentials, written only by the engine task.
#[derive(Default)]
pub(crate) struct CredentialView {
    map: RwLock<HashMap<String, DeviceCredentials>>,
}

impl CredentialView {
    pub(crate) fn get(&self, id: &str) -> Option<DeviceCredentials> {
        // A poisoned lock only means a writer panicked mid-insert of a plain
        // map entry; the map itself is still usable.
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(id).cloned()
    }

    pub(crate) fn put(&self, device: &Device) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        map.insert(
            device.device_id.as_str().to_owned(),
            DeviceCredentials {
                status: device.status,
                authentication: device.authentication.clone(),
            },
        );
    }

    pub(crate) fn remove(&self, id: &str) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
    }
}
