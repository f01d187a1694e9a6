//! The hub a run talks to, and how a run reports progress to its caller.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::CertificateDer;

use crate::BenchError;

/// How long the SAS tokens a run mints stay valid: longer than any run.
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Everything a run needs to reach one hub, already resolved by the caller.
#[derive(Debug, Clone)]
pub struct BenchTarget {
    /// The hub's host name, as in token scopes and the TLS certificate.
    pub host_name: String,
    /// Base URL of the HTTPS API, e.g. `https://localhost:8443`.
    pub https_endpoint: reqwest::Url,
    /// The MQTT-over-TLS port, when known.
    pub mqtt_port: Option<u16>,
    /// PEM bytes of the CA certificate(s) to trust.
    pub ca_pem: Vec<u8>,
    /// Name of a shared access policy with RegistryWrite and ServiceConnect.
    pub policy_name: String,
    /// That policy's base64 key.
    pub policy_key: String,
    /// The hub's process id, when it runs on this machine (for CPU and RSS).
    pub hub_pid: Option<u32>,
}

impl BenchTarget {
    /// The TCP host of the endpoint (where the MQTT port is reached too).
    pub(crate) fn connect_host(&self) -> String {
        self.https_endpoint
            .host_str()
            .unwrap_or(&self.host_name)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned()
    }

    /// The name the hub's certificate is checked against.
    pub(crate) fn server_name(&self) -> String {
        self.https_endpoint
            .host_str()
            .unwrap_or(&self.host_name)
            .to_owned()
    }

    /// The trusted roots from `ca_pem`.
    pub(crate) fn roots(&self) -> Result<rustls::RootCertStore, BenchError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            let cert = cert.map_err(|e| BenchError::Ca(e.to_string()))?;
            roots.add(cert).map_err(|e| BenchError::Ca(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(BenchError::Ca("no PEM certificate found".into()));
        }
        Ok(roots)
    }

    /// The rustls client configuration for MQTT connections (no ALPN, no client certificate).
    pub(crate) fn mqtt_tls(&self) -> Result<Arc<rustls::ClientConfig>, BenchError> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| BenchError::Ca(e.to_string()))?
        .with_root_certificates(self.roots()?)
        .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// `SharedAccessSignature …` for the policy, scoped to the hub.
    pub(crate) fn policy_token(&self) -> Result<String, BenchError> {
        courier_auth::generate_token(
            &self.host_name,
            &self.policy_key,
            Some(&self.policy_name),
            token_expiry(),
        )
        .map_err(BenchError::Sign)
    }

    /// A device token for `device_id` signed with `key`.
    pub(crate) fn device_token(&self, device_id: &str, key: &str) -> Result<String, BenchError> {
        courier_auth::generate_token(
            &format!("{}/devices/{device_id}", self.host_name),
            key,
            None,
            token_expiry(),
        )
        .map_err(BenchError::Sign)
    }
}

fn token_expiry() -> u64 {
    SystemTime::now()
        .checked_add(TOKEN_LIFETIME)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Counters of a run in progress, as shown on a progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Messages the hub accepted so far.
    pub sent: u64,
    /// Messages devices received so far.
    pub delivered: u64,
    /// Messages the run will send.
    pub total: u64,
    /// Errors so far.
    pub errors: u64,
}

/// Receives a run's phases and progress; `courier bench` prints them on stderr.
pub trait Observer: Send + Sync {
    /// A new phase began (creating devices, connecting, sending, cleaning up).
    fn phase(&self, text: &str);
    /// The counters, about twice a second while messages flow.
    fn progress(&self, progress: Progress);
}

/// An observer that shows nothing (for `--json` and tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Observer for Silent {
    fn phase(&self, _text: &str) {}
    fn progress(&self, _progress: Progress) {}
}
