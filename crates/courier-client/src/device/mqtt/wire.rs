//! The CONNECT a device sends (wire spec §2.2) and what the hub's CONNACK
//! and SUBACK answers mean as typed errors.

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Login, SubscribeReasonCode};
use rumqttc::mqttbytes::{Protocol, QoS};

use crate::{ClientError, HubError};

/// The api-version IoT Hub's docs give for the MQTT user name.
const API_VERSION: &str = "2021-04-12";

/// RFC 3986 unreserved characters stay; everything else in a query value is escaped.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The user name: `{hub}/{device}/?api-version=…&DeviceClientType=…`, host
/// and device id raw, query values encoded, as every SDK sends it.
pub(super) fn username(hub_host: &str, device_id: &str) -> String {
    let client_type = format!("courier-client/{}", env!("CARGO_PKG_VERSION"));
    format!(
        "{hub_host}/{device_id}/?api-version={API_VERSION}&DeviceClientType={}",
        utf8_percent_encode(&client_type, QUERY_VALUE)
    )
}

/// The keep-alive to announce, in whole seconds (rounded up, so that the
/// hub's 1.5 × timeout is never shorter than the client's ping interval);
/// 0 turns keep-alive off.
pub(super) fn keep_alive_secs(keep_alive: Duration) -> u16 {
    if keep_alive.is_zero() {
        return 0;
    }
    let secs = keep_alive.as_secs() + u64::from(keep_alive.subsec_nanos() > 0);
    u16::try_from(secs).unwrap_or(u16::MAX)
}

/// The CONNECT packet: client id = device id, the user name above, the SAS
/// token as password (none with X.509, where TLS carries the identity).
///
/// CleanSession is 0, as in every SDK: the hub keeps the C2D subscription
/// between connections, and a hub that remembers unacknowledged PUBLISHes
/// resends them at once (DUP) instead of after its lock lapses. The queue
/// itself survives either way, so no message depends on it.
pub(super) fn connect(
    hub_host: &str,
    device_id: &str,
    password: Option<&str>,
    keep_alive: Duration,
) -> Connect {
    Connect {
        protocol: Protocol::V4,
        keep_alive: keep_alive_secs(keep_alive),
        client_id: device_id.to_owned(),
        clean_session: false,
        last_will: None,
        // rumqttc writes the password flag only for a non-empty password.
        login: Some(Login::new(
            username(hub_host, device_id),
            password.unwrap_or_default(),
        )),
    }
}

/// The error a refusing CONNACK stands for; `None` for success.
pub(super) fn connack_error(code: ConnectReturnCode) -> Option<ClientError> {
    let unauthorized = |why: &str| {
        ClientError::from(HubError::new(
            401002,
            "IotHubUnauthorizedAccess",
            format!("the hub refused the CONNECT: {why}"),
        ))
    };
    match code {
        ConnectReturnCode::Success => None,
        ConnectReturnCode::BadUserNamePassword => Some(unauthorized(
            "bad user name or password (CONNACK 4): is the SAS token or key right?",
        )),
        ConnectReturnCode::NotAuthorized => Some(unauthorized(
            "not authorized (CONNACK 5): wrong or expired credentials, or the device is unknown or disabled",
        )),
        ConnectReturnCode::ServiceUnavailable => Some(ClientError::Network(
            "the hub is unavailable (CONNACK 3); retrying".into(),
        )),
        ConnectReturnCode::BadClientId => Some(ClientError::InvalidArgument(
            "the hub rejected the client id (CONNACK 2): the device id is not one it accepts"
                .into(),
        )),
        ConnectReturnCode::RefusedProtocolVersion => Some(ClientError::Protocol(
            "the hub does not speak MQTT 3.1.1 (CONNACK 1)".into(),
        )),
    }
}

/// The QoS granted by a SUBACK for the one C2D filter, or the error.
pub(super) fn suback_grant(codes: &[SubscribeReasonCode]) -> Result<QoS, ClientError> {
    match codes {
        [SubscribeReasonCode::Success(qos)] => Ok(*qos),
        [SubscribeReasonCode::Failure] => Err(ClientError::Protocol(
            "the hub refused the C2D subscription (SUBACK 0x80)".into(),
        )),
        other => Err(ClientError::Protocol(format!(
            "SUBACK answers {} filters; one was asked",
            other.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_names_the_device_hub_and_client_type() {
        let c = connect(
            "hub.test",
            "dev-1",
            Some("SharedAccessSignature sr=x&sig=y&se=1"),
            Duration::from_secs(60),
        );
        assert_eq!(c.client_id, "dev-1");
        assert!(!c.clean_session);
        assert_eq!(c.keep_alive, 60);
        assert_eq!(c.protocol, Protocol::V4);
        let login = c.login.expect("login");
        assert_eq!(
            login.username,
            format!(
                "hub.test/dev-1/?api-version=2021-04-12&DeviceClientType=courier-client%2F{}",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(login.password, "SharedAccessSignature sr=x&sig=y&se=1");
    }

    #[test]
    fn an_x509_connect_carries_no_password_on_the_wire() {
        let c = connect("hub.test", "dev-1", None, Duration::from_secs(60));
        let mut buf = bytes::BytesMut::new();
        rumqttc::mqttbytes::v4::Packet::Connect(c)
            .write(&mut buf, usize::MAX)
            .expect("encodes");
        // Connect flags follow the protocol name and level: user name yes, password no.
        let at = buf
            .windows(5)
            .position(|w| w == b"MQTT\x04")
            .expect("protocol name")
            + 5;
        assert_eq!(buf[at] & 0xC0, 0x80);
        assert_eq!(buf[at] & 0x02, 0, "CleanSession 0");
    }

    #[test]
    fn keep_alive_rounds_up_and_saturates() {
        assert_eq!(keep_alive_secs(Duration::ZERO), 0);
        assert_eq!(keep_alive_secs(Duration::from_millis(1)), 1);
        assert_eq!(keep_alive_secs(Duration::from_millis(1500)), 2);
        assert_eq!(keep_alive_secs(Duration::from_secs(300)), 300);
        assert_eq!(keep_alive_secs(Duration::from_secs(1 << 20)), u16::MAX);
    }

    #[test]
    fn connack_codes_map_to_typed_errors() {
        assert!(connack_error(ConnectReturnCode::Success).is_none());
        for code in [
            ConnectReturnCode::BadUserNamePassword,
            ConnectReturnCode::NotAuthorized,
        ] {
            let e = connack_error(code).expect("an error");
            assert!(matches!(e, ClientError::Unauthorized(_)), "{e:?}");
            assert_eq!(e.code(), Some(401002));
        }
        let busy = connack_error(ConnectReturnCode::ServiceUnavailable).expect("an error");
        assert!(matches!(busy, ClientError::Network(_)) && busy.is_transient());
        assert!(matches!(
            connack_error(ConnectReturnCode::BadClientId),
            Some(ClientError::InvalidArgument(_))
        ));
        assert!(matches!(
            connack_error(ConnectReturnCode::RefusedProtocolVersion),
            Some(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn suback_grants_or_refuses() {
        assert_eq!(
            suback_grant(&[SubscribeReasonCode::Success(QoS::AtLeastOnce)]).ok(),
            Some(QoS::AtLeastOnce)
        );
        assert!(suback_grant(&[SubscribeReasonCode::Failure]).is_err());
        assert!(suback_grant(&[]).is_err());
    }
}
