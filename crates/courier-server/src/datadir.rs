//! The data directory: where a hub keeps its log, keys and certificates, and
//! the two small JSON files the `courier` CLI reads to find a running hub.
//!
//! ```text
//! {root}/            0700
//!   courier.toml     optional config (see `config`)
//!   hub.json         0600  host name and shared access policies (secrets)
//!   run.json               pid, port, endpoint, CA of the running server
//!   tls/             0700  dev CA and server certificate (see `tls`)
//!   wal/                   the store's files
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use courier_auth::{ConnectionString, Policy};
use serde::{Deserialize, Serialize};

/// Name of the owner policy whose connection string `serve` prints.
pub const OWNER_POLICY: &str = "iothubowner";

/// Why a data-directory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A file or directory could not be created, read, written or removed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "cannot create".
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON file is not what this version of Courier writes.
    #[error("{path} is corrupt: {source}; restore it from a backup, or move the data directory away to start a new hub")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// `hub.json` lacks the owner policy that the CLI and `serve` rely on.
    #[error("{path} has no '{OWNER_POLICY}' policy; restore it from a backup")]
    NoOwnerPolicy {
        /// The file.
        path: PathBuf,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError {
    let path = path.to_path_buf();
    move |source| DataDirError::Io {
        action,
        path,
        source,
    }
}

/// The data directory of one hub.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// Identity of the hub, persisted in `hub.json`: its host name and policies with their keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubFile {
    /// The host name the hub was last started with.
    pub host_name: String,
    /// Shared access policies with their keys.
    pub policies: Vec<Policy>,
}

/// Written by a running server in `run.json` so the CLI can find it; removed at clean shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunFile {
    /// Process id of the server.
    pub pid: u32,
    /// The hub's host name.
    pub host_name: String,
    /// The HTTPS port actually bound (never 0).
    pub https_port: u16,
    /// Base URL of the HTTPS API, e.g. `https://localhost:8443`.
    pub https_endpoint: String,
    /// The CA to trust when the certificate is the generated one.
    pub ca_path: Option<PathBuf>,
    /// The MQTT-over-TLS port actually bound; absent in files of older versions.
    #[serde(default)]
    pub mqtt_port: Option<u16>,
    /// The AMQP-over-TLS port actually bound; absent in files of older versions.
    #[serde(default)]
    pub amqp_port: Option<u16>,
}

impl DataDir {
    /// Opens `root`, creating it (mode 0700: it holds keys) if it does not exist.
    pub fn open_or_create(root: impl Into<PathBuf>) -> Result<DataDir, DataDirError> {
        let root = root.into();
        create_private_dir(&root)?;
        Ok(DataDir { root })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store's write-ahead log directory (created by the store).
    pub fn wal_dir(&self) -> PathBuf {
        self.root.join("wal")
    }

    /// The directory of generated certificates and keys.
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// The generated development CA certificate (PEM) that clients trust.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.tls_dir().join("ca.pem")
    }

    /// `hub.json`.
    pub fn hub_file_path(&self) -> PathBuf {
        self.root.join("hub.json")
    }

    /// `run.json`.
    pub fn run_file_path(&self) -> PathBuf {
        self.root.join("run.json")
    }

    /// Loads `hub.json`, creating it with fresh policy keys on first start.
    ///
    /// When `hostname` differs from the stored one, the stored name is updated
    /// and the keys are kept, so existing credentials stay valid.
    pub fn load_or_create_hub<R>(
        &self,
        hostname: &str,
        rng: &mut R,
    ) -> Result<HubFile, DataDirError>
    where
        R: rand::RngCore + rand::CryptoRng + ?Sized,
    {
        let path = self.hub_file_path();
        match read_json::<HubFile>(&path)? {
            Some(mut hub) => {
                if hub.policy(OWNER_POLICY).is_none() {
                    return Err(DataDirError::NoOwnerPolicy { path });
                }
                if hub.host_name != hostname {
                    tracing::info!(old = %hub.host_name, new = %hostname, "host name changed; keys kept");
                    hub.host_name = hostname.to_owned();
                    write_json_atomic(&path, &hub)?;
                }
                Ok(hub)
            }
            None => {
                let hub = HubFile {
                    host_name: hostname.to_owned(),
                    policies: courier_auth::default_policies(rng),
                };
                write_json_atomic(&path, &hub)?;
                Ok(hub)
            }
        }
    }

    /// Loads `hub.json` without creating it (for the CLI); `None` if the hub never started.
    pub fn load_hub(&self) -> Result<Option<HubFile>, DataDirError> {
        read_json(&self.hub_file_path())
    }

    /// Writes `run.json` (replacing a stale one).
    pub fn write_run(&self, run: &RunFile) -> Result<(), DataDirError> {
        write_json_atomic(&self.run_file_path(), run)
    }

    /// Removes `run.json`; absent is fine.
    pub fn remove_run(&self) -> Result<(), DataDirError> {
        let path = self.run_file_path();
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err("cannot remove", &path)(e))
            }
            _ => Ok(()),
        }
    }

    /// Loads `run.json`; `None` when no server has it open. The pid may be
    /// stale if the server was killed; callers check it.
    pub fn load_run(&self) -> Result<Option<RunFile>, DataDirError> {
        read_json(&self.run_file_path())
    }
}

impl HubFile {
    /// The policy named `name`.
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.key_name == name)
    }

    /// The `iothubowner` connection string (primary key); `None` only if
    /// someone removed that policy from the file.
    pub fn owner_connection_string(&self) -> Option<String> {
        self.policy(OWNER_POLICY).map(|p| {
            ConnectionString::for_policy(&self.host_name, &p.key_name, &p.primary_key).to_string()
        })
    }
}

/// Creates `dir` and its missing parents with mode 0700; an existing directory is left as is.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), DataDirError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io_err("cannot create", dir))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, DataDirError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("cannot read", path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| DataDirError::Corrupt {
            path: path.to_path_buf(),
            source,
        })
}

fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), DataDirError> {
    let mut json = serde_json::to_vec_pretty(value).map_err(|source| DataDirError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    json.push(b'\n');
    write_private_atomic(path, &json)
}

/// Writes `bytes` to `path` with mode 0600 so that a crash leaves either the
/// old file or the new one, never a torn one: temp file, fsync, rename, fsync dir.
pub(crate) fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // tempfile creates the file 0600 on Unix.
    let mut tmp = tempfile::Builder::new()
        .prefix(".courier-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_err("cannot create a file in", dir))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_err("cannot write", tmp.path()))?;
    tmp.persist(path)
        .map_err(|e| io_err("cannot replace", path)(e.error))?;
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn open_creates_a_private_directory_and_names_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("a/courier-data");
        let dir = DataDir::open_or_create(&root).unwrap();
        assert!(root.is_dir());
        #[cfg(unix)]
        assert_eq!(mode(&root), 0o700);
        assert_eq!(dir.wal_dir(), root.join("wal"));
        assert_eq!(dir.ca_cert_path(), root.join("tls/ca.pem"));
        assert_eq!(dir.hub_file_path(), root.join("hub.json"));
        assert_eq!(dir.run_file_path(), root.join("run.json"));
        // Opening again is fine.
        DataDir::open_or_create(&root).unwrap();
    }

    #[test]
    fn hub_file_is_created_once_then_loaded_and_follows_hostname() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open_or_create(tmp.path()).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let first = dir.load_or_create_hub("localhost", &mut rng).unwrap();
        #[cfg(unix)]
        assert_eq!(mode(&dir.hub_file_path()), 0o600);
        assert_eq!(first.host_name, "localhost");
        let owner = first.policy(OWNER_POLICY).unwrap();
        assert!(!owner.primary_key.is_empty());

        let again = dir.load_or_create_hub("localhost", &mut rng).unwrap();
        assert_eq!(again, first, "second start loads, does not regenerate");

        let renamed = dir
            .load_or_create_hub("hub.example.test", &mut rng)
            .unwrap();
        assert_eq!(renamed.host_name, "hub.example.test");
        assert_eq!(renamed.policies, first.policies, "keys kept");
        assert_eq!(
            dir.load_hub().unwrap().unwrap(),
            renamed,
            "change persisted"
        );

        let cs = renamed.owner_connection_string().unwrap();
        assert_eq!(
            cs,
            format!(
                "HostName=hub.example.test;SharedAccessKeyName=iothubowner;SharedAccessKey={}",
                owner.primary_key
            )
        );
    }

    #[test]
    fn hub_file_uses_camel_case_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open_or_create(tmp.path()).unwrap();
        dir.load_or_create_hub("h.test", &mut rand::rngs::OsRng)
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.hub_file_path()).unwrap()).unwrap();
        assert_eq!(v["hostName"], "h.test");
        assert!(v["policies"][0]["primaryKey"].is_string(), "{v}");
    }

    #[test]
    fn corrupt_or_ownerless_hub_file_is_an_error_not_a_new_hub() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open_or_create(tmp.path()).unwrap();
        std::fs::write(dir.hub_file_path(), b"{not json").unwrap();
        let err = dir
            .load_or_create_hub("localhost", &mut rand::rngs::OsRng)
            .unwrap_err();
        assert!(matches!(err, DataDirError::Corrupt { .. }), "{err}");
        assert_eq!(std::fs::read(dir.hub_file_path()).unwrap(), b"{not json");

        std::fs::write(dir.hub_file_path(), br#"{"hostName":"x","policies":[]}"#).unwrap();
        let err = dir
            .load_or_create_hub("localhost", &mut rand::rngs::OsRng)
            .unwrap_err();
        assert!(matches!(err, DataDirError::NoOwnerPolicy { .. }), "{err}");
        let hub = HubFile {
            host_name: "x".into(),
            policies: vec![],
        };
        assert_eq!(hub.owner_connection_string(), None);
    }

    #[test]
    fn run_files_of_older_versions_still_load() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open_or_create(tmp.path()).unwrap();
        std::fs::write(
            dir.run_file_path(),
            br#"{"pid":7,"hostName":"localhost","httpsPort":8443,"httpsEndpoint":"https://localhost:8443","caPath":null}"#,
        )
        .unwrap();
        let run = dir.load_run().unwrap().unwrap();
        assert_eq!((run.pid, run.mqtt_port, run.amqp_port), (7, None, None));
    }

    #[test]
    fn run_file_round_trips_and_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open_or_create(tmp.path()).unwrap();
        assert_eq!(dir.load_run().unwrap(), None);
        dir.remove_run().unwrap();
        let run = RunFile {
            pid: std::process::id(),
            host_name: "localhost".into(),
            https_port: 8443,
            https_endpoint: "https://localhost:8443".into(),
            ca_path: Some(dir.ca_cert_path()),
            mqtt_port: Some(8883),
            amqp_port: Some(5671),
        };
        dir.write_run(&run).unwrap();
        assert_eq!(dir.load_run().unwrap(), Some(run));
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.run_file_path()).unwrap()).unwrap();
        assert_eq!(v["httpsPort"], 8443);
        assert_eq!(v["mqttPort"], 8883);
        dir.remove_run().unwrap();
        assert_eq!(dir.load_run().unwrap(), None);
        let leftovers: Vec<_> = std::fs::read_dir(dir.root())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    }
}
