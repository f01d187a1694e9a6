//! PLACEHOLDER: the registry manager (being written).

use std::sync::Arc;

use crate::service::HttpService;

/// Device CRUD on the hub's registry (HTTPS).
#[derive(Debug, Clone)]
pub struct RegistryManager {
    http: Arc<HttpService>,
}

impl RegistryManager {
    /// A registry manager sharing a service client's HTTPS client.
    pub(crate) fn from_http(http: Arc<HttpService>) -> Self {
        Self { http }
    }
}
