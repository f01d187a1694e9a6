//! Which hub a command talks to, where, as whom, trusting which CA: the
//! validated form of the hub-selection flags.
//!
//! Precedence, each step only when the previous gave nothing:
//! - credential: `--hub` / `COURIER_HUB_CONNECTION_STRING` (or a device
//!   connection string the command passes), then the owner policy in
//!   `{data-dir}/hub.json`;
//! - endpoint: `--endpoint` / `COURIER_ENDPOINT`, then `httpsEndpoint` from
//!   `{data-dir}/run.json` when that hub serves the credential's host name, then
//!   `https://{HostName}:443`;
//! - CA: `--ca` / `COURIER_CA`, then `caPath` from a matching run.json, then
//!   `{data-dir}/tls/ca.pem` when the data directory is that hub's.
//!
//! Reading the data directory ([`LocalHub::read`]) is kept apart from the
//! decision ([`Target::resolve`]) so the precedence is tested without files.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use courier_auth::ConnectionString;
use courier_client::{
    DeviceClient, DeviceOptions, RegistryManager, ServiceClient, ServiceOptions, ServiceTransport,
    Transport,
};
use courier_server::datadir::{HubFile, RunFile, OWNER_POLICY};
use reqwest::Url;

use crate::cli::ClientArgs;

/// How long each SAS token this run mints stays valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Why the hub to talk to could not be determined.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TargetError {
    /// Neither a connection string nor a data directory with hub.json.
    #[error(
        "no hub to talk to: {0} does not exist; pass --hub <connection string> \
         (or set COURIER_HUB_CONNECTION_STRING), or --data-dir <dir> of a hub on this machine"
    )]
    NoHub(PathBuf),
    /// A file in the data directory could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file in the data directory is not the JSON it should be.
    #[error("{path} is not a valid Courier file")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// hub.json has no owner policy to act as.
    #[error("{0} has no '{OWNER_POLICY}' policy; pass --hub <policy connection string>")]
    NoOwnerPolicy(PathBuf),
    /// The connection string does not parse.
    #[error("invalid connection string")]
    ConnectionString(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The connection string has neither a policy nor a device key.
    #[error(
        "the connection string has no SharedAccessKey to sign with \
         (X.509 devices cannot use this command)"
    )]
    NoKey,
    /// `--endpoint` is not an https URL.
    #[error("--endpoint '{0}' is not an https:// URL such as https://localhost:8443")]
    Endpoint(String),
    /// No CA certificate was given or found.
    #[error(
        "no CA certificate to trust for {endpoint}: pass --ca <pem file> (or set COURIER_CA); \
         a local hub's CA is {data_dir}/tls/ca.pem"
    )]
    NoCa {
        /// The endpoint that needs one.
        endpoint: Url,
        /// Where a local hub keeps its CA.
        data_dir: PathBuf,
    },
    /// A service or registry command was given a device's connection string.
    #[error(
        "this command needs a shared access policy (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…), \
         not device '{0}''s connection string"
    )]
    DeviceCredential(String),
    /// A device connection string for another device.
    #[error("the device connection string is for '{own}', not '{wanted}'")]
    WrongDevice {
        /// The device the key belongs to.
        own: String,
        /// The device the command acts as.
        wanted: String,
    },
    /// The SAS token could not be signed (a malformed key).
    #[error("cannot sign a SAS token with the connection string's key")]
    Sign(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The SDK refused the settings (an unreadable CA file, a bad key).
    #[error("cannot set up the client")]
    Client(#[source] courier_client::ClientError),
}

/// The flags that select a hub, as given (after clap applied env defaults).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawTarget<'a> {
    /// A connection string given explicitly.
    pub(crate) connection_string: Option<&'a str>,
    /// `--endpoint`.
    pub(crate) endpoint: Option<&'a str>,
    /// `--ca`.
    pub(crate) ca: Option<&'a Path>,
    /// `--data-dir`.
    pub(crate) data_dir: &'a Path,
}

/// What a hub's data directory on this machine says, each part optional.
#[derive(Debug, Clone, Default)]
pub(crate) struct LocalHub {
    /// From hub.json: the hub's host name.
    pub(crate) host_name: Option<String>,
    /// From hub.json: the owner policy's connection string.
    pub(crate) owner_connection_string: Option<String>,
    /// From run.json: the running hub, if any.
    pub(crate) running: Option<RunFile>,
    /// `{data-dir}/tls/ca.pem` when it exists.
    pub(crate) ca_path: Option<PathBuf>,
}

impl LocalHub {
    /// Reads hub.json, run.json and tls/ca.pem under `data_dir`; absent files are `None`.
    ///
    /// The files are read directly rather than through `DataDir`, whose only
    /// constructor creates the directory: a client must not leave an empty data
    /// directory behind where the user mistyped a path.
    pub(crate) fn read(data_dir: &Path) -> Result<Self, TargetError> {
        let hub_path = data_dir.join("hub.json");
        let (host_name, owner_connection_string) = match read_json::<HubFile>(&hub_path)? {
            Some(hub) => {
                let owner = hub
                    .owner_connection_string()
                    .ok_or_else(|| TargetError::NoOwnerPolicy(hub_path.clone()))?;
                (Some(hub.host_name), Some(owner))
            }
            None => (None, None),
        };
        let running = read_json::<RunFile>(&data_dir.join("run.json"))?;
        let ca_path = Some(data_dir.join("tls").join("ca.pem")).filter(|p| p.is_file());
        Ok(Self {
            host_name,
            owner_connection_string,
            running,
            ca_path,
        })
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, TargetError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TargetError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| TargetError::Parse {
            path: path.to_owned(),
            source,
        })
}

/// Whose key signs the tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    /// A shared access policy: tokens carry `skn`.
    Policy {
        /// Policy name.
        name: String,
        /// Base64 key.
        key: String,
    },
    /// One device's own key: tokens are scoped to that device.
    Device {
        /// Device id.
        id: String,
        /// Base64 key.
        key: String,
    },
}

/// The validated hub selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The hub's host name as in connection strings and token scopes.
    pub(crate) host_name: String,
    /// Base URL of the HTTPS API.
    pub(crate) endpoint: Url,
    /// PEM file of the CA to trust.
    pub(crate) ca_path: PathBuf,
    /// Whose key signs tokens.
    pub(crate) credential: Credential,
    /// MQTT and AMQP ports of the running local hub, when the endpoint is its.
    pub(crate) protocol_ports: Option<(Option<u16>, Option<u16>)>,
}

impl Target {
    /// Reads the data directory and resolves `args`; `connection_string`
    /// overrides `--hub` (used for a device's own connection string).
    pub(crate) fn from_args(
        args: &ClientArgs,
        connection_string: Option<&str>,
    ) -> Result<Self, TargetError> {
        let raw = RawTarget {
            connection_string: connection_string.or(args.hub.as_deref()),
            endpoint: args.endpoint.as_deref(),
            ca: args.ca.as_deref(),
            data_dir: &args.data_dir,
        };
        let local = LocalHub::read(&args.data_dir)?;
        Self::resolve(raw, &local)
    }

    /// Applies the precedence in the module doc.
    pub(crate) fn resolve(raw: RawTarget<'_>, local: &LocalHub) -> Result<Self, TargetError> {
        let text = raw
            .connection_string
            .or(local.owner_connection_string.as_deref())
            .ok_or_else(|| TargetError::NoHub(raw.data_dir.join("hub.json")))?;
        let parsed =
            ConnectionString::parse(text).map_err(|e| TargetError::ConnectionString(e.into()))?;
        let host_name = parsed.host_name.clone();
        let key = parsed.shared_access_key.clone().ok_or(TargetError::NoKey)?;
        let credential = match (parsed.shared_access_key_name, parsed.device_id) {
            (Some(name), _) => Credential::Policy { name, key },
            (None, Some(id)) => Credential::Device { id, key },
            (None, None) => return Err(TargetError::NoKey),
        };

        let running = local
            .running
            .as_ref()
            .filter(|run| run.host_name.eq_ignore_ascii_case(&host_name));
        let endpoint = match (raw.endpoint, running) {
            (Some(given), _) => given,
            (None, Some(run)) => run.https_endpoint.as_str(),
            (None, None) => "",
        };
        let protocol_ports = running
            .filter(|_| raw.endpoint.is_none())
            .map(|run| (run.mqtt_port, run.amqp_port));
        let endpoint = if endpoint.is_empty() {
            Url::parse(&format!("https://{host_name}:443"))
                .map_err(|_| TargetError::Endpoint(host_name.clone()))?
        } else {
            parse_endpoint(endpoint)?
        };

        let local_is_this_hub = local
            .host_name
            .as_deref()
            .is_some_and(|h| h.eq_ignore_ascii_case(&host_name));
        let ca_path = raw
            .ca
            .map(Path::to_path_buf)
            .or_else(|| running.and_then(|run| run.ca_path.clone()))
            .or_else(|| local.ca_path.clone().filter(|_| local_is_this_hub))
            .ok_or_else(|| TargetError::NoCa {
                endpoint: endpoint.clone(),
                data_dir: raw.data_dir.to_owned(),
            })?;

        Ok(Self {
            host_name,
            endpoint,
            ca_path,
            credential,
            protocol_ports,
        })
    }

    /// The credential as a connection string for the SDK, acting as `device`
    /// when given; the endpoint's host becomes `GatewayHostName` when it is
    /// not the hub's host name.
    fn sdk_connection_string(&self, device: Option<&str>) -> Result<String, TargetError> {
        let host = &self.host_name;
        let mut text = match (&self.credential, device) {
            (Credential::Policy { name, key }, None) => {
                format!("HostName={host};SharedAccessKeyName={name};SharedAccessKey={key}")
            }
            (Credential::Policy { name, key }, Some(id)) => format!(
                "HostName={host};DeviceId={id};SharedAccessKeyName={name};SharedAccessKey={key}"
            ),
            (Credential::Device { id, .. }, None) => {
                return Err(TargetError::DeviceCredential(id.clone()))
            }
            (Credential::Device { id, key }, Some(wanted)) => {
                if id != wanted {
                    return Err(TargetError::WrongDevice {
                        own: id.clone(),
                        wanted: wanted.to_owned(),
                    });
                }
                format!("HostName={host};DeviceId={id};SharedAccessKey={key}")
            }
        };
        if let Some(gateway) = self
            .endpoint
            .host_str()
            .filter(|h| !h.eq_ignore_ascii_case(host))
        {
            text.push_str(";GatewayHostName=");
            text.push_str(gateway);
        }
        Ok(text)
    }

    fn https_port(&self) -> u16 {
        self.endpoint.port_or_known_default().unwrap_or(443)
    }

    fn service_options(&self) -> Result<ServiceOptions, TargetError> {
        Ok(ServiceOptions::new()
            .transport(ServiceTransport::Http)
            .ca_certificate_file(&self.ca_path)
            .map_err(TargetError::Client)?
            .https_port(self.https_port()))
    }

    /// The SDK's service client for this hub, over HTTPS (the one endpoint
    /// the CLI is given).
    pub(crate) fn service_client(&self) -> Result<ServiceClient, TargetError> {
        ServiceClient::with_options(&self.sdk_connection_string(None)?, self.service_options()?)
            .map_err(TargetError::Client)
    }

    /// The SDK's registry manager for this hub.
    pub(crate) fn registry(&self) -> Result<RegistryManager, TargetError> {
        RegistryManager::with_options(&self.sdk_connection_string(None)?, self.service_options()?)
            .map_err(TargetError::Client)
    }

    /// The SDK's device client acting as `device` over `transport`; MQTT and
    /// AMQP use the running local hub's ports, else the standard ones.
    pub(crate) fn device_client(
        &self,
        device: &str,
        transport: Transport,
    ) -> Result<DeviceClient, TargetError> {
        let mut options = DeviceOptions::new()
            .ca_certificate_file(&self.ca_path)
            .map_err(TargetError::Client)?
            .https_port(self.https_port());
        if let Some((mqtt, amqp)) = self.protocol_ports {
            if let Some(port) = mqtt {
                options = options.mqtt_port(port);
            }
            if let Some(port) = amqp {
                options = options.amqp_port(port);
            }
        }
        DeviceClient::with_options(
            &self.sdk_connection_string(Some(device))?,
            transport,
            options,
        )
        .map_err(TargetError::Client)
    }

    /// A `SharedAccessSignature …` header value for the whole hub (service
    /// and registry APIs), valid for an hour.
    pub(crate) fn authorization(&self) -> Result<String, TargetError> {
        let expiry = SystemTime::now()
            .checked_add(TOKEN_LIFETIME)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        self.authorization_until(expiry)
    }

    fn authorization_until(&self, expiry_unix: u64) -> Result<String, TargetError> {
        let (key, key_name) = match &self.credential {
            Credential::Policy { name, key } => (key, name.as_str()),
            Credential::Device { id, .. } => return Err(TargetError::DeviceCredential(id.clone())),
        };
        courier_auth::generate_token(&self.host_name, key, Some(key_name), expiry_unix)
            .map_err(|e| TargetError::Sign(e.into()))
    }
}

fn parse_endpoint(text: &str) -> Result<Url, TargetError> {
    let url = Url::parse(text).map_err(|_| TargetError::Endpoint(text.to_owned()))?;
    let usable = url.scheme() == "https"
        && url.host_str().is_some()
        && url.query().is_none()
        && url.fragment().is_none();
    if usable {
        Ok(url)
    } else {
        Err(TargetError::Endpoint(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn owner_cs(host: &str) -> String {
        format!("HostName={host};SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}")
    }

    fn local(host: &str, running_port: Option<u16>) -> LocalHub {
        LocalHub {
            host_name: Some(host.to_owned()),
            owner_connection_string: Some(owner_cs(host)),
            running: running_port.map(|port| RunFile {
                pid: 1,
                host_name: host.to_owned(),
                https_port: port,
                https_endpoint: format!("https://{host}:{port}"),
                ca_path: Some(PathBuf::from("/run/ca.pem")),
                mqtt_port: None,
                amqp_port: None,
            }),
            ca_path: Some(PathBuf::from("/data/tls/ca.pem")),
        }
    }

    fn raw<'a>(
        cs: Option<&'a str>,
        endpoint: Option<&'a str>,
        ca: Option<&'a Path>,
    ) -> RawTarget<'a> {
        RawTarget {
            connection_string: cs,
            endpoint,
            ca,
            data_dir: Path::new("/data"),
        }
    }

    #[test]
    fn the_data_directory_alone_gives_owner_policy_running_endpoint_and_its_ca() {
        let target =
            Target::resolve(raw(None, None, None), &local("localhost", Some(8443))).unwrap();
        assert_eq!(target.host_name, "localhost");
        assert_eq!(target.endpoint.as_str(), "https://localhost:8443/");
        assert_eq!(target.ca_path, PathBuf::from("/run/ca.pem"));
        assert_eq!(
            target.credential,
            Credential::Policy {
                name: "iothubowner".into(),
                key: KEY.into()
            }
        );
    }

    #[test]
    fn explicit_flags_win_over_the_data_directory() {
        let cs = format!("HostName=localhost;SharedAccessKeyName=service;SharedAccessKey={KEY}");
        let ca = Path::new("/given/ca.pem");
        let target = Target::resolve(
            raw(Some(&cs), Some("https://127.0.0.1:9999"), Some(ca)),
            &local("localhost", Some(8443)),
        )
        .unwrap();
        assert_eq!(target.endpoint.as_str(), "https://127.0.0.1:9999/");
        assert_eq!(target.ca_path, ca);
        assert!(
            matches!(target.credential, Credential::Policy { ref name, .. } if name == "service")
        );
    }

    #[test]
    fn a_stopped_local_hub_falls_back_to_port_443_and_the_data_directory_ca() {
        let target = Target::resolve(raw(None, None, None), &local("localhost", None)).unwrap();
        assert_eq!(target.endpoint.as_str(), "https://localhost/");
        assert_eq!(target.endpoint.port_or_known_default(), Some(443));
        assert_eq!(target.ca_path, PathBuf::from("/data/tls/ca.pem"));
    }

    #[test]
    fn another_hubs_connection_string_ignores_the_local_run_file_and_ca() {
        let cs = owner_cs("hub.example.test");
        let result = Target::resolve(raw(Some(&cs), None, None), &local("localhost", Some(8443)));
        match result {
            Err(TargetError::NoCa { endpoint, .. }) => {
                assert_eq!(endpoint.as_str(), "https://hub.example.test/");
            }
            other => panic!("expected NoCa, got {other:?}"),
        }
        let ca = Path::new("/given/ca.pem");
        let target = Target::resolve(
            raw(Some(&cs), None, Some(ca)),
            &local("localhost", Some(8443)),
        )
        .unwrap();
        assert_eq!(target.endpoint.host_str(), Some("hub.example.test"));
        assert_eq!(target.ca_path, ca);
    }

    #[test]
    fn host_names_match_the_run_file_without_regard_to_case() {
        let cs = owner_cs("LocalHost");
        let target =
            Target::resolve(raw(Some(&cs), None, None), &local("localhost", Some(8443))).unwrap();
        assert_eq!(target.endpoint.port(), Some(8443));
    }

    #[test]
    fn without_connection_string_or_hub_file_the_error_names_both_ways() {
        let err = Target::resolve(raw(None, None, None), &LocalHub::default()).unwrap_err();
        assert!(matches!(err, TargetError::NoHub(ref p) if p == Path::new("/data/hub.json")));
        let text = err.to_string();
        assert!(
            text.contains("--hub") && text.contains("--data-dir"),
            "{text}"
        );
    }

    #[test]
    fn endpoints_must_be_https_urls() {
        for bad in [
            "http://localhost:80",
            "localhost:8443",
            "https://h/?x=1",
            "not a url",
        ] {
            let result = Target::resolve(raw(None, Some(bad), None), &local("localhost", None));
            assert!(
                matches!(result, Err(TargetError::Endpoint(ref e)) if e == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_device_connection_string_acts_only_as_its_own_device() {
        let cs = format!("HostName=localhost;DeviceId=dev1;SharedAccessKey={KEY}");
        let target =
            Target::resolve(raw(Some(&cs), None, None), &local("localhost", Some(8443))).unwrap();
        assert_eq!(
            target.sdk_connection_string(Some("dev1")).unwrap(),
            format!("HostName=localhost;DeviceId=dev1;SharedAccessKey={KEY}")
        );
        assert!(matches!(
            target.sdk_connection_string(Some("dev2")),
            Err(TargetError::WrongDevice { .. })
        ));
        assert!(matches!(
            target.sdk_connection_string(None),
            Err(TargetError::DeviceCredential(ref id)) if id == "dev1"
        ));
        assert!(matches!(
            target.authorization_until(2_000_000_000),
            Err(TargetError::DeviceCredential(ref id)) if id == "dev1"
        ));
    }

    #[test]
    fn policy_tokens_name_the_policy_and_policies_act_as_any_device() {
        let target =
            Target::resolve(raw(None, None, None), &local("localhost", Some(8443))).unwrap();
        let hub = target.authorization_until(2_000_000_000).unwrap();
        assert!(hub.starts_with("SharedAccessSignature "), "{hub}");
        assert!(
            hub.contains("sr=localhost&") || hub.ends_with("sr=localhost"),
            "{hub}"
        );
        assert!(hub.contains("skn=iothubowner"), "{hub}");
        assert!(hub.contains("se=2000000000"), "{hub}");
        let device = target.sdk_connection_string(Some("d1")).unwrap();
        assert_eq!(
            device,
            format!("HostName=localhost;DeviceId=d1;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}")
        );
    }

    #[test]
    fn an_endpoint_on_another_host_becomes_the_gateway() {
        let target = Target::resolve(
            raw(
                None,
                Some("https://127.0.0.1:9443"),
                Some(Path::new("/ca.pem")),
            ),
            &local("localhost", None),
        )
        .unwrap();
        let service = target.sdk_connection_string(None).unwrap();
        assert!(service.ends_with(";GatewayHostName=127.0.0.1"), "{service}");
        assert_eq!(target.https_port(), 9443);
        assert_eq!(target.protocol_ports, None);
    }

    #[test]
    fn the_data_directory_files_are_read_and_missing_ones_are_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(LocalHub::read(dir.path())
            .unwrap()
            .owner_connection_string
            .is_none());
        std::fs::write(
            dir.path().join("hub.json"),
            format!(
                r#"{{"hostName":"localhost","policies":[
                {{"keyName":"service","primaryKey":"x","secondaryKey":"y","rights":"ServiceConnect"}},
                {{"keyName":"iothubowner","primaryKey":"{KEY}","secondaryKey":"y",
                  "rights":"RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect"}}]}}"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("run.json"),
            r#"{"pid":1,"hostName":"localhost","httpsPort":4443,"httpsEndpoint":"https://localhost:4443","caPath":"/x/ca.pem"}"#,
        )
        .unwrap();
        let read = LocalHub::read(dir.path()).unwrap();
        assert_eq!(read.owner_connection_string, Some(owner_cs("localhost")));
        assert_eq!(
            read.running.unwrap().https_endpoint,
            "https://localhost:4443"
        );
        assert_eq!(read.ca_path, None);
    }
}
