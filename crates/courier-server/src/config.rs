//! `courier serve` configuration: flags and `COURIER_*` environment variables
//! (via clap), an optional TOML file, and defaults, resolved into one
//! validated [`Config`].
//!
//! Precedence, highest first: a flag or its environment variable, the file
//! named by `--config`, `{data_dir}/courier.toml`, the built-in default (IoT
//! Hub's values). TOML keys are the flag names in snake_case; durations are
//! strings such as `"90s"` (a bare integer means seconds). Relative paths in a
//! file are relative to that file's directory.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default HTTPS port: the one the SDKs hard-code.
pub const DEFAULT_HTTPS_PORT: u16 = 443;
/// Default MQTT-over-TLS port: the one the SDKs hard-code.
pub const DEFAULT_MQTT_PORT: u16 = 8883;
/// Default AMQP-over-TLS port: the one the SDKs hard-code.
pub const DEFAULT_AMQP_PORT: u16 = 5671;
/// Default number of connections each listener serves at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default number of unacknowledged C2D messages outstanding per MQTT connection.
pub const DEFAULT_MQTT_MAX_IN_FLIGHT: u16 = 16;
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./courier-data";
/// Default host name; works for the Python, Node and .NET SDKs (C and Java need a dot).
pub const DEFAULT_HOSTNAME: &str = "localhost";
/// Name of the config file read from the data directory when present.
pub const DATA_DIR_CONFIG_FILE: &str = "courier.toml";
/// Largest accepted max delivery count, as IoT Hub.
pub const MAX_DELIVERY_COUNT_LIMIT: u32 = 100;
/// Records per feedback batch, as IoT Hub.
pub const FEEDBACK_MAX_BATCH_RECORDS: usize = 64;

/// Flags of `courier serve`. Every field is optional so that a value left
/// unset falls through to the config file and then to the default.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Directory for the hub's data (write-ahead log, keys, certificates) [default: ./courier-data]
    #[arg(long, env = "COURIER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Host name devices and services use to reach the hub; it goes into the
    /// server certificate and connection strings. The C and Java SDKs need a
    /// name with a dot (e.g. hub.example.test) [default: localhost]
    #[arg(long, env = "COURIER_HOSTNAME", value_name = "NAME")]
    pub hostname: Option<String>,

    /// TOML config file; its keys are these flags' names in snake_case
    #[arg(long, env = "COURIER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on; use 0.0.0.0 (or ::) so devices on other machines can connect [default: 127.0.0.1]
    #[arg(long, env = "COURIER_BIND", value_name = "IP")]
    pub bind: Option<IpAddr>,

    /// HTTPS port (service API, device HTTPS, MQTT over WebSockets); 0 picks a free port [default: 443]
    #[arg(long, env = "COURIER_HTTPS_PORT", value_name = "PORT")]
    pub https_port: Option<u16>,

    /// MQTT over TLS port (MQTT over WebSockets is on the HTTPS port); 0 picks a free port [default: 8883]
    #[arg(long, env = "COURIER_MQTT_PORT", value_name = "PORT")]
    pub mqtt_port: Option<u16>,

    /// AMQP over TLS port (AMQP over WebSockets is on the HTTPS port); 0 picks a free port [default: 5671]
    #[arg(long, env = "COURIER_AMQP_PORT", value_name = "PORT")]
    pub amqp_port: Option<u16>,

    /// Also serve MQTT WITHOUT TLS on this port, for development only: keys and tokens cross the network in clear [default: off]
    #[arg(long, env = "COURIER_MQTT_PLAIN_PORT", value_name = "PORT")]
    pub mqtt_plain_port: Option<u16>,

    /// Most connections each listener (HTTPS, MQTT, AMQP, MQTT plain) serves at
    /// once; further peers wait in the kernel's backlog. Each costs a file
    /// descriptor: the hub raises its open-files limit to the hard limit
    /// (`ulimit -Hn`) at start [default: 10000]
    #[arg(long, env = "COURIER_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most C2D messages delivered but not yet acknowledged (PUBACK) per MQTT connection [default: 16]
    #[arg(long, env = "COURIER_MQTT_MAX_IN_FLIGHT", value_name = "N")]
    pub mqtt_max_in_flight: Option<u16>,

    /// Server certificate chain (PEM) instead of the generated development certificate; needs --tls-key (flag or config file)
    #[arg(long, env = "COURIER_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert
    #[arg(long, env = "COURIER_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Most messages queued per device; a send to a full queue fails with 403004 [default: 50]
    #[arg(long, env = "COURIER_MAX_QUEUE_DEPTH", value_name = "N")]
    pub max_queue_depth: Option<u32>,

    /// Largest C2D message in bytes, body plus properties [default: 65536]
    #[arg(long, env = "COURIER_MAX_MESSAGE_SIZE", value_name = "BYTES")]
    pub max_message_size: Option<usize>,

    /// Time to live of a message sent without an expiry, e.g. 90s, 5m, 1h, 2d [default: 1h]
    #[arg(long, env = "COURIER_DEFAULT_TTL", value_name = "DURATION", value_parser = parse_duration)]
    pub default_ttl: Option<Duration>,

    /// Longest time to live a sender may ask for [default: 48h]
    #[arg(long, env = "COURIER_MAX_TTL", value_name = "DURATION", value_parser = parse_duration)]
    pub max_ttl: Option<Duration>,

    /// Deliveries after which a message is dead-lettered, 1 to 100 [default: 10]
    #[arg(long, env = "COURIER_MAX_DELIVERY_COUNT", value_name = "N")]
    pub max_delivery_count: Option<u32>,

    /// How long a received message stays locked before it is redelivered [default: 60s]
    #[arg(long, env = "COURIER_LOCK_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub lock_timeout: Option<Duration>,

    /// What counts towards the max delivery count: every delivery, or only explicit abandons
    /// (IoT Hub's current behaviour) [default: every-delivery]
    #[arg(long, env = "COURIER_DELIVERY_COUNT_MODE", value_name = "MODE")]
    pub delivery_count_mode: Option<DeliveryCountMode>,

    /// How long feedback records gather before a batch is offered (at most 64 per batch) [default: 500ms]
    #[arg(long, env = "COURIER_FEEDBACK_BATCH_WINDOW", value_name = "DURATION", value_parser = parse_duration)]
    pub feedback_batch_window: Option<Duration>,

    /// Time to live of a feedback batch [default: 1h]
    #[arg(long, env = "COURIER_FEEDBACK_TTL", value_name = "DURATION", value_parser = parse_duration)]
    pub feedback_ttl: Option<Duration>,

    /// Deliveries of a feedback batch before it is dropped, 1 to 100 [default: 10]
    #[arg(long, env = "COURIER_FEEDBACK_MAX_DELIVERY_COUNT", value_name = "N")]
    pub feedback_max_delivery_count: Option<u32>,

    /// How long a received feedback batch stays locked [default: 60s]
    #[arg(long, env = "COURIER_FEEDBACK_LOCK_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub feedback_lock_timeout: Option<Duration>,

    /// Log filter, e.g. info, debug, or courier_hub=trace,info [default: info]
    #[arg(long, env = "COURIER_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
}

/// What counts towards a message's max delivery count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryCountMode {
    /// Every delivery counts, so a device that crashes on a message cannot loop on it.
    #[default]
    EveryDelivery,
    /// Only an explicit abandon counts; lock expiry redelivers until the TTL (IoT Hub today).
    AbandonOnly,
}

/// Where the HTTPS and MQTT (and later AMQP) listeners get their certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// A development CA and server certificate generated in the data directory.
    Generated,
    /// Operator-supplied PEM files.
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key of the leaf.
        key: PathBuf,
    },
}

/// Hub-wide limits on C2D messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Most messages queued per device.
    pub max_queue_depth: u32,
    /// Largest message in bytes, body plus properties.
    pub max_message_size: usize,
    /// TTL of a message sent without an expiry.
    pub default_ttl: Duration,
    /// Longest TTL a sender may ask for.
    pub max_ttl: Duration,
    /// Deliveries before a message is dead-lettered (1–100).
    pub max_delivery_count: u32,
    /// Lock duration of a received message.
    pub lock_timeout: Duration,
    /// What counts towards `max_delivery_count`.
    pub delivery_count_mode: DeliveryCountMode,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_queue_depth: 50,
            max_message_size: 65_536,
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(48 * 3600),
            max_delivery_count: 10,
            lock_timeout: Duration::from_secs(60),
            delivery_count_mode: DeliveryCountMode::EveryDelivery,
        }
    }
}

/// Settings of the feedback queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackConfig {
    /// How long records gather before a batch is offered.
    pub batch_window: Duration,
    /// Most records per batch.
    pub max_batch_records: usize,
    /// TTL of a batch.
    pub ttl: Duration,
    /// Deliveries of a batch before it is dropped (1–100).
    pub max_delivery_count: u32,
    /// Lock duration of a received batch.
    pub lock_timeout: Duration,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        Self {
            batch_window: Duration::from_millis(500),
            max_batch_records: FEEDBACK_MAX_BATCH_RECORDS,
            ttl: Duration::from_secs(3600),
            max_delivery_count: 10,
            lock_timeout: Duration::from_secs(60),
        }
    }
}

/// The resolved, validated configuration of one `courier serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Host name, ASCII lowercase (the Java service SDK lowercases it in SAS `sr`).
    pub hostname: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Listen address.
    pub bind: IpAddr,
    /// HTTPS port; 0 means pick a free one.
    pub https_port: u16,
    /// MQTT over TLS port; 0 means pick a free one.
    pub mqtt_port: u16,
    /// Plain-TCP MQTT port for development; `None` when not served.
    pub mqtt_plain_port: Option<u16>,
    /// AMQP over TLS port; 0 means pick a free one.
    pub amqp_port: u16,
    /// Connections each listener serves at once.
    pub max_connections: usize,
    /// Unacknowledged C2D messages per MQTT connection.
    pub mqtt_max_in_flight: u16,
    /// Certificate source.
    pub tls: TlsSource,
    /// C2D limits.
    pub limits: LimitsConfig,
    /// Feedback settings.
    pub feedback: FeedbackConfig,
    /// Log filter (tracing-subscriber `EnvFilter` syntax).
    pub log_level: String,
}

/// Why the configuration could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys or wrong types.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error (names the key and line).
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or malformed.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// Flag name of the setting, e.g. `--max-delivery-count`.
        setting: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
}

/// The config file: the same settings as [`ServeArgs`], all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    hostname: Option<String>,
    bind: Option<IpAddr>,
    https_port: Option<u16>,
    mqtt_port: Option<u16>,
    mqtt_plain_port: Option<u16>,
    mqtt_max_in_flight: Option<u16>,
    max_connections: Option<usize>,
    amqp_port: Option<u16>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    max_queue_depth: Option<u32>,
    max_message_size: Option<usize>,
    default_ttl: Option<FileDuration>,
    max_ttl: Option<FileDuration>,
    max_delivery_count: Option<u32>,
    lock_timeout: Option<FileDuration>,
    delivery_count_mode: Option<DeliveryCountMode>,
    feedback_batch_window: Option<FileDuration>,
    feedback_ttl: Option<FileDuration>,
    feedback_max_delivery_count: Option<u32>,
    feedback_lock_timeout: Option<FileDuration>,
    log_level: Option<String>,
}

/// A duration in the config file: `"90s"`-style text or an integer of seconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileDuration {
    Seconds(u64),
    Text(String),
}

impl FileDuration {
    fn resolve(&self, setting: &'static str) -> Result<Duration, ConfigError> {
        match self {
            FileDuration::Seconds(s) => Ok(Duration::from_secs(*s)),
            FileDuration::Text(t) => parse_duration(t).map_err(|e| ConfigError::Invalid {
                setting,
                reason: e.to_string(),
            }),
        }
    }
}

impl FileConfig {
    fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut file: FileConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        // Relative paths in a file mean "next to this file", wherever courier runs from.
        let base = path.parent().unwrap_or(Path::new(""));
        for p in [&mut file.data_dir, &mut file.tls_cert, &mut file.tls_key]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(file)
    }

    /// Fills every field unset in `self` from `lower` (`self` wins).
    fn or(self, lower: FileConfig) -> FileConfig {
        FileConfig {
            data_dir: self.data_dir.or(lower.data_dir),
            hostname: self.hostname.or(lower.hostname),
            bind: self.bind.or(lower.bind),
            https_port: self.https_port.or(lower.https_port),
            mqtt_port: self.mqtt_port.or(lower.mqtt_port),
            mqtt_plain_port: self.mqtt_plain_port.or(lower.mqtt_plain_port),
            mqtt_max_in_flight: self.mqtt_max_in_flight.or(lower.mqtt_max_in_flight),
            max_connections: self.max_connections.or(lower.max_connections),
            amqp_port: self.amqp_port.or(lower.amqp_port),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            max_queue_depth: self.max_queue_depth.or(lower.max_queue_depth),
            max_message_size: self.max_message_size.or(lower.max_message_size),
            default_ttl: self.default_ttl.or(lower.default_ttl),
            max_ttl: self.max_ttl.or(lower.max_ttl),
            max_delivery_count: self.max_delivery_count.or(lower.max_delivery_count),
            lock_timeout: self.lock_timeout.or(lower.lock_timeout),
            delivery_count_mode: self.delivery_count_mode.or(lower.delivery_count_mode),
            feedback_batch_window: self.feedback_batch_window.or(lower.feedback_batch_window),
            feedback_ttl: self.feedback_ttl.or(lower.feedback_ttl),
            feedback_max_delivery_count: self
                .feedback_max_delivery_count
                .or(lower.feedback_max_delivery_count),
            feedback_lock_timeout: self.feedback_lock_timeout.or(lower.feedback_lock_timeout),
            log_level: self.log_level.or(lower.log_level),
        }
    }
}

/// Picks the flag value, else the file's (a duration string parsed now), else the default.
fn pick_duration(
    flag: Option<Duration>,
    file: Option<&FileDuration>,
    setting: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match (flag, file) {
        (Some(d), _) => Ok(d),
        (None, Some(f)) => f.resolve(setting),
        (None, None) => Ok(default),
    }
}

impl Config {
    /// Resolves flags/env over the TOML file(s) over defaults, and validates the result.
    pub fn resolve(args: &ServeArgs) -> Result<Config, ConfigError> {
        let explicit = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let data_dir = args
            .data_dir
            .clone()
            .or_else(|| explicit.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let in_data_dir = data_dir.join(DATA_DIR_CONFIG_FILE);
        let from_data_dir = if in_data_dir.is_file() {
            let file = FileConfig::load(&in_data_dir)?;
            if file.data_dir.is_some() {
                return Err(ConfigError::Invalid {
                    setting: "data_dir",
                    reason: format!(
                        "{} cannot move the data directory it lives in; set data_dir in --config or with --data-dir",
                        in_data_dir.display()
                    ),
                });
            }
            file
        } else {
            FileConfig::default()
        };
        let file = explicit.or(from_data_dir);

        let hostname = normalize_hostname(
            args.hostname
                .as_deref()
                .or(file.hostname.as_deref())
                .unwrap_or(DEFAULT_HOSTNAME),
        )?;

        let tls = match (
            args.tls_cert.clone().or(file.tls_cert.clone()),
            args.tls_key.clone().or(file.tls_key.clone()),
        ) {
            (None, None) => TlsSource::Generated,
            (Some(cert), Some(key)) => TlsSource::Files { cert, key },
            (Some(_), None) => return Err(missing_pair("--tls-key", "--tls-cert")),
            (None, Some(_)) => return Err(missing_pair("--tls-cert", "--tls-key")),
        };

        let d = LimitsConfig::default();
        let limits = LimitsConfig {
            max_queue_depth: args
                .max_queue_depth
                .or(file.max_queue_depth)
                .unwrap_or(d.max_queue_depth),
            max_message_size: args
                .max_message_size
                .or(file.max_message_size)
                .unwrap_or(d.max_message_size),
            default_ttl: pick_duration(
                args.default_ttl,
                file.default_ttl.as_ref(),
                "--default-ttl",
                d.default_ttl,
            )?,
            max_ttl: pick_duration(args.max_ttl, file.max_ttl.as_ref(), "--max-ttl", d.max_ttl)?,
            max_delivery_count: args
                .max_delivery_count
                .or(file.max_delivery_count)
                .unwrap_or(d.max_delivery_count),
            lock_timeout: pick_duration(
                args.lock_timeout,
                file.lock_timeout.as_ref(),
                "--lock-timeout",
                d.lock_timeout,
            )?,
            delivery_count_mode: args
                .delivery_count_mode
                .or(file.delivery_count_mode)
                .unwrap_or(d.delivery_count_mode),
        };

        let f = FeedbackConfig::default();
        let feedback = FeedbackConfig {
            batch_window: pick_duration(
                args.feedback_batch_window,
                file.feedback_batch_window.as_ref(),
                "--feedback-batch-window",
                f.batch_window,
            )?,
            max_batch_records: f.max_batch_records,
            ttl: pick_duration(
                args.feedback_ttl,
                file.feedback_ttl.as_ref(),
                "--feedback-ttl",
                f.ttl,
            )?,
            max_delivery_count: args
                .feedback_max_delivery_count
                .or(file.feedback_max_delivery_count)
                .unwrap_or(f.max_delivery_count),
            lock_timeout: pick_duration(
                args.feedback_lock_timeout,
                file.feedback_lock_timeout.as_ref(),
                "--feedback-lock-timeout",
                f.lock_timeout,
            )?,
        };

        let config = Config {
            hostname,
            data_dir,
            bind: args
                .bind
                .or(file.bind)
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            https_port: args
                .https_port
                .or(file.https_port)
                .unwrap_or(DEFAULT_HTTPS_PORT),
            mqtt_port: args
                .mqtt_port
                .or(file.mqtt_port)
                .unwrap_or(DEFAULT_MQTT_PORT),
            mqtt_plain_port: args.mqtt_plain_port.or(file.mqtt_plain_port),
            amqp_port: args
                .amqp_port
                .or(file.amqp_port)
                .unwrap_or(DEFAULT_AMQP_PORT),
            mqtt_max_in_flight: args
                .mqtt_max_in_flight
                .or(file.mqtt_max_in_flight)
                .unwrap_or(DEFAULT_MQTT_MAX_IN_FLIGHT),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
            tls,
            limits,
            feedback,
            log_level: args
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".to_owned()),
        };
        config.validate()?;
        Ok(config)
    }

    /// Things worth telling the operator that are not errors.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.hostname.contains('.') {
            out.push(format!(
                "host name '{}' has no dot: the C and Java SDKs will refuse it; \
                 use e.g. --hostname {}.example.test for them",
                self.hostname, self.hostname
            ));
        }
        if let Some(port) = self.mqtt_plain_port {
            out.push(format!(
                "serving MQTT without TLS on port {port} (--mqtt-plain-port): device keys and \
                 tokens cross the network in clear; for development only"
            ));
        }
        out
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let f = &self.feedback;
        check_delivery_count("--max-delivery-count", l.max_delivery_count)?;
        check_delivery_count("--feedback-max-delivery-count", f.max_delivery_count)?;
        if l.max_queue_depth == 0 {
            return Err(invalid("--max-queue-depth", "must be at least 1".into()));
        }
        if self.mqtt_max_in_flight == 0 {
            return Err(invalid("--mqtt-max-in-flight", "must be at least 1".into()));
        }
        // tokio's semaphore holds at most usize::MAX >> 3 permits.
        if self.max_connections == 0 || self.max_connections > (1 << 28) {
            return Err(invalid(
                "--max-connections",
                "must be between 1 and 268435456".into(),
            ));
        }
        if l.max_message_size == 0 {
            return Err(invalid(
                "--max-message-size",
                "must be at least 1 byte".into(),
            ));
        }
        // A zero TTL or lock would expire or redeliver every message at once.
        for (setting, value) in [
            ("--default-ttl", l.default_ttl),
            ("--max-ttl", l.max_ttl),
            ("--lock-timeout", l.lock_timeout),
            ("--feedback-ttl", f.ttl),
            ("--feedback-lock-timeout", f.lock_timeout),
        ] {
            if value < Duration::from_secs(1) {
                return Err(invalid(setting, "must be at least 1s".into()));
            }
        }
        if l.default_ttl > l.max_ttl {
            return Err(invalid(
                "--default-ttl",
                format!(
                    "{} is longer than --max-ttl {}; raise --max-ttl or lower --default-ttl",
                    format_duration(l.default_ttl),
                    format_duration(l.max_ttl)
                ),
            ));
        }
        Ok(())
    }
}

fn invalid(setting: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { setting, reason }
}

fn missing_pair(missing: &'static str, given: &str) -> ConfigError {
    invalid(
        missing,
        format!("{given} was given without {missing}; give both, or neither to use the generated development certificate"),
    )
}

fn check_delivery_count(setting: &'static str, value: u32) -> Result<(), ConfigError> {
    if (1..=MAX_DELIVERY_COUNT_LIMIT).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            setting,
            format!("{value} is out of range; allowed 1 to {MAX_DELIVERY_COUNT_LIMIT}"),
        ))
    }
}

/// Checks DNS host-name syntax (or an IPv4 address) and lowercases it.
fn normalize_hostname(raw: &str) -> Result<String, ConfigError> {
    let name = raw.to_ascii_lowercase();
    let bad = |why: &str| {
        invalid(
            "--hostname",
            format!("'{raw}' is not a valid host name: {why}"),
        )
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(bad("it has an empty label"));
        }
        if label.len() > 63 {
            return Err(bad("a label is longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad("only letters, digits, '-' and '.' are allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label starts or ends with '-'"));
        }
    }
    Ok(name)
}

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{input}' is not a duration; use e.g. 500ms, 90s, 5m, 1h, 2d or a number of seconds")]
pub struct ParseDurationError {
    input: String,
}

/// Parses `"500ms"`, `"90s"`, `"5m"`, `"1h"`, `"2d"` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, ParseDurationError> {
    let err = || ParseDurationError {
        input: text.to_owned(),
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    if digits.is_empty() {
        return Err(err());
    }
    let n: u64 = digits.parse().map_err(|_| err())?;
    let millis_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(err()),
    };
    let millis = n.checked_mul(millis_per_unit).ok_or_else(err)?;
    Ok(Duration::from_millis(millis))
}

/// Formats a duration in the largest unit that divides it, the inverse of [`parse_duration`].
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn args(flags: &[&str]) -> ServeArgs {
        let mut argv = vec!["courier"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).unwrap().serve
    }

    fn resolve_in(dir: &Path, mut flags: Vec<String>) -> Result<Config, ConfigError> {
        flags.push("--data-dir".into());
        flags.push(dir.display().to_string());
        let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        Config::resolve(&args(&refs))
    }

    #[test]
    fn durations_parse_in_every_unit() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("90s", Duration::from_secs(90)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("2d", Duration::from_secs(172_800)),
            ("45", Duration::from_secs(45)),
            (" 7 s ", Duration::from_secs(7)),
            ("0", Duration::ZERO),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_durations_are_rejected() {
        for text in [
            "",
            "s",
            "-5s",
            "1.5h",
            "10w",
            "5 minutes",
            "1h30m",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} was accepted");
        }
        let msg = parse_duration("10w").unwrap_err().to_string();
        assert!(msg.contains("'10w'") && msg.contains("90s"), "{msg}");
    }

    #[test]
    fn format_duration_round_trips() {
        for text in ["500ms", "90s", "5m", "1h", "2d", "1500ms", "61s"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
        }
    }

    #[test]
    fn defaults_are_iot_hubs() {
        let dir = tempfile::tempdir().unwrap();
        let c = resolve_in(dir.path(), vec![]).unwrap();
        assert_eq!(c.hostname, "localhost");
        assert_eq!(c.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.https_port, 443);
        assert_eq!(c.mqtt_port, 8883);
        assert_eq!(c.amqp_port, 5671);
        assert_eq!(c.mqtt_plain_port, None);
        assert_eq!(c.mqtt_max_in_flight, 16);
        assert_eq!(c.max_connections, 10_000);
        assert_eq!(c.tls, TlsSource::Generated);
        assert_eq!(c.limits, LimitsConfig::default());
        assert_eq!(c.limits.max_queue_depth, 50);
        assert_eq!(c.limits.max_message_size, 65_536);
        assert_eq!(c.limits.max_ttl, Duration::from_secs(172_800));
        assert_eq!(c.feedback.batch_window, Duration::from_millis(500));
        assert_eq!(c.feedback.max_batch_records, 64);
        assert_eq!(c.log_level, "info");
        assert_eq!(c.warnings().len(), 1, "localhost has no dot");
    }

    #[test]
    fn data_dir_defaults_to_courier_data() {
        // Only the path is computed; nothing is created by resolve.
        let c = Config::resolve(&args(&[])).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./courier-data"));
    }

    #[test]
    fn flags_beat_config_file_beats_data_dir_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("courier.toml"),
            "max_queue_depth = 7\nmax_delivery_count = 3\nlock_timeout = \"30s\"\nhostname = \"low.example.test\"\n",
        )
        .unwrap();
        let explicit = dir.path().join("explicit.toml");
        std::fs::write(
            &explicit,
            "max_queue_depth = 8\nhostname = \"Mid.Example.Test\"\nfeedback_ttl = 120\ndelivery_count_mode = \"abandon-only\"\n",
        )
        .unwrap();
        let c = resolve_in(
            dir.path(),
            vec![
                "--config".into(),
                explicit.display().to_string(),
                "--max-queue-depth".into(),
                "9".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.limits.max_queue_depth, 9, "flag wins");
        assert_eq!(c.hostname, "mid.example.test", "--config wins, lowercased");
        assert_eq!(
            c.limits.max_delivery_count, 3,
            "data-dir file fills the rest"
        );
        assert_eq!(c.limits.lock_timeout, Duration::from_secs(30));
        assert_eq!(
            c.feedback.ttl,
            Duration::from_secs(120),
            "integer = seconds"
        );
        assert_eq!(c.limits.delivery_count_mode, DeliveryCountMode::AbandonOnly);
        assert_eq!(c.limits.max_message_size, 65_536, "default");
        assert!(c.warnings().is_empty());
    }

    #[test]
    fn config_file_can_choose_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("elsewhere");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("courier.toml"), "https_port = 8443\n").unwrap();
        let explicit = dir.path().join("c.toml");
        std::fs::write(
            &explicit,
            format!("data_dir = {:?}\n", data.display().to_string()),
        )
        .unwrap();
        let c = Config::resolve(&args(&["--config", explicit.to_str().unwrap()])).unwrap();
        assert_eq!(c.data_dir, data);
        assert_eq!(
            c.https_port, 8443,
            "read courier.toml from the chosen data dir"
        );
    }

    #[test]
    fn data_dir_file_cannot_move_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("courier.toml"), "data_dir = \"/tmp/x\"\n").unwrap();
        let err = resolve_in(dir.path(), vec![]).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    setting: "data_dir",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_in_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "max_queue_dept = 5\n").unwrap();
        let err =
            resolve_in(dir.path(), vec!["--config".into(), f.display().to_string()]).unwrap_err();
        assert!(err.to_string().contains("max_queue_dept"), "{err}");

        std::fs::write(&f, "lock_timeout = \"soon\"\n").unwrap();
        let err =
            resolve_in(dir.path(), vec!["--config".into(), f.display().to_string()]).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    setting: "--lock-timeout",
                    ..
                }
            ),
            "{err}"
        );

        let missing = dir.path().join("nope.toml");
        let err = resolve_in(
            dir.path(),
            vec!["--config".into(), missing.display().to_string()],
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    }

    #[test]
    fn delivery_count_range_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        for (flag, value, ok) in [
            ("--max-delivery-count", "0", false),
            ("--max-delivery-count", "1", true),
            ("--max-delivery-count", "100", true),
            ("--max-delivery-count", "101", false),
            ("--feedback-max-delivery-count", "0", false),
            ("--feedback-max-delivery-count", "101", false),
        ] {
            let got = resolve_in(dir.path(), vec![flag.into(), value.into()]);
            assert_eq!(got.is_ok(), ok, "{flag} {value}: {got:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains("1 to 100"), "{e}");
            }
        }
    }

    #[test]
    fn default_ttl_must_not_exceed_max_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve_in(dir.path(), vec!["--default-ttl".into(), "3d".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid --default-ttl: 3d is longer than --max-ttl 2d; raise --max-ttl or lower --default-ttl"
        );
        let ok = resolve_in(
            dir.path(),
            vec![
                "--default-ttl".into(),
                "3d".into(),
                "--max-ttl".into(),
                "7d".into(),
            ],
        )
        .unwrap();
        assert_eq!(ok.limits.default_ttl, Duration::from_secs(3 * 86_400));
        let err =
            resolve_in(dir.path(), vec!["--lock-timeout".into(), "500ms".into()]).unwrap_err();
        assert!(err.to_string().contains("--lock-timeout"), "{err}");
    }

    #[test]
    fn hostnames_are_checked() {
        for good in ["localhost", "hub.example.test", "a-b.c1", "192.168.1.10"] {
            assert_eq!(normalize_hostname(good).unwrap(), good);
        }
        assert_eq!(normalize_hostname("Hub.Example").unwrap(), "hub.example");
        let long_label = "a".repeat(64);
        for bad in [
            "",
            "hub..test",
            ".hub",
            "hub.",
            "-hub.test",
            "hub-.test",
            "hub_1.test",
            "hub test",
            "::1",
            long_label.as_str(),
        ] {
            let err = normalize_hostname(bad).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid --hostname"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn tls_files_come_in_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "tls_cert = \"cert.pem\"\n").unwrap();
        let err =
            resolve_in(dir.path(), vec!["--config".into(), f.display().to_string()]).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    setting: "--tls-key",
                    ..
                }
            ),
            "{err}"
        );
        let c = resolve_in(
            dir.path(),
            vec![
                "--tls-cert".into(),
                "c.pem".into(),
                "--tls-key".into(),
                "k.pem".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            c.tls,
            TlsSource::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            }
        );
        // The pair may be split between a flag and the file.
        std::fs::write(&f, "tls_key = \"k.pem\"\n").unwrap();
        let c = resolve_in(
            dir.path(),
            vec![
                "--config".into(),
                f.display().to_string(),
                "--tls-cert".into(),
                "c.pem".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            c.tls,
            TlsSource::Files {
                cert: "c.pem".into(),
                key: dir.path().join("k.pem"),
            },
            "file paths are relative to the file"
        );
    }

    #[test]
    fn mqtt_listeners_are_configured_by_flag_or_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("courier.toml"),
            "mqtt_port = 18883\nmqtt_plain_port = 1883\nmqtt_max_in_flight = 4\nhostname = \"h.test\"\n",
        )
        .unwrap();
        let c = resolve_in(dir.path(), vec![]).unwrap();
        assert_eq!(
            (c.mqtt_port, c.mqtt_plain_port, c.mqtt_max_in_flight),
            (18_883, Some(1883), 4)
        );
        let warnings = c.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("without TLS on port 1883"),
            "{warnings:?}"
        );

        let c = resolve_in(
            dir.path(),
            vec![
                "--mqtt-port".into(),
                "0".into(),
                "--mqtt-max-in-flight".into(),
                "32".into(),
            ],
        )
        .unwrap();
        assert_eq!((c.mqtt_port, c.mqtt_max_in_flight), (0, 32), "flags win");

        let c = resolve_in(
            dir.path(),
            vec!["--max-connections".into(), "120000".into()],
        )
        .unwrap();
        assert_eq!(c.max_connections, 120_000);
        let err = resolve_in(dir.path(), vec!["--max-connections".into(), "0".into()]).unwrap_err();
        assert!(err.to_string().contains("--max-connections"), "{err}");

        let err =
            resolve_in(dir.path(), vec!["--mqtt-max-in-flight".into(), "0".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid --mqtt-max-in-flight: must be at least 1"
        );
    }

    #[test]
    fn the_amqp_port_comes_from_flag_or_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("courier.toml"), "amqp_port = 15671\n").unwrap();
        assert_eq!(resolve_in(dir.path(), vec![]).unwrap().amqp_port, 15_671);
        let c = resolve_in(dir.path(), vec!["--amqp-port".into(), "0".into()]).unwrap();
        assert_eq!(c.amqp_port, 0, "flags win");
    }

    #[test]
    fn flag_parsing_accepts_durations_and_modes() {
        let a = args(&[
            "--default-ttl",
            "90s",
            "--feedback-batch-window",
            "250ms",
            "--delivery-count-mode",
            "abandon-only",
            "--bind",
            "0.0.0.0",
            "--https-port",
            "0",
        ]);
        assert_eq!(a.default_ttl, Some(Duration::from_secs(90)));
        assert_eq!(a.feedback_batch_window, Some(Duration::from_millis(250)));
        assert_eq!(a.delivery_count_mode, Some(DeliveryCountMode::AbandonOnly));
        assert_eq!(a.bind, Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
        assert_eq!(a.https_port, Some(0));
        let err = Cli::try_parse_from(["courier", "--lock-timeout", "forever"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("'forever' is not a duration"), "{err}");
    }
}
