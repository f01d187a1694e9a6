//! Courier's load generator, the engine behind `courier bench`: it registers
//! bench devices over the registry API, connects them as MQTT devices over
//! TLS, sends cloud-to-device messages from concurrent service senders over
//! AMQP (through `courier-client`, as the official service SDKs send) or the
//! HTTPS service API, and measures what the hub delivers (messages per
//! second, send→receive latency percentiles, errors by kind) and what the
//! hub's process spends doing it (CPU seconds, RSS, from `/proc`). Broker
//! mode drives a plain MQTT broker (e.g. Mosquitto) the same way, with MQTT
//! publishers standing in for the service, so the two compare in one run.
//!
//! It is a client like any other: it must not hold business logic of the hub
//! or reach into its store, and it must stay lean, because it shares the
//! machine's cores with the hub it measures (`shared/PERFORMANCE.md`): one task
//! per device connection, PUBACKs batched per read, no per-message task,
//! channel or timer.

mod c2d;
mod fill;
mod fleet;
mod http;
mod idle;
mod job;
mod mqtt;
mod options;
mod process;
mod publisher;
mod report;
mod sdk_device;
mod sender;
mod socket;
mod stats;
mod target;

pub use c2d::{run_c2d, run_c2d_broker};
pub use fill::run_fill;
pub use idle::run_idle;
pub use options::{
    AckMode, C2dPlan, FillPlan, HttpVersion, IdlePlan, OptionsError, SendOver, Transport,
    MAX_BODY_BYTES, MAX_DEVICES, MAX_PUBLISH_WINDOW, MIN_BODY_BYTES,
};
pub use process::{pid_listening_on, ProcessSample, ProcessSampleError};
pub use report::{
    BrokerReport, C2dReport, ErrorCount, FillReport, GeneratorUsage, HubUsage, IdleReport,
    LatencyReport, Throughput,
};
pub use socket::MAX_SOURCE_ADDRESSES;
pub use target::{BenchTarget, BrokerTarget, Observer, Progress, Silent};

/// Why a bench run could not be carried out (as opposed to errors counted in a report).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The plan is not runnable.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// The CA certificate could not be used.
    #[error("the CA certificate(s) cannot be used: {0}")]
    Ca(String),
    /// The HTTPS client could not be built.
    #[error("cannot set up the HTTPS client")]
    HttpClient(#[source] reqwest::Error),
    /// A SAS token could not be signed.
    #[error("cannot sign a SAS token with the policy's key")]
    Sign(#[source] courier_auth::SasError),
    /// The hub has no MQTT port to connect to.
    #[error("no MQTT port: the hub's run.json names none; pass --mqtt-port")]
    NoMqttPort,
    /// AMQP senders asked for, and the hub has no AMQP port.
    #[error("no AMQP port: the hub's run.json names none; pass --amqp-port, or --send-over https")]
    NoAmqpPort,
    /// The service client for AMQP senders could not be made.
    #[error("cannot make the AMQP service client: {0}")]
    Client(String),
    /// A bench device could not be created.
    #[error("cannot create bench device '{device}': {reason}")]
    CreateDevice {
        /// The device.
        device: String,
        /// What the hub or the transport said.
        reason: String,
    },
    /// A device could not connect or subscribe.
    #[error("device '{device}' could not connect over MQTT: {reason}")]
    Connect {
        /// The device.
        device: String,
        /// What went wrong.
        reason: String,
    },
    /// The hub's process could not be read.
    #[error(transparent)]
    Process(#[from] ProcessSampleError),
    /// The server's host name did not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// Connections cannot come from the source addresses asked for.
    #[error("source addresses: {0}")]
    SourceAddresses(String),
    /// The broker URL is not usable.
    #[error("broker URL '{url}': {reason}")]
    BrokerUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A broker-mode publisher could not connect.
    #[error("publisher {index} could not connect to the broker: {reason}")]
    Publisher {
        /// Which publisher.
        index: u32,
        /// What went wrong.
        reason: String,
    },
}
