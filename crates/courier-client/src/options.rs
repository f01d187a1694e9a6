//! Client options: transport, trust, identity, timeouts, retry, keep-alive.
//! Builders with IoT Hub's defaults; every setter returns the options.

use std::path::Path;
use std::time::Duration;

use crate::{ClientError, RetryPolicy};

/// How a device client talks to the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// MQTT 3.1.1 over TLS (port 8883).
    Mqtt,
    /// MQTT 3.1.1 over a WebSocket over TLS (port 443).
    MqttWs,
    /// AMQP 1.0 over TLS (port 5671).
    Amqp,
    /// AMQP 1.0 over a WebSocket over TLS (port 443).
    AmqpWs,
    /// HTTPS polling (port 443).
    Http,
}

impl Transport {
    /// Every transport, in the order above.
    pub const ALL: [Transport; 5] = [
        Transport::Mqtt,
        Transport::MqttWs,
        Transport::Amqp,
        Transport::AmqpWs,
        Transport::Http,
    ];

    /// The transport's name, as IoT Hub's SDKs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mqtt => "Mqtt",
            Self::MqttWs => "MqttWs",
            Self::Amqp => "Amqp",
            Self::AmqpWs => "AmqpWs",
            Self::Http => "Http",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a service client sends messages and reads feedback.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ServiceTransport {
    /// AMQP 1.0 over TLS (port 5671), as IoT Hub's service SDKs do (the default).
    #[default]
    Amqp,
    /// AMQP 1.0 over a WebSocket over TLS (port 443).
    AmqpWs,
    /// HTTPS (port 443): Courier's service API; also returns the sequence number.
    Http,
}

impl ServiceTransport {
    /// The transport's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Amqp => "Amqp",
            Self::AmqpWs => "AmqpWs",
            Self::Http => "Http",
        }
    }
}

/// A client certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct X509Identity {
    /// The certificate chain, leaf first.
    pub(crate) certificate_pem: Vec<u8>,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub(crate) private_key_pem: Vec<u8>,
}

impl X509Identity {
    /// An identity from PEM bytes.
    pub fn from_pem(
        certificate_pem: impl Into<Vec<u8>>,
        private_key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        Self {
            certificate_pem: certificate_pem.into(),
            private_key_pem: private_key_pem.into(),
        }
    }
}

impl std::fmt::Debug for X509Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Identity").finish_non_exhaustive()
    }
}

/// Where to connect: the standard ports unless overridden (a hub on
/// ephemeral ports, or behind a port mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ports {
    /// MQTT over TLS.
    pub(crate) mqtt: u16,
    /// AMQP over TLS.
    pub(crate) amqp: u16,
    /// HTTPS and both WebSocket transports.
    pub(crate) https: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            mqtt: 8883,
            amqp: 5671,
            https: 443,
        }
    }
}

/// Trust and reachability shared by device and service clients.
#[derive(Debug, Clone, Default)]
pub(crate) struct Connectivity {
    /// PEM CA certificates to trust instead of the public roots.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// Ports to connect to.
    pub(crate) ports: Ports,
}

fn read_pem(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path)
        .map_err(|e| ClientError::InvalidArgument(format!("cannot read {}: {e}", path.display())))
}

/// The setters device and service options share, with one doc each.
macro_rules! common_setters {
    () => {
        /// Trusts these PEM CA certificates (and no public roots).
        pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
            self.connectivity.ca_pem = Some(pem.into());
            self
        }

        /// Trusts the PEM CA certificates in this file (and no public roots).
        pub fn ca_certificate_file(self, path: impl AsRef<Path>) -> Result<Self, ClientError> {
            Ok(self.ca_certificate_pem(read_pem(path.as_ref())?))
        }

        /// Time allowed for one operation (connect, settle, one request).
        pub fn operation_timeout(mut self, timeout: Duration) -> Self {
            self.operation_timeout = timeout;
            self
        }

        /// How to retry after a transient failure (a lost connection, a
        /// network fault, throttling).
        pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
            self.retry_policy = policy;
            self
        }

        /// Lifetime of each SAS token minted from the key; tokens are
        /// renewed at 85 % of it.
        pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
            self.token_lifetime = lifetime.max(Duration::from_secs(1));
            self
        }

        /// Connects AMQP to this port instead of 5671.
        pub fn amqp_port(mut self, port: u16) -> Self {
            self.connectivity.ports.amqp = port;
            self
        }

        /// Connects HTTPS and WebSockets to this port instead of 443.
        pub fn https_port(mut self, port: u16) -> Self {
            self.connectivity.ports.https = port;
            self
        }
    };
}

/// Options of a [`DeviceClient`](crate::DeviceClient).
///
/// ```
/// use courier_client::{DeviceOptions, RetryPolicy};
/// use std::time::Duration;
///
/// let options = DeviceOptions::new()
///     .operation_timeout(Duration::from_secs(10))
///     .retry_policy(RetryPolicy::exponential().max_attempts(5))
///     .http_poll_interval(Duration::from_secs(30));
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    pub(crate) connectivity: Connectivity,
    pub(crate) identity: Option<X509Identity>,
    pub(crate) operation_timeout: Duration,
    pub(crate) retry_policy: RetryPolicy,
    pub(crate) keep_alive: Duration,
    pub(crate) token_lifetime: Duration,
    pub(crate) http_poll_interval: Duration,
    pub(crate) prefetch: u16,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        Self {
            connectivity: Connectivity::default(),
            identity: None,
            operation_timeout: Duration::from_secs(60),
            retry_policy: RetryPolicy::default(),
            keep_alive: Duration::from_secs(60),
            token_lifetime: Duration::from_secs(3600),
            http_poll_interval: Duration::from_secs(10),
            prefetch: 16,
        }
    }
}

impl DeviceOptions {
    /// IoT Hub's defaults: public CA roots, standard ports, 60 s operation
    /// timeout and keep-alive, 1 h tokens, exponential retry forever.
    pub fn new() -> Self {
        Self::default()
    }

    /// Authenticates with this client certificate (connection strings with `x509=true`).
    pub fn x509_identity(mut self, identity: X509Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// MQTT keep-alive (PINGREQ interval); AMQP idle timeout is twice it.
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// Least time between two HTTPS receive polls that found nothing.
    pub fn http_poll_interval(mut self, interval: Duration) -> Self {
        self.http_poll_interval = interval;
        self
    }

    /// Most received messages buffered before `receive` takes them (and the
    /// AMQP link credit).
    pub fn prefetch(mut self, messages: u16) -> Self {
        self.prefetch = messages.max(1);
        self
    }

    /// Connects MQTT to this port instead of 8883.
    pub fn mqtt_port(mut self, port: u16) -> Self {
        self.connectivity.ports.mqtt = port;
        self
    }

    common_setters!();
}

/// Options of a [`ServiceClient`](crate::ServiceClient).
///
/// ```
/// use courier_client::{ServiceOptions, ServiceTransport};
///
/// let options = ServiceOptions::new().transport(ServiceTransport::Http);
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub(crate) connectivity: Connectivity,
    pub(crate) transport: ServiceTransport,
    pub(crate) operation_timeout: Duration,
    pub(crate) retry_policy: RetryPolicy,
    pub(crate) token_lifetime: Duration,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            connectivity: Connectivity::default(),
            transport: ServiceTransport::default(),
            operation_timeout: Duration::from_secs(60),
            retry_policy: RetryPolicy::exponential().max_attempts(5),
            token_lifetime: Duration::from_secs(3600),
        }
    }
}

impl ServiceOptions {
    /// Defaults: AMQP, public CA roots, standard ports, 60 s operation
    /// timeout, 1 h tokens, 5 retries of transient errors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends and reads feedback over this transport.
    pub fn transport(mut self, transport: ServiceTransport) -> Self {
        self.transport = transport;
        self
    }

    common_setters!();
}
