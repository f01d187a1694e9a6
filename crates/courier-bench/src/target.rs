//! The hub a run talks to, and how a run reports progress to its caller.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::socket::Endpoint;
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
    /// The AMQP-over-TLS port, when known (AMQP senders need it).
    pub amqp_port: Option<u16>,
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
    fn connect_host(&self) -> String {
        self.https_endpoint
            .host_str()
            .unwrap_or(&self.host_name)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned()
    }

    /// The name the hub's certificate is checked against.
    fn server_name(&self) -> String {
        self.https_endpoint
            .host_str()
            .unwrap_or(&self.host_name)
            .to_owned()
    }

    /// The rustls client configuration for MQTT connections (no ALPN, no client certificate).
    pub(crate) fn mqtt_tls(&self) -> Result<Arc<rustls::ClientConfig>, BenchError> {
        client_tls(&self.ca_pem)
    }

    /// Where the hub's MQTT-over-TLS listener is, resolved once.
    pub(crate) async fn mqtt_endpoint(&self, port: u16) -> Result<Endpoint, BenchError> {
        let server_name = ServerName::try_from(self.server_name())
            .map_err(|e| BenchError::Ca(format!("server name: {e}")))?;
        Endpoint::resolve(
            &self.connect_host(),
            port,
            Some((self.mqtt_tls()?, server_name)),
        )
        .await
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

    /// The policy's service connection string, with `GatewayHostName` when
    /// the hub is reached by another name than its own (e.g. 127.0.0.1).
    pub(crate) fn service_connection_string(&self) -> String {
        let mut cs = format!(
            "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
            self.host_name, self.policy_name, self.policy_key
        );
        let connect = self.connect_host();
        if !connect.eq_ignore_ascii_case(&self.host_name) {
            cs.push_str(";GatewayHostName=");
            cs.push_str(&connect);
        }
        cs
    }

    /// A device's connection string (key `key`), with `GatewayHostName` as
    /// [`Self::service_connection_string`] has it.
    pub(crate) fn device_connection_string(&self, device_id: &str, key: &str) -> String {
        let mut cs = format!(
            "HostName={};DeviceId={device_id};SharedAccessKey={key}",
            self.host_name
        );
        let connect = self.connect_host();
        if !connect.eq_ignore_ascii_case(&self.host_name) {
            cs.push_str(";GatewayHostName=");
            cs.push_str(&connect);
        }
        cs
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

/// A rustls client configuration trusting only the PEM certificate(s) given.
fn client_tls(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, BenchError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| BenchError::Ca(e.to_string()))?;
        roots.add(cert).map_err(|e| BenchError::Ca(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(BenchError::Ca("no PEM certificate found".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| BenchError::Ca(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A plain MQTT 3.1.1 broker (e.g. Mosquitto) that broker mode drives with
/// the same devices, topics and measurements as the hub, for comparison.
#[derive(Debug, Clone)]
pub struct BrokerTarget {
    /// The URL as given, for the report.
    pub url: String,
    /// Host to connect to and check the certificate against.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// PEM CA certificate(s) of an `mqtts://` broker; `None` for `mqtt://`.
    pub ca_pem: Option<Vec<u8>>,
    /// The broker's process id, when it runs on this machine (for CPU and RSS).
    pub pid: Option<u32>,
}

impl BrokerTarget {
    /// A broker at `mqtt://HOST[:PORT]` (default 1883) or `mqtts://HOST[:PORT]`
    /// (default 8883, needs `ca_pem`).
    pub fn new(url: &str, ca_pem: Option<Vec<u8>>, pid: Option<u32>) -> Result<Self, BenchError> {
        let invalid = |reason: &str| BenchError::BrokerUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        let tls = match parsed.scheme() {
            "mqtt" => false,
            "mqtts" => true,
            _ => return Err(invalid("the scheme must be mqtt:// or mqtts://")),
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed.port().unwrap_or(if tls { 8883 } else { 1883 });
        match (tls, &ca_pem) {
            (true, None) => return Err(invalid("mqtts:// needs the broker's CA (--broker-ca)")),
            (false, Some(_)) => return Err(invalid("a CA is only for mqtts://")),
            _ => {}
        }
        Ok(Self {
            url: url.to_owned(),
            host,
            port,
            ca_pem,
            pid,
        })
    }

    /// Where the broker is, resolved once, with TLS for `mqtts://`.
    pub(crate) async fn endpoint(&self) -> Result<Endpoint, BenchError> {
        let tls = match &self.ca_pem {
            None => None,
            Some(pem) => {
                let server_name = ServerName::try_from(self.host.clone())
                    .map_err(|e| BenchError::Ca(format!("server name: {e}")))?;
                Some((client_tls(pem)?, server_name))
            }
        };
        Endpoint::resolve(&self.host, self.port, tls).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_give_host_port_and_tls() {
        let plain = BrokerTarget::new("mqtt://127.0.0.1", None, None).unwrap();
        assert_eq!((plain.host.as_str(), plain.port), ("127.0.0.1", 1883));
        let pem = Some(b"pem".to_vec());
        let tls = BrokerTarget::new("mqtts://localhost:18883", pem.clone(), Some(7)).unwrap();
        assert_eq!(
            (tls.host.as_str(), tls.port, tls.pid),
            ("localhost", 18883, Some(7))
        );
        let v6 = BrokerTarget::new("mqtts://[::1]", pem.clone(), None).unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 8883));
        for (url, ca) in [
            ("http://localhost:1883", None),
            ("mqtts://localhost", None),
            ("mqtt://localhost", pem.clone()),
            ("localhost:1883", None),
        ] {
            assert!(
                BrokerTarget::new(url, ca, None).is_err(),
                "{url} was accepted"
            );
        }
    }
}
