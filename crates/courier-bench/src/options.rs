//! What a bench run should do, validated before anything touches the hub.

use std::num::NonZeroU32;

use serde::Serialize;

use crate::socket::MAX_SOURCE_ADDRESSES;

/// How bench devices connect to the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// MQTT 3.1.1 over TLS (port 8883 by default), as the IoT SDKs connect;
    /// the bench speaks it itself, lean enough for 100,000 devices.
    Mqtt,
    /// AMQP 1.0 over TLS, one connection per device, through the Rust SDK.
    Amqp,
    /// HTTPS long polls, through the Rust SDK.
    Https,
}

impl Transport {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mqtt => "mqtt",
            Self::Amqp => "amqp",
            Self::Https => "https",
        }
    }
}

/// The feedback each sent message asks for (`iothub-ack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// No feedback.
    None,
    /// Feedback for every outcome; the run counts the records it receives.
    Full,
}

impl AckMode {
    /// The `iothub-ack` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Full => "full",
        }
    }
}

/// The HTTP version the service senders speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HttpVersion {
    /// One HTTP/1.1 connection per sender.
    #[serde(rename = "1.1")]
    Http1,
    /// Every sender multiplexed on one HTTP/2 connection.
    #[serde(rename = "2")]
    Http2,
}

/// How the hub's service senders send C2D messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SendOver {
    /// AMQP 1.0 over TLS, as the official service SDKs send: the senders
    /// share a few connections, each with its own sender link, and sends on
    /// one link are pipelined (many unsettled at once).
    Amqp,
    /// The HTTPS service API, one request in flight per sender.
    Https,
}

impl SendOver {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Amqp => "AMQP",
            Self::Https => "HTTPS",
        }
    }
}

/// Largest number of bench devices (or idle connections) in one run. The hub
/// serves `--max-connections` per listener (10,000 by default) and each
/// connection costs a file descriptor on both sides, so large runs need both
/// raised (`BENCHMARKS.md`).
pub const MAX_DEVICES: u32 = 1_000_000;
/// Largest PUBLISH window per broker-mode publisher (packet ids are 16 bits).
pub const MAX_PUBLISH_WINDOW: u32 = 4096;
/// Smallest body: it carries the send timestamp (8 bytes).
pub const MIN_BODY_BYTES: u32 = 8;
/// Largest body the bench sends (IoT Hub's C2D limit).
pub const MAX_BODY_BYTES: u32 = 64 * 1024;

/// A plan that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// Zero or too many devices.
    #[error("--devices must be between 1 and {MAX_DEVICES}, not {0}")]
    Devices(u32),
    /// Zero messages.
    #[error("--messages must be at least 1")]
    Messages,
    /// Zero senders.
    #[error("--senders must be at least 1")]
    Senders,
    /// Zero AMQP connections.
    #[error("--amqp-connections must be at least 1")]
    AmqpConnections,
    /// A body too small for the timestamp or too large for the hub.
    #[error("--body-size must be between {MIN_BODY_BYTES} and {MAX_BODY_BYTES} bytes, not {0}")]
    BodySize(u32),
    /// More messages than the bench can count.
    #[error("--devices × --messages must stay under 2^32 messages")]
    TooManyMessages,
    /// Zero or too many idle connections.
    #[error("--connections must be between 1 and {MAX_DEVICES}, not {0}")]
    Connections(u32),
    /// A publisher window of zero or past the packet-id space.
    #[error("--publish-window must be between 1 and {MAX_PUBLISH_WINDOW}, not {0}")]
    PublishWindow(u32),
    /// Zero source addresses, or more than the loopback range gives.
    #[error("--source-addresses must be between 1 and {MAX_SOURCE_ADDRESSES}, not {0}")]
    SourceAddresses(u32),
    /// Feedback exists only on the hub.
    #[error("--ack full needs the hub: a plain broker has no feedback")]
    BrokerFeedback,
    /// A plain broker has MQTT devices only.
    #[error("--transport {0} needs the hub: a plain MQTT broker serves MQTT devices only")]
    BrokerTransport(&'static str),
    /// Only the bench's own MQTT devices bind to chosen source addresses.
    #[error("--source-addresses applies to MQTT devices only")]
    SdkSourceAddresses,
}

fn check_sources(source_addresses: Option<u32>) -> Result<(), OptionsError> {
    match source_addresses {
        Some(n) if n == 0 || n > MAX_SOURCE_ADDRESSES => Err(OptionsError::SourceAddresses(n)),
        _ => Ok(()),
    }
}

/// A `courier bench c2d` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct C2dPlan {
    /// Bench devices `bench-0` … `bench-{devices-1}`.
    pub devices: u32,
    /// Messages sent to each device.
    pub messages_per_device: u32,
    /// Concurrent service senders.
    pub senders: u32,
    /// Target send rate in messages per second; flat out when `None`.
    pub rate: Option<NonZeroU32>,
    /// How devices connect.
    pub transport: Transport,
    /// Feedback asked for.
    pub ack: AckMode,
    /// Bytes per message body (the first 8 carry the send timestamp).
    pub body_bytes: u32,
    /// HTTP version of the senders (when they send over HTTPS).
    pub http: HttpVersion,
    /// How the senders send to the hub.
    pub send_over: SendOver,
    /// AMQP connections the senders share (`send_over` = AMQP; at most one
    /// per sender).
    pub amqp_connections: u32,
    /// Leave the bench devices registered after the run.
    pub keep_devices: bool,
    /// Broker mode: unacknowledged QoS 1 PUBLISHes per publisher connection.
    pub publish_window: u32,
    /// Loopback source addresses device connections come from (127.0.0.1 …);
    /// `None`: as many as the device count needs.
    pub source_addresses: Option<u32>,
}

impl C2dPlan {
    /// The plan with the documented defaults: 1,000 devices × 100 messages, 64 senders.
    pub fn new() -> Self {
        Self {
            devices: 1000,
            messages_per_device: 100,
            senders: 64,
            rate: None,
            transport: Transport::Mqtt,
            ack: AckMode::None,
            body_bytes: 64,
            http: HttpVersion::Http1,
            send_over: SendOver::Amqp,
            amqp_connections: 4,
            keep_devices: false,
            publish_window: 1,
            source_addresses: None,
        }
    }

    /// Checks the plan; every run calls this first.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.devices == 0 || self.devices > MAX_DEVICES {
            return Err(OptionsError::Devices(self.devices));
        }
        if self.messages_per_device == 0 {
            return Err(OptionsError::Messages);
        }
        if self.senders == 0 {
            return Err(OptionsError::Senders);
        }
        if self.amqp_connections == 0 {
            return Err(OptionsError::AmqpConnections);
        }
        if !(MIN_BODY_BYTES..=MAX_BODY_BYTES).contains(&self.body_bytes) {
            return Err(OptionsError::BodySize(self.body_bytes));
        }
        if self.publish_window == 0 || self.publish_window > MAX_PUBLISH_WINDOW {
            return Err(OptionsError::PublishWindow(self.publish_window));
        }
        check_sources(self.source_addresses)?;
        if self.transport != Transport::Mqtt && self.source_addresses.is_some() {
            return Err(OptionsError::SdkSourceAddresses);
        }
        self.total_messages()
            .map(|_| ())
            .ok_or(OptionsError::TooManyMessages)
    }

    /// Devices × messages, when it fits the bench's counters.
    pub fn total_messages(&self) -> Option<u32> {
        self.devices.checked_mul(self.messages_per_device)
    }
}

impl Default for C2dPlan {
    fn default() -> Self {
        Self::new()
    }
}

/// A `courier bench idle` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdlePlan {
    /// Idle device connections to hold.
    pub connections: u32,
    /// Leave the bench devices registered after the run.
    pub keep_devices: bool,
    /// Loopback source addresses the connections come from (127.0.0.1 …);
    /// `None`: as many as the connection count needs.
    pub source_addresses: Option<u32>,
}

impl IdlePlan {
    /// Checks the plan.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.connections == 0 || self.connections > MAX_DEVICES {
            return Err(OptionsError::Connections(self.connections));
        }
        check_sources(self.source_addresses)
    }
}

/// A `courier bench fill` run: messages queued for devices that never connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillPlan {
    /// Bench devices `bench-0` … `bench-{devices-1}`.
    pub devices: u32,
    /// Messages queued for each device (also its `c2dLimits.maxQueueDepth`).
    pub messages_per_device: u32,
    /// Concurrent service senders.
    pub senders: u32,
    /// Bytes per message body.
    pub body_bytes: u32,
    /// HTTP version of the senders.
    pub http: HttpVersion,
}

impl FillPlan {
    /// Checks the plan.
    pub fn validate(&self) -> Result<(), OptionsError> {
        C2dPlan {
            devices: self.devices,
            messages_per_device: self.messages_per_device,
            senders: self.senders,
            body_bytes: self.body_bytes,
            http: self.http,
            amqp_connections: 1,
            ..C2dPlan::new()
        }
        .validate()
    }

    /// Devices × messages (validated to fit).
    pub fn total_messages(&self) -> u32 {
        self.devices.saturating_mul(self.messages_per_device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_runnable() {
        let plan = C2dPlan::new();
        assert_eq!(plan.validate(), Ok(()));
        assert_eq!(plan.total_messages(), Some(100_000));
    }

    #[test]
    fn empty_or_oversized_plans_are_refused() {
        let base = C2dPlan::new();
        let cases = [
            (
                C2dPlan {
                    devices: 0,
                    ..base.clone()
                },
                OptionsError::Devices(0),
            ),
            (
                C2dPlan {
                    devices: MAX_DEVICES + 1,
                    ..base.clone()
                },
                OptionsError::Devices(MAX_DEVICES + 1),
            ),
            (
                C2dPlan {
                    messages_per_device: 0,
                    ..base.clone()
                },
                OptionsError::Messages,
            ),
            (
                C2dPlan {
                    senders: 0,
                    ..base.clone()
                },
                OptionsError::Senders,
            ),
            (
                C2dPlan {
                    amqp_connections: 0,
                    ..base.clone()
                },
                OptionsError::AmqpConnections,
            ),
            (
                C2dPlan {
                    body_bytes: 7,
                    ..base.clone()
                },
                OptionsError::BodySize(7),
            ),
            (
                C2dPlan {
                    body_bytes: MAX_BODY_BYTES + 1,
                    ..base.clone()
                },
                OptionsError::BodySize(MAX_BODY_BYTES + 1),
            ),
            (
                C2dPlan {
                    devices: 10_000,
                    messages_per_device: u32::MAX / 1000,
                    ..base.clone()
                },
                OptionsError::TooManyMessages,
            ),
            (
                C2dPlan {
                    publish_window: 0,
                    ..base.clone()
                },
                OptionsError::PublishWindow(0),
            ),
            (
                C2dPlan {
                    source_addresses: Some(MAX_SOURCE_ADDRESSES + 1),
                    ..base.clone()
                },
                OptionsError::SourceAddresses(MAX_SOURCE_ADDRESSES + 1),
            ),
            (
                C2dPlan {
                    transport: Transport::Amqp,
                    source_addresses: Some(2),
                    ..base.clone()
                },
                OptionsError::SdkSourceAddresses,
            ),
        ];
        for (plan, expected) in cases {
            assert_eq!(plan.validate(), Err(expected));
        }
    }

    #[test]
    fn idle_connections_are_bounded() {
        let plan = |connections| IdlePlan {
            connections,
            keep_devices: false,
            source_addresses: None,
        };
        assert_eq!(plan(MAX_DEVICES).validate(), Ok(()));
        assert_eq!(plan(0).validate(), Err(OptionsError::Connections(0)));
        assert_eq!(
            plan(MAX_DEVICES + 1).validate(),
            Err(OptionsError::Connections(MAX_DEVICES + 1))
        );
        let spread = IdlePlan {
            source_addresses: Some(0),
            ..plan(100_000)
        };
        assert_eq!(spread.validate(), Err(OptionsError::SourceAddresses(0)));
    }

    #[test]
    fn a_fill_plan_is_checked_like_a_c2d_plan() {
        let plan = FillPlan {
            devices: 100_000,
            messages_per_device: 10,
            senders: 128,
            body_bytes: 64,
            http: HttpVersion::Http1,
        };
        assert_eq!(plan.validate(), Ok(()));
        assert_eq!(plan.total_messages(), 1_000_000);
        let empty = FillPlan {
            messages_per_device: 0,
            ..plan
        };
        assert_eq!(empty.validate(), Err(OptionsError::Messages));
    }
}
