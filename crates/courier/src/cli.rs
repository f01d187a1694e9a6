//! The flags as the user typed them. Nothing here touches a file or the
//! network; `target.rs` and the commands turn these into validated settings.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::parse;

/// Courier: a self-hosted hub for Azure IoT Hub-style cloud-to-device messaging.
///
/// `courier serve` runs a hub. The other commands act on a running hub over its
/// HTTPS API, as the owner policy of the local data directory unless `--hub`
/// names another hub or policy.
#[derive(Parser)]
#[command(name = "courier", version, propagate_version = true)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The top-level commands.
#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run a hub in the foreground until Ctrl-C.
    Serve(courier_server::ServeArgs),
    /// Create, show, list, update and delete devices in the hub's registry.
    Device(DeviceArgs),
    /// Send, receive and purge cloud-to-device messages.
    C2d(C2dArgs),
    /// Receive delivery feedback batches, print their records and settle them.
    Feedback(FeedbackArgs),
    /// Ask the hub about itself.
    Hub(HubArgs),
    /// Measure a hub: load generator for C2D throughput and idle connections.
    Bench(BenchArgs),
}

/// Which hub to talk to and how to print; accepted anywhere after the command name.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientArgs {
    /// Print JSON (one document per line) instead of text, for scripts.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Connection string of a shared access policy with the rights the command
    /// needs (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…).
    /// Without it, the owner policy from the data directory's hub.json is used.
    #[arg(
        long,
        global = true,
        env = "COURIER_HUB_CONNECTION_STRING",
        hide_env_values = true,
        value_name = "CONNECTION_STRING"
    )]
    pub(crate) hub: Option<String>,

    /// Data directory of a hub on this machine: its hub.json gives the owner
    /// policy, its run.json the endpoint and CA of the running hub.
    #[arg(
        long,
        global = true,
        env = "COURIER_DATA_DIR",
        default_value = "./courier-data",
        value_name = "DIR"
    )]
    pub(crate) data_dir: PathBuf,

    /// HTTPS endpoint of the hub, e.g. https://localhost:8443.
    /// Default: the running hub's endpoint from run.json when it serves the same
    /// host name, else https://{HostName}:443.
    #[arg(long, global = true, env = "COURIER_ENDPOINT", value_name = "URL")]
    pub(crate) endpoint: Option<String>,

    /// PEM file with the CA certificate(s) to trust for the hub's TLS certificate.
    /// Default: the running hub's CA from run.json, else {data-dir}/tls/ca.pem.
    /// The system's root certificates are not used.
    #[arg(long, global = true, env = "COURIER_CA", value_name = "PEM")]
    pub(crate) ca: Option<PathBuf>,
}

/// `courier device …`
#[derive(Args)]
pub(crate) struct DeviceArgs {
    /// Hub selection and output format.
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// The registry operation.
    #[command(subcommand)]
    pub(crate) command: DeviceCommand,
}

/// Registry operations.
#[derive(Subcommand)]
pub(crate) enum DeviceCommand {
    /// Register a device and print its connection string.
    Create(CreateDevice),
    /// Print one device as the registry holds it.
    Show {
        /// Device id.
        id: String,
    },
    /// List devices as a table.
    List {
        /// At most this many devices (1–1000).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        top: Option<u32>,
    },
    /// Remove a device and its queued messages.
    Delete {
        /// Device id.
        id: String,
        /// Delete only if the device's etag still matches.
        #[arg(long)]
        etag: Option<String>,
    },
    /// Enable or disable a device, or set its status reason.
    ///
    /// Reads the device, changes it and writes it back with If-Match, so a
    /// concurrent change makes this fail with 412001 instead of being lost.
    #[command(group(ArgGroup::new("change").required(true).multiple(true)))]
    Update {
        /// Device id.
        id: String,
        /// Set the status to enabled.
        #[arg(long, group = "change", conflicts_with = "disable")]
        enable: bool,
        /// Set the status to disabled: sends to and receives by it fail with 403012.
        #[arg(long, group = "change")]
        disable: bool,
        /// Free text kept with the status.
        #[arg(long, group = "change", value_name = "TEXT")]
        status_reason: Option<String>,
    },
    /// Print a device's connection string (with its primary key).
    ConnectionString {
        /// Device id.
        id: String,
    },
}

/// `courier device create`
#[derive(Args)]
pub(crate) struct CreateDevice {
    /// Device id.
    pub(crate) id: String,
    /// Base64 primary key; the hub generates one when omitted.
    #[arg(long, value_name = "KEY", conflicts_with_all = ["x509", "ca_signed"])]
    pub(crate) primary_key: Option<String>,
    /// Base64 secondary key; the hub generates one when omitted.
    #[arg(long, value_name = "KEY", conflicts_with_all = ["x509", "ca_signed"])]
    pub(crate) secondary_key: Option<String>,
    /// Create the device disabled.
    #[arg(long)]
    pub(crate) disabled: bool,
    /// Authenticate with a self-signed X.509 certificate instead of keys.
    #[arg(long, requires = "primary_thumbprint", conflicts_with = "ca_signed")]
    pub(crate) x509: bool,
    /// SHA-1 or SHA-256 thumbprint of the device's certificate (with --x509).
    #[arg(long, value_name = "THUMBPRINT", requires = "x509")]
    pub(crate) primary_thumbprint: Option<String>,
    /// Thumbprint of a second certificate (with --x509).
    #[arg(long, value_name = "THUMBPRINT", requires = "x509")]
    pub(crate) secondary_thumbprint: Option<String>,
    /// Authenticate with a certificate signed by a CA the hub trusts.
    #[arg(long)]
    pub(crate) ca_signed: bool,
    /// Per-device cloud-to-device limits; hub-wide defaults apply when unset.
    #[command(flatten)]
    pub(crate) limits: LimitArgs,
}

/// Courier's per-device C2D limits (`c2dLimits` in the device JSON).
#[derive(Debug, Clone, Args)]
pub(crate) struct LimitArgs {
    /// Most messages queued for the device at once.
    #[arg(long, value_name = "N")]
    pub(crate) max_queue_depth: Option<u32>,
    /// Largest message (body plus properties) in bytes.
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_message_size: Option<u32>,
    /// Time to live of messages sent without an expiry (90s, 5m, 1h, or seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    pub(crate) default_ttl: Option<Duration>,
    /// Longest time to live a sender may ask for.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    pub(crate) max_ttl: Option<Duration>,
    /// Deliveries after which a message is dead-lettered (1–100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) max_delivery_count: Option<u32>,
    /// How long a received message stays locked before it is delivered again.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    pub(crate) lock_timeout: Option<Duration>,
}

/// `courier c2d …`
#[derive(Args)]
pub(crate) struct C2dArgs {
    /// Hub selection and output format.
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// The messaging operation.
    #[command(subcommand)]
    pub(crate) command: C2dCommand,
}

/// Cloud-to-device messaging operations.
#[derive(Subcommand)]
pub(crate) enum C2dCommand {
    /// Send a message to a device's queue; prints its sequence number and message id.
    Send(SendArgs),
    /// Receive messages as the device would, print them and settle them.
    Receive(ReceiveArgs),
    /// Remove every message queued for a device; prints how many were removed.
    Purge {
        /// Device id.
        device: String,
    },
}

/// `courier c2d send`
#[derive(Args)]
#[command(after_long_help = "\
With --wait-feedback, the command reads the hub's feedback queue until a record
for this message arrives, completes the batch that holds it, and leaves every
other batch it read unsettled: those return to the queue for other readers when
their lock expires. Exit codes: 0 Success, 3 no feedback before --timeout,
4 a negative status (Rejected, Expired, DeliveryCountExceeded, Purged).")]
pub(crate) struct SendArgs {
    /// Device id.
    pub(crate) device: String,
    /// The body: the text itself, @FILE for a file's bytes, or - for standard input.
    #[arg(value_name = "BODY", value_parser = parse_body)]
    pub(crate) body: parse::BodySource,
    /// Message id (iothub-messageid). Generated as a UUID with --wait-feedback.
    #[arg(long, value_name = "ID")]
    pub(crate) message_id: Option<String>,
    /// Correlation id.
    #[arg(long, value_name = "ID")]
    pub(crate) correlation_id: Option<String>,
    /// User id.
    #[arg(long, value_name = "ID")]
    pub(crate) user_id: Option<String>,
    /// Content type, e.g. application/json.
    #[arg(long, value_name = "TYPE")]
    pub(crate) content_type: Option<String>,
    /// Content encoding, e.g. utf-8.
    #[arg(long, value_name = "ENCODING")]
    pub(crate) content_encoding: Option<String>,
    /// Application property NAME=VALUE; repeat for more.
    #[arg(long = "prop", value_name = "NAME=VALUE", value_parser = parse::property)]
    pub(crate) properties: Vec<(String, String)>,
    /// Feedback to ask for.
    #[arg(long, value_enum, value_name = "KIND")]
    pub(crate) ack: Option<AckArg>,
    /// Time to live (90s, 5m, 1h, or seconds); the hub's default applies when unset.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration, conflicts_with = "expiry")]
    pub(crate) ttl: Option<Duration>,
    /// Absolute expiry time, RFC 3339 (e.g. 2030-01-01T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub(crate) expiry: Option<String>,
    /// Wait for this message's feedback record and print its status (needs --ack
    /// positive, negative or full).
    #[arg(long)]
    pub(crate) wait_feedback: bool,
    /// How long --wait-feedback waits.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration, default_value = "30s", requires = "wait_feedback")]
    pub(crate) timeout: Duration,
}

fn parse_body(text: &str) -> Result<parse::BodySource, std::convert::Infallible> {
    Ok(parse::body_source(text))
}

/// Which feedback a sender asks for (`iothub-ack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AckArg {
    /// No feedback.
    None,
    /// Feedback when the device completes the message.
    Positive,
    /// Feedback when the message is rejected, expires or is delivered too often.
    Negative,
    /// Both positive and negative feedback.
    Full,
}

impl From<AckArg> for courier_client::Ack {
    fn from(ack: AckArg) -> Self {
        match ack {
            AckArg::None => Self::None,
            AckArg::Positive => Self::Positive,
            AckArg::Negative => Self::Negative,
            AckArg::Full => Self::Full,
        }
    }
}

/// The protocol `c2d receive` uses as the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TransportArg {
    /// HTTPS polling (the hub's HTTPS endpoint).
    Http,
    /// MQTT over TLS (cannot reject or abandon).
    Mqtt,
    /// MQTT over WebSockets on the HTTPS port (cannot reject or abandon).
    MqttWs,
    /// AMQP over TLS.
    Amqp,
    /// AMQP over WebSockets on the HTTPS port.
    AmqpWs,
}

impl From<TransportArg> for courier_client::Transport {
    fn from(transport: TransportArg) -> Self {
        match transport {
            TransportArg::Http => Self::Http,
            TransportArg::Mqtt => Self::Mqtt,
            TransportArg::MqttWs => Self::MqttWs,
            TransportArg::Amqp => Self::Amqp,
            TransportArg::AmqpWs => Self::AmqpWs,
        }
    }
}

/// `courier c2d receive`
#[derive(Args)]
#[command(group(ArgGroup::new("settle").multiple(false)))]
pub(crate) struct ReceiveArgs {
    /// Device id.
    pub(crate) device: String,
    /// Complete each message (the default).
    #[arg(long, group = "settle")]
    pub(crate) complete: bool,
    /// Reject each message.
    #[arg(long, group = "settle")]
    pub(crate) reject: bool,
    /// Abandon each message, so that it is delivered again.
    #[arg(long, group = "settle")]
    pub(crate) abandon: bool,
    /// Stop after this many messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,
    /// Keep receiving until Ctrl-C (or --count messages).
    #[arg(long)]
    pub(crate) follow: bool,
    /// Protocol to receive over. MQTT and AMQP use the running local hub's
    /// ports (from run.json), else 8883 and 5671.
    #[arg(long, value_enum, default_value_t = TransportArg::Http)]
    pub(crate) transport: TransportArg,
    /// How long to wait for a message before giving up (with --follow: before asking again).
    #[arg(long, value_name = "DURATION", value_parser = parse::duration, default_value = "30s")]
    pub(crate) wait: Duration,
    /// Act with this device's own key (HostName=…;DeviceId=…;SharedAccessKey=…)
    /// instead of the hub policy's key.
    #[arg(
        long,
        value_name = "CONNECTION_STRING",
        env = "COURIER_DEVICE_CONNECTION_STRING",
        hide_env_values = true
    )]
    pub(crate) device_connection_string: Option<String>,
}

impl ReceiveArgs {
    /// The settlement the flags ask for.
    pub(crate) fn settlement(&self) -> courier_client::Outcome {
        if self.reject {
            courier_client::Outcome::Reject
        } else if self.abandon {
            courier_client::Outcome::Abandon
        } else {
            courier_client::Outcome::Complete
        }
    }
}

/// `courier feedback`
#[derive(Args)]
pub(crate) struct FeedbackArgs {
    /// Hub selection and output format.
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// Keep receiving until Ctrl-C (or --count batches).
    #[arg(long)]
    pub(crate) follow: bool,
    /// Stop after this many batches.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,
    /// How long to wait for a batch before giving up (with --follow: before asking again).
    #[arg(long, value_name = "DURATION", value_parser = parse::duration, default_value = "30s")]
    pub(crate) wait: Duration,
    /// Abandon each batch instead of completing it, so that it is delivered again.
    #[arg(long)]
    pub(crate) abandon: bool,
}

/// `courier hub …`
#[derive(Args)]
pub(crate) struct HubArgs {
    /// Hub selection and output format.
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// The hub operation.
    #[command(subcommand)]
    pub(crate) command: HubCommand,
}

/// Hub-level operations.
#[derive(Subcommand)]
pub(crate) enum HubCommand {
    /// Print the hub's host name, version, counts and limits.
    Info,
}

/// `courier bench …`
#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Hub selection and output format.
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// What to measure.
    #[command(subcommand)]
    pub(crate) command: BenchCommand,
}

/// The benchmarks.
#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// Send M messages to each of N connected devices and measure delivery.
    C2d(BenchC2dArgs),
    /// Hold N idle device connections and measure the hub's memory per connection.
    Idle(BenchIdleArgs),
    /// Queue M messages for each of N devices that stay offline (for the recovery bench).
    Fill(BenchFillArgs),
}

/// How bench devices connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BenchTransport {
    /// MQTT 3.1.1 over TLS (the bench's own lean device, for large fleets).
    Mqtt,
    /// AMQP 1.0 over TLS, one connection per device (the Rust SDK).
    Amqp,
    /// HTTPS long polls (the Rust SDK).
    Https,
}

/// Feedback the bench's messages ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BenchAck {
    /// None.
    None,
    /// Every outcome; the run counts the feedback records it receives.
    Full,
}

/// HTTP version of the bench's service senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BenchHttp {
    /// One HTTP/1.1 connection per sender.
    #[value(name = "1.1")]
    Http1,
    /// All senders on one HTTP/2 connection.
    #[value(name = "2")]
    Http2,
}

/// How the bench's service senders send to the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BenchSendOver {
    /// AMQP over TLS, as the official service SDKs send; sends pipelined on a few connections.
    Amqp,
    /// The HTTPS service API, one request in flight per sender.
    Https,
}

/// Flags every bench shares.
#[derive(Debug, Clone, Args)]
pub(crate) struct BenchCommonArgs {
    /// The hub's MQTT-over-TLS port. Default: `mqttPort` from the running hub's run.json.
    #[arg(long, value_name = "PORT")]
    pub(crate) mqtt_port: Option<u16>,
    /// The hub's AMQP-over-TLS port. Default: `amqpPort` from the running hub's run.json.
    #[arg(long, value_name = "PORT")]
    pub(crate) amqp_port: Option<u16>,
    /// Process id of the hub, for its CPU and RSS. Default: `pid` from the running hub's run.json.
    #[arg(long, value_name = "PID")]
    pub(crate) hub_pid: Option<u32>,
    /// Leave the bench devices (bench-0, bench-1, …) registered after the run.
    #[arg(long)]
    pub(crate) keep_devices: bool,
    /// Worker threads of the load generator. Default: one per core.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) threads: Option<u16>,
    /// Spread device connections over loopback source addresses 127.0.0.1 …
    /// 127.0.0.N (bind before connect), past the ~28k ephemeral ports of one
    /// address. Default: as many as the connection count needs (20,000 each).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=254))]
    pub(crate) source_addresses: Option<u32>,
}

/// `courier bench c2d`
#[derive(Args)]
#[command(after_long_help = "\
Creates devices bench-0 … bench-{N-1} with c2dLimits.maxQueueDepth raised to M
(the hub default of 50 would refuse a flat-out run), connects them, and has S
senders send the M×N messages while the devices settle each delivery. Devices
connect over MQTT/TLS by default (the bench's own lean client, PUBACK per
message); --transport amqp|https connects each through the Rust SDK instead
(one AMQP connection per device, or HTTPS long polls), completing each. The
senders send over AMQP by default, as the official service SDKs do: they share
--amqp-connections connections, one sender link each, with every sender's
send in flight at once (pipelined); --send-over https makes each sender POST
to the HTTPS service API instead, one request in flight. Reports delivered msg/s (first send → last settled),
send→receive latency percentiles, errors by kind, and the hub's CPU time per
message and peak RSS (from /proc, when the hub runs on this machine).
Exits 1 when a message was not delivered or anything failed.

Broker mode (--broker mqtt://HOST:PORT or mqtts://HOST:PORT --broker-ca PEM)
drives a plain MQTT 3.1.1 broker such as Mosquitto instead, for comparison:
the devices connect anonymously with persistent sessions (clean session = 0)
and subscribe QoS 1 to devices/{id}/messages/devicebound/#, and S publisher
connections stand in for the service, publishing QoS 1 to
devices/{id}/messages/devicebound/%24.mid=…&%24.to=… with up to
--publish-window PUBLISHes unacknowledged each. The broker's CPU and RSS are
read from /proc (--hub-pid, else the process listening on the port).")]
pub(crate) struct BenchC2dArgs {
    /// Devices to connect.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub(crate) devices: u32,
    /// Messages sent to each device.
    #[arg(long, value_name = "M", default_value_t = 100)]
    pub(crate) messages: u32,
    /// Concurrent senders (each has one message in flight).
    #[arg(long, value_name = "S", default_value_t = 64)]
    pub(crate) senders: u32,
    /// How the senders send to the hub.
    #[arg(long, value_enum, default_value_t = BenchSendOver::Amqp)]
    pub(crate) send_over: BenchSendOver,
    /// AMQP connections the senders share (with --send-over amqp).
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) amqp_connections: u32,
    /// Target send rate in messages per second. Default: flat out.
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rate: Option<u32>,
    /// How devices connect.
    #[arg(long, value_enum, default_value_t = BenchTransport::Mqtt)]
    pub(crate) transport: BenchTransport,
    /// Feedback asked for; with `full` the run also counts feedback records.
    #[arg(long, value_enum, default_value_t = BenchAck::None)]
    pub(crate) ack: BenchAck,
    /// Bytes per message body (the first 8 carry the send time).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub(crate) body_size: u32,
    /// HTTP version of the senders (with --send-over https).
    #[arg(long, value_enum, default_value_t = BenchHttp::Http1)]
    pub(crate) http: BenchHttp,
    /// Drive a plain MQTT broker at this URL instead of the hub (broker mode).
    #[arg(long, value_name = "URL")]
    pub(crate) broker: Option<String>,
    /// PEM CA certificate(s) of an mqtts:// broker.
    #[arg(long, value_name = "PEM", requires = "broker")]
    pub(crate) broker_ca: Option<PathBuf>,
    /// Broker mode: unacknowledged QoS 1 PUBLISHes per publisher connection.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "broker",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(courier_bench::MAX_PUBLISH_WINDOW)))]
    pub(crate) publish_window: u32,
    /// Shared bench flags.
    #[command(flatten)]
    pub(crate) common: BenchCommonArgs,
}

/// `courier bench fill`
#[derive(Args)]
#[command(after_long_help = "\
Creates devices bench-0 … bench-{N-1} with c2dLimits.maxQueueDepth = M and
has S senders POST the M×N messages over the HTTPS service API while no
device is connected, so they stay queued. Devices and messages are left in
place: this is the first step of the recovery bench (scripts/bench.sh kills
the hub with SIGKILL afterwards and times the restart).")]
pub(crate) struct BenchFillArgs {
    /// Devices to create.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub(crate) devices: u32,
    /// Messages queued for each device.
    #[arg(long, value_name = "M", default_value_t = 10)]
    pub(crate) messages: u32,
    /// Concurrent HTTP senders.
    #[arg(long, value_name = "S", default_value_t = 128)]
    pub(crate) senders: u32,
    /// Bytes per message body.
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub(crate) body_size: u32,
    /// HTTP version of the senders.
    #[arg(long, value_enum, default_value_t = BenchHttp::Http1)]
    pub(crate) http: BenchHttp,
    /// Shared bench flags.
    #[command(flatten)]
    pub(crate) common: BenchCommonArgs,
}

/// `courier bench idle`
#[derive(Args)]
pub(crate) struct BenchIdleArgs {
    /// Idle device connections to hold.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub(crate) connections: u32,
    /// Shared bench flags.
    #[command(flatten)]
    pub(crate) common: BenchCommonArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_flag_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bench_c2d_defaults_are_the_documented_ones() {
        let cli = Cli::try_parse_from(["courier", "bench", "c2d"]).unwrap();
        let Command::Bench(BenchArgs {
            command: BenchCommand::C2d(args),
            ..
        }) = cli.command
        else {
            panic!("not bench c2d");
        };
        assert_eq!((args.devices, args.messages, args.senders), (1000, 100, 64));
        assert_eq!(args.rate, None);
        assert_eq!(args.transport, BenchTransport::Mqtt);
        assert_eq!(args.ack, BenchAck::None);
        assert_eq!(
            (args.send_over, args.amqp_connections),
            (BenchSendOver::Amqp, 4)
        );
        assert!(!args.common.keep_devices);
    }

    #[test]
    fn bench_flags_are_checked_by_the_parser() {
        for bad in [
            &["courier", "bench", "c2d", "--transport", "amqps"][..],
            &["courier", "bench", "c2d", "--ack", "positive"],
            &["courier", "bench", "c2d", "--rate", "0"],
            &["courier", "bench", "c2d", "--threads", "0"],
            &["courier", "bench", "idle", "--connections", "-1"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} was accepted");
        }
        let cli = Cli::try_parse_from([
            "courier",
            "bench",
            "idle",
            "--connections",
            "10000",
            "--mqtt-port",
            "8883",
            "--json",
        ])
        .unwrap();
        let Command::Bench(BenchArgs {
            client,
            command: BenchCommand::Idle(args),
        }) = cli.command
        else {
            panic!("not bench idle");
        };
        assert_eq!(args.connections, 10_000);
        assert_eq!(args.common.mqtt_port, Some(8883));
        assert!(client.json);
    }

    #[test]
    fn bench_broker_mode_flags_parse_and_need_a_broker() {
        let cli = Cli::try_parse_from([
            "courier",
            "bench",
            "c2d",
            "--broker",
            "mqtts://localhost:18883",
            "--broker-ca",
            "ca.pem",
            "--publish-window",
            "16",
            "--source-addresses",
            "4",
        ])
        .unwrap();
        let Command::Bench(BenchArgs {
            command: BenchCommand::C2d(args),
            ..
        }) = cli.command
        else {
            panic!("not bench c2d");
        };
        assert_eq!(args.broker.as_deref(), Some("mqtts://localhost:18883"));
        assert_eq!(args.broker_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(args.publish_window, 16);
        assert_eq!(args.common.source_addresses, Some(4));
        for bad in [
            &["courier", "bench", "c2d", "--broker-ca", "ca.pem"][..],
            &["courier", "bench", "c2d", "--publish-window", "4"],
            &[
                "courier",
                "bench",
                "c2d",
                "--broker",
                "mqtt://x",
                "--publish-window",
                "0",
            ],
            &["courier", "bench", "idle", "--source-addresses", "255"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn bench_fill_defaults_are_the_recovery_suite() {
        let cli = Cli::try_parse_from(["courier", "bench", "fill"]).unwrap();
        let Command::Bench(BenchArgs {
            command: BenchCommand::Fill(args),
            ..
        }) = cli.command
        else {
            panic!("not bench fill");
        };
        assert_eq!(
            (args.devices, args.messages, args.senders),
            (100_000, 10, 128)
        );
    }
}
