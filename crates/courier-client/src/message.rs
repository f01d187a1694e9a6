//! Messages: [`Message`] is what a back end sends, [`ReceivedMessage`] what a
//! device receives, [`Outcome`] what the device does with it.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// Which delivery feedback the sender asks for (`iothub-ack`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Ack {
    /// No feedback (the default).
    #[default]
    None,
    /// Feedback when the device completes the message.
    Positive,
    /// Feedback when the message is rejected, expires or is delivered too often.
    Negative,
    /// Both positive and negative feedback.
    Full,
}

impl Ack {
    /// The `iothub-ack` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Positive => "positive",
            Self::Negative => "negative",
            Self::Full => "full",
        }
    }

    /// Reads the `iothub-ack` spelling (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        [Self::None, Self::Positive, Self::Negative, Self::Full]
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
    }
}

/// When a message expires if no device completes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// This long after it is sent.
    After(Duration),
    /// At this time.
    At(SystemTime),
}

impl Expiry {
    /// The absolute expiry time for a message sent at `now`.
    pub fn at(self, now: SystemTime) -> SystemTime {
        match self {
            Self::After(ttl) => now + ttl,
            Self::At(at) => at,
        }
    }
}

/// A cloud-to-device message to send, built with chained setters.
///
/// ```
/// use courier_client::{Ack, Message};
/// use std::time::Duration;
///
/// let message = Message::new("open the valve")
///     .message_id("m-1")
///     .property("priority", "high")
///     .ack(Ack::Full)
///     .ttl(Duration::from_secs(3600));
/// assert_eq!(message.properties, vec![("priority".to_owned(), "high".to_owned())]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The body bytes.
    pub body: Bytes,
    /// `message-id`: feedback records name the message by it.
    pub message_id: Option<String>,
    /// `correlation-id`.
    pub correlation_id: Option<String>,
    /// `user-id`.
    pub user_id: Option<String>,
    /// Content type of the body, e.g. `application/json`.
    pub content_type: Option<String>,
    /// Content encoding of the body, e.g. `utf-8`.
    pub content_encoding: Option<String>,
    /// Delivery feedback asked for.
    pub ack: Ack,
    /// When it expires; `None` takes the hub's default TTL.
    pub expiry: Option<Expiry>,
    /// Application properties, in order.
    pub properties: Vec<(String, String)>,
}

impl Message {
    /// A message with this body and nothing else set.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            ..Self::default()
        }
    }

    /// Sets the message id.
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the user id.
    pub fn user_id(mut self, id: impl Into<String>) -> Self {
        self.user_id = Some(id.into());
        self
    }

    /// Sets the content type.
    pub fn content_type(mut self, value: impl Into<String>) -> Self {
        self.content_type = Some(value.into());
        self
    }

    /// Sets the content encoding.
    pub fn content_encoding(mut self, value: impl Into<String>) -> Self {
        self.content_encoding = Some(value.into());
        self
    }

    /// Asks for delivery feedback.
    pub fn ack(mut self, ack: Ack) -> Self {
        self.ack = ack;
        self
    }

    /// Expires the message this long after it is sent.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.expiry = Some(Expiry::After(ttl));
        self
    }

    /// Expires the message at this time.
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expiry = Some(Expiry::At(at));
        self
    }

    /// Adds an application property.
    pub fn property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((name.into(), value.into()));
        self
    }
}

/// What a device does with a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Done with it: the hub removes it (positive feedback).
    Complete,
    /// Cannot process it, ever: the hub dead-letters it (negative feedback).
    /// Not available over MQTT.
    Reject,
    /// Not now: the hub delivers it again. Not available over MQTT.
    Abandon,
}

impl Outcome {
    /// The verb, for errors and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Reject => "reject",
            Self::Abandon => "abandon",
        }
    }
}

/// A cloud-to-device message as a device receives it. Settle it with
/// `DeviceClient::complete`, `reject` or `abandon`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceivedMessage {
    /// The body bytes.
    pub body: Bytes,
    /// `message-id`.
    pub message_id: Option<String>,
    /// `correlation-id`.
    pub correlation_id: Option<String>,
    /// `user-id`.
    pub user_id: Option<String>,
    /// `to`: `/devices/{id}/messages/devicebound`.
    pub to: Option<String>,
    /// Content type.
    pub content_type: Option<String>,
    /// Content encoding.
    pub content_encoding: Option<String>,
    /// Absolute expiry time.
    pub expiry: Option<SystemTime>,
    /// When the hub enqueued it.
    pub enqueued_time: Option<SystemTime>,
    /// The hub's sequence number, when the transport carries it.
    pub sequence_number: Option<u64>,
    /// Earlier deliveries of this message, when the transport carries it.
    pub delivery_count: Option<u32>,
    /// The feedback the sender asked for, when the transport carries it.
    pub ack: Option<Ack>,
    /// The lock token (HTTPS ETag, AMQP `x-opt-lock-token`), when the transport has one.
    pub lock_token: Option<String>,
    /// Application properties, in the order received.
    pub properties: Vec<(String, String)>,
    /// Which delivery to settle: transport-specific, private.
    pub(crate) delivery: Delivery,
}

impl ReceivedMessage {
    /// A message with this body and delivery handle and nothing else set
    /// (transports fill in the rest).
    pub(crate) fn new(body: Bytes, delivery: Delivery) -> Self {
        Self {
            body,
            message_id: None,
            correlation_id: None,
            user_id: None,
            to: None,
            content_type: None,
            content_encoding: None,
            expiry: None,
            enqueued_time: None,
            sequence_number: None,
            delivery_count: None,
            ack: None,
            lock_token: None,
            properties: Vec::new(),
            delivery,
        }
    }

    /// The value of the first application property named `name`.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text, when it is.
    pub fn body_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }
}

/// Which delivery a received message came in, so the transport that got it
/// can settle it. `connection` is the connection's number: a settlement on a
/// later connection than the one that delivered is a lost lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// MQTT: the PUBLISH packet id, PUBACKed to complete.
    Mqtt {
        /// The delivering connection's number.
        connection: u64,
        /// The QoS 1 packet id.
        packet_id: u16,
    },
    /// AMQP: the transfer's delivery id on the receiver link.
    Amqp {
        /// The delivering connection's number.
        connection: u64,
        /// The AMQP delivery id.
        delivery_id: u32,
    },
    /// HTTPS: the ETag, valid across connections until the lock expires.
    Http {
        /// The lock token (unquoted ETag).
        lock_token: String,
    },
}
