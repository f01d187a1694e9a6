//! AMQP 1.0 pieces shared by the device and service transports: opening a
//! connection and session over TLS or a WebSocket, SAS tokens through CBS
//! (`$cbs` put-token), addresses, message conversions and error mapping.
//! The engine is fe2o3-amqp's client over a stream this crate opened.

mod convert;
mod cork;
mod error;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message as AmqpMessage, MessageId, Properties,
};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::credentials::Token;
use crate::net::{within, Endpoint};
use crate::ClientError;
use cork::Corked;

pub(crate) use convert::{feedback_batch, outgoing_message, received_message};
pub(crate) use error::{
    connection_error, outcome_result, receiver_attach_error, recv_error, send_error,
    sender_attach_error,
};

/// The WebSocket subprotocol IoT Hub speaks AMQP in.
const WS_SUBPROTOCOL: &str = "AMQPWSB10";
/// The claims-based security node.
const CBS_NODE: &str = "$cbs";
/// The CBS token type every SDK but .NET sends (Courier accepts both).
const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";
/// Where CBS answers go (the reply link's address).
const CBS_REPLY_TO: &str = "cbs";
/// Share of a token's remaining life after which it is renewed.
const RENEW_SHARE: f64 = 0.85;

/// `encodeURIComponent`'s set: device ids are percent-encoded in addresses
/// (as Node does) so that `%`, `+`, `/` and spaces survive; the hub decodes.
const ID_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'!')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// A device's C2D queue: the device link's source and each message's `to`.
pub(crate) fn devicebound_address(device_id: &str) -> String {
    format!(
        "/devices/{}/messages/devicebound",
        utf8_percent_encode(device_id, ID_ENCODE)
    )
}

/// A link name unique on its connection.
pub(crate) fn link_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// How to open one connection.
pub(crate) struct OpenOptions<'a> {
    /// Where to connect.
    pub(crate) endpoint: &'a Endpoint,
    /// AMQP over a WebSocket on the HTTPS port, else over TLS on the AMQP port.
    pub(crate) websocket: bool,
    /// The hub's host name (the open frame's `hostname`).
    pub(crate) hub_host: &'a str,
    /// This client's container id.
    pub(crate) container_id: &'a str,
    /// SASL ANONYMOUS (then CBS); `false` for certificate authentication,
    /// which uses no SASL layer (wire spec §1.6).
    pub(crate) sasl_anonymous: bool,
    /// The local idle timeout: the connection fails when the hub sends
    /// nothing for this long (fe2o3 announces half of it to the hub).
    pub(crate) idle_timeout: Duration,
    /// Time allowed for TCP, TLS, WebSocket, open and begin together.
    pub(crate) timeout: Duration,
}

/// An open connection with one session.
pub(crate) struct Opened {
    /// The connection's handle (dropping it closes the connection).
    pub(crate) connection: ConnectionHandle<()>,
    /// The session every link is attached on.
    pub(crate) session: SessionHandle<()>,
}

/// Opens a connection and begins a session, within `options.timeout`.
pub(crate) async fn open(options: &OpenOptions<'_>) -> Result<Opened, ClientError> {
    within(options.timeout, "AMQP connect", async {
        // Boxed steps: these futures are tens of kilobytes each, and a
        // caller's task would otherwise carry all of them inline.
        let mut connection = if options.websocket {
            let stream =
                Box::pin(options.endpoint.connect_ws(WS_SUBPROTOCOL, options.timeout)).await?;
            Box::pin(open_with_stream(options, stream)).await?
        } else {
            let port = options.endpoint.connectivity.ports.amqp;
            let stream = Box::pin(options.endpoint.connect_tls(port, options.timeout)).await?;
            Box::pin(open_with_stream(options, stream)).await?
        };
        let session = Box::pin(Session::begin(&mut connection))
            .await
            .map_err(error::begin_error)?;
        Ok(Opened {
            connection,
            session,
        })
    })
    .await
}

async fn open_with_stream<S>(
    options: &OpenOptions<'_>,
    stream: S,
) -> Result<ConnectionHandle<()>, ClientError>
where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let idle_ms = u32::try_from(options.idle_timeout.as_millis()).unwrap_or(u32::MAX);
    let mut builder = Connection::builder()
        .container_id(options.container_id)
        .hostname(options.hub_host)
        .idle_time_out(idle_ms);
    if options.sasl_anonymous {
        builder = builder.sasl_profile(SaslProfile::Anonymous);
    }
    // Frames the connection writes in one burst go out in one write (one TLS record),
    // once the connection is open: an open that fails may drop the stream at once.
    let (stream, cork) = Corked::uncorked(stream);
    let connection = builder
        .open_with_stream(stream)
        .await
        .map_err(error::open_error)?;
    cork.cork();
    Ok(connection)
}

impl Opened {
    /// Closes the connection (and with it the session and links), waiting
    /// at most `timeout` for the hub's close.
    pub(crate) async fn close(mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.session.end()).await;
        let _ = tokio::time::timeout(timeout, self.connection.close()).await;
    }
}

/// The client end of `$cbs`: a request link and a reply link.
pub(crate) struct Cbs {
    requests: Sender,
    replies: Receiver,
    next_id: u64,
}

impl Cbs {
    /// Attaches both CBS links on `session`.
    pub(crate) async fn attach(
        session: &mut SessionHandle<()>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        within(timeout, "CBS attach", async {
            let requests = Box::pin(Sender::attach(session, link_name("cbs-sender"), CBS_NODE))
                .await
                .map_err(sender_attach_error)?;
            let replies = Box::pin(Receiver::attach(
                session,
                link_name("cbs-receiver"),
                CBS_NODE,
            ))
            .await
            .map_err(receiver_attach_error)?;
            Ok(Self {
                requests,
                replies,
                next_id: 0,
            })
        })
        .await
    }

    /// Puts `token` for `audience` and waits for the hub's answer: `Ok` for
    /// 200/202, else the typed refusal (401 → Unauthorized, 404 → NotFound).
    pub(crate) async fn put_token(
        &mut self,
        audience: &str,
        token: &str,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        self.next_id += 1;
        let id = format!("put-token-{}", self.next_id);
        let request = put_token_request(&id, audience, token);
        within(timeout, "CBS put-token", async {
            let outcome = Box::pin(self.requests.send(request))
                .await
                .map_err(|e| send_error(&e))?;
            outcome_result(outcome)?;
            loop {
                let reply = self
                    .replies
                    .recv::<Body<Value>>()
                    .await
                    .map_err(|e| recv_error(&e))?;
                // Answers are sent settled; accepting one that is not is harmless.
                let _ = self.replies.accept(&reply).await;
                let message = reply.into_message();
                if !answers(&message, &id) {
                    // A late answer to an earlier request that timed out.
                    continue;
                }
                let (status, description) = put_token_status(&message)?;
                return match error::cbs_status(status, &description) {
                    None => Ok(()),
                    Some(refused) => Err(refused),
                };
            }
        })
        .await
    }

    /// Detaches both links, waiting at most `timeout` for each.
    pub(crate) async fn close(self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.requests.close()).await;
        let _ = tokio::time::timeout(timeout, self.replies.close()).await;
    }
}

/// A put-token request (wire spec §3.3).
fn put_token_request(id: &str, audience: &str, token: &str) -> AmqpMessage<AmqpValue<String>> {
    let mut app = OrderedMap::new();
    app.insert(
        "operation".to_owned(),
        SimpleValue::String("put-token".into()),
    );
    app.insert(
        "type".to_owned(),
        SimpleValue::String(SAS_TOKEN_TYPE.into()),
    );
    app.insert("name".to_owned(), SimpleValue::String(audience.to_owned()));
    AmqpMessage {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties {
            message_id: Some(MessageId::String(id.to_owned())),
            to: Some(CBS_NODE.to_owned()),
            reply_to: Some(CBS_REPLY_TO.to_owned()),
            ..Properties::default()
        }),
        application_properties: Some(ApplicationProperties(app)),
        body: AmqpValue(token.to_owned()),
        footer: None,
    }
}

/// True when `reply` answers the request with message id `id`.
fn answers(reply: &AmqpMessage<Body<Value>>, id: &str) -> bool {
    matches!(
        reply.properties.as_ref().and_then(|p| p.correlation_id.as_ref()),
        Some(MessageId::String(c)) if c == id
    )
}

/// The answer's `status-code` (an int; other integer types are tolerated)
/// and `status-description`.
fn put_token_status(reply: &AmqpMessage<Body<Value>>) -> Result<(i32, String), ClientError> {
    let app = reply.application_properties.as_ref().map(|a| &a.0);
    let get = |key: &str| app.and_then(|a| a.get(key));
    let status = match get("status-code") {
        Some(SimpleValue::Int(n)) => Some(*n),
        Some(SimpleValue::Uint(n)) => i32::try_from(*n).ok(),
        Some(SimpleValue::Long(n)) => i32::try_from(*n).ok(),
        Some(SimpleValue::Short(n)) => Some(i32::from(*n)),
        Some(SimpleValue::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ClientError::Protocol("the CBS answer has no status-code".into()))?;
    let description = match get("status-description") {
        Some(SimpleValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    Ok((status, description))
}

/// When to put a fresh token, for a token minted at `minted`: at its
/// `renew_at`, but never later than 85 % of the time left before its `se`,
/// which is whole seconds (a short lifetime would otherwise lapse first).
/// `None` for a token that cannot be renewed.
pub(crate) fn renewal_time(token: &Token, minted: SystemTime) -> Option<SystemTime> {
    let renew_at = token.renew_at?;
    let se_secs = token
        .expires_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let se = UNIX_EPOCH + Duration::from_secs(se_secs);
    let left = se.duration_since(minted).unwrap_or_default();
    Some(renew_at.min(minted + left.mul_f64(RENEW_SHARE)))
}

/// A system time as a tokio deadline (past times are now).
pub(crate) fn deadline(at: SystemTime) -> tokio::time::Instant {
    let left = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    tokio::time::Instant::now() + left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_encoded_in_addresses() {
        assert_eq!(
            devicebound_address("dev1"),
            "/devices/dev1/messages/devicebound"
        );
        assert_eq!(
            devicebound_address("a b+c%/d"),
            "/devices/a%20b%2Bc%25%2Fd/messages/devicebound"
        );
        assert_eq!(
            devicebound_address("x-y_z.1~!*'()"),
            "/devices/x-y_z.1~!*'()/messages/devicebound"
        );
    }

    #[test]
    fn put_token_requests_and_answers() {
        let request = put_token_request(
            "put-token-1",
            "hub.local/devices/d1",
            "SharedAccessSignature x",
        );
        let app = &request.application_properties.as_ref().unwrap().0;
        assert_eq!(
            app.get("operation"),
            Some(&SimpleValue::String("put-token".into()))
        );
        assert_eq!(
            app.get("type"),
            Some(&SimpleValue::String(SAS_TOKEN_TYPE.into()))
        );
        assert_eq!(
            app.get("name"),
            Some(&SimpleValue::String("hub.local/devices/d1".into()))
        );
        assert_eq!(request.body.0, "SharedAccessSignature x");

        let mut app = OrderedMap::new();
        app.insert("status-code".to_owned(), SimpleValue::Int(401));
        app.insert(
            "status-description".to_owned(),
            SimpleValue::String("bad signature".into()),
        );
        let reply = AmqpMessage {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: Some(Properties {
                correlation_id: Some(MessageId::String("put-token-1".into())),
                ..Properties::default()
            }),
            application_properties: Some(ApplicationProperties(app)),
            body: Body::Value(AmqpValue(Value::Null)),
            footer: None,
        };
        assert!(answers(&reply, "put-token-1"));
        assert!(!answers(&reply, "put-token-2"));
        assert_eq!(
            put_token_status(&reply).unwrap(),
            (401, "bad signature".to_owned())
        );
    }

    #[test]
    fn short_tokens_renew_before_their_whole_second_se() {
        let minted = UNIX_EPOCH + Duration::from_millis(1_000_900);
        // A 4 s token minted at .900 has se = 1004 s: 3.1 s of life.
        let token = Token {
            value: String::new(),
            expires_at: minted + Duration::from_secs(4),
            renew_at: Some(minted + Duration::from_millis(3_400)),
        };
        let at = renewal_time(&token, minted).unwrap();
        assert!(at < UNIX_EPOCH + Duration::from_secs(1_004));
        assert_eq!(
            at,
            minted + Duration::from_millis(3_100).mul_f64(RENEW_SHARE)
        );
        // A token minted on a whole second keeps its own renew_at.
        let whole = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let long = Token {
            value: String::new(),
            expires_at: whole + Duration::from_secs(3_600),
            renew_at: Some(whole + Duration::from_secs(3_060)),
        };
        assert_eq!(
            renewal_time(&long, whole),
            Some(whole + Duration::from_secs(3_060))
        );
        let fixed = Token {
            renew_at: None,
            ..long
        };
        assert_eq!(renewal_time(&fixed, whole), None);
    }
}
