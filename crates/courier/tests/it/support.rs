//! A real hub for the CLI's tests: the `courier` binary itself, started with
//! `courier serve` on an ephemeral port in a fresh data directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a hub may take to start (a cold CI machine generates keys and certificates).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often to look for run.json while the hub starts.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

const BIN: &str = env!("CARGO_BIN_EXE_courier");

/// A running `courier serve`, killed on drop.
pub(crate) struct Hub {
    dir: tempfile::TempDir,
    child: Child,
}

impl Hub {
    /// Starts a hub for `localhost` on 127.0.0.1 and waits until its run.json names it.
    pub(crate) fn start() -> Hub {
        Hub::start_with(&[])
    }

    /// Like [`Hub::start`], with extra `courier serve` flags.
    pub(crate) fn start_with(extra: &[&str]) -> Hub {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = spawn_serve(dir.path(), Ports::EPHEMERAL, extra);
        let mut hub = Hub { dir, child };
        hub.wait_until_running();
        hub
    }

    /// Kills the hub with SIGKILL (no shutdown of any kind), then starts it
    /// again on the same data directory with `extra` flags.
    pub(crate) fn kill_and_restart(&mut self, extra: &[&str]) {
        self.child.kill().expect("SIGKILL courier serve");
        self.child.wait().expect("reap courier serve");
        self.child = spawn_serve(self.dir.path(), Ports::EPHEMERAL, extra);
        self.wait_until_running();
    }

    /// Kills the hub with SIGKILL and starts it again on the same data
    /// directory and the same ports, so that clients can reconnect.
    pub(crate) fn kill_and_restart_on_same_ports(&mut self, extra: &[&str]) {
        let ports = self.ports();
        self.child.kill().expect("SIGKILL courier serve");
        self.child.wait().expect("reap courier serve");
        self.child = spawn_serve(self.dir.path(), ports, extra);
        self.wait_until_running();
    }

    /// The ports the running hub listens on, from its run.json.
    pub(crate) fn ports(&self) -> Ports {
        let run: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.data_dir().join("run.json")).unwrap())
                .unwrap();
        let port = |key: &str| u16::try_from(run[key].as_u64().unwrap()).unwrap();
        Ports {
            https: port("httpsPort"),
            mqtt: port("mqttPort"),
            amqp: port("amqpPort"),
        }
    }

    /// The CA certificate clients must trust.
    pub(crate) fn ca_path(&self) -> PathBuf {
        self.data_dir().join("tls").join("ca.pem")
    }

    /// The owner policy's primary key, from hub.json.
    pub(crate) fn owner_key(&self) -> String {
        let hub: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.data_dir().join("hub.json")).unwrap())
                .unwrap();
        hub["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["keyName"] == "iothubowner")
            .and_then(|p| p["primaryKey"].as_str())
            .unwrap()
            .to_owned()
    }

    /// The owner policy's connection string.
    pub(crate) fn owner_connection_string(&self) -> String {
        format!(
            "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey={}",
            self.owner_key()
        )
    }

    /// The hub's data directory.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// The ports a hub listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ports {
    /// HTTPS and WebSockets.
    pub(crate) https: u16,
    /// MQTT over TLS.
    pub(crate) mqtt: u16,
    /// AMQP over TLS.
    pub(crate) amqp: u16,
}

impl Ports {
    /// Let the system pick.
    const EPHEMERAL: Ports = Ports {
        https: 0,
        mqtt: 0,
        amqp: 0,
    };
}

fn spawn_serve(dir: &Path, ports: Ports, extra: &[&str]) -> Child {
    {
        let data = dir.join("data");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("serve.log"))
            .expect("log file");
        let mut serve = Command::new(BIN);
        serve
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--https-port",
                &ports.https.to_string(),
                "--mqtt-port",
                &ports.mqtt.to_string(),
                "--amqp-port",
                &ports.amqp.to_string(),
                "--bind",
                "127.0.0.1",
                "--hostname",
                "localhost",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        clear_courier_env(&mut serve);
        serve.spawn().expect("spawn courier serve")
    }
}

impl Hub {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// The hub's output (stdout and stderr) once it contains `needle`.
    pub(crate) fn log_containing(&self, needle: &str) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "courier serve did not print {needle:?} within {START_TIMEOUT:?}:\n{log}"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn wait_until_running(&mut self) {
        let run_file = self.data_dir().join("run.json");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll courier serve") {
                panic!(
                    "courier serve exited with {status} before it was running:\n{}",
                    self.log()
                );
            }
            if names_pid(&run_file, self.child.id()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "courier serve did not write {} within {START_TIMEOUT:?}:\n{}",
                run_file.display(),
                self.log()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        // The hub-selection flags belong to each command group, so they go
        // right after the group's name (`courier c2d --data-dir … send …`).
        let (group, rest) = args.split_first().expect("a command");
        command
            .arg(group)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(rest);
        clear_courier_env(&mut command);
        command
    }

    /// Runs `courier <args>` against this hub and waits for it.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run courier")
    }

    /// Starts `courier <args>` against this hub with captured output, for commands that wait.
    pub(crate) fn spawn_cli(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn courier")
    }

    /// Runs `courier <args>`, asserts it succeeded, and returns its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert_success(args, &output);
        String::from_utf8(output.stdout).expect("UTF-8 stdout")
    }

    /// Runs `courier <args> --json`, asserts it succeeded, and parses each stdout line.
    pub(crate) fn json(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        self.ok(&with_json)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `courier <args>` with no hub selected (e.g. `bench c2d --broker …`).
pub(crate) fn courier(args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).stdin(Stdio::null());
    clear_courier_env(&mut command);
    command.output().expect("run courier")
}

/// A throwaway Mosquitto on 127.0.0.1 (plain MQTT, no persistence), killed
/// on drop: the broker `courier bench c2d --broker` compares the hub with.
pub(crate) struct Mosquitto {
    _dir: tempfile::TempDir,
    child: Child,
    /// Its port.
    pub(crate) port: u16,
}

impl Mosquitto {
    /// Starts Mosquitto and waits until it accepts connections; `None` when it
    /// is not installed, except under CI (`scripts/test-all.sh` installs it),
    /// where that is a failure.
    pub(crate) fn start() -> Option<Mosquitto> {
        let bin = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .or_else(|| {
                Command::new("mosquitto")
                    .arg("-h")
                    .output()
                    .ok()
                    .map(|_| PathBuf::from("mosquitto"))
            });
        let Some(bin) = bin else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "mosquitto is not installed (scripts/test-all.sh installs it)"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .expect("write mosquitto.conf");
        let log = std::fs::File::create(dir.path().join("mosquitto.log")).expect("log file");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn mosquitto");
        let mut broker = Mosquitto {
            _dir: dir,
            child,
            port,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = broker.child.try_wait().expect("poll mosquitto") {
                panic!("mosquitto exited with {status} before it listened on {port}");
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
        Some(broker)
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seconds since the Unix epoch, `from_now` from now (SAS token expiries).
pub(crate) fn unix_time_in(from_now: Duration) -> u64 {
    (std::time::SystemTime::now() + from_now)
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Panics with the command's stderr unless it exited 0.
pub(crate) fn assert_success(args: &[&str], output: &Output) {
    assert!(
        output.status.success(),
        "courier {args:?} failed with {}:\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn names_pid(run_file: &Path, pid: u32) -> bool {
    std::fs::read(run_file)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|run| run["pid"] == pid && run["httpsEndpoint"].is_string())
}

/// Keeps the developer's own COURIER_* settings out of the tests.
fn clear_courier_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COURIER_") {
            command.env_remove(name);
        }
    }
}

/// A TLS connection to `port` trusting only the hub's CA.
pub(crate) async fn tls(
    port: u16,
    ca: &Path,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}
