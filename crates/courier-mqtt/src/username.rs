//! The CONNECT user name: `{host}/{deviceId}/?{query}`, or
//! `{host}/{deviceId}/{moduleId}/?{query}` for a module (wire spec §2.2).
//! Host and ids are sent raw; the query (api-version, DeviceClientType,
//! model-id, …) is ignored.

/// A user name split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Username<'a> {
    /// The hub host name as the client wrote it.
    pub(crate) host: &'a str,
    /// The device id.
    pub(crate) device_id: &'a str,
    /// The module id, for a module identity.
    pub(crate) module_id: Option<&'a str>,
}

/// Why a user name could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("user name '{0}' is not {{host}}/{{deviceId}}/?api-version=…")]
pub(crate) struct UsernameError(pub(crate) String);

/// Splits `username`; the query after `/?` is not interpreted.
pub(crate) fn parse(username: &str) -> Result<Username<'_>, UsernameError> {
    let path = match username.split_once("/?") {
        Some((path, _query)) => path,
        // The docs show the `/?` form; accept a bare path too (with or without `/`).
        None => username.strip_suffix('/').unwrap_or(username),
    };
    let bad = || UsernameError(username.to_owned());
    let segments: Vec<&str> = path.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(bad());
    }
    match segments.as_slice() {
        [host, device_id] => Ok(Username {
            host,
            device_id,
            module_id: None,
        }),
        [host, device_id, module_id] => Ok(Username {
            host,
            device_id,
            module_id: Some(module_id),
        }),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(host: &'static str, device_id: &'static str) -> Username<'static> {
        Username {
            host,
            device_id,
            module_id: None,
        }
    }

    #[test]
    fn the_python_sdk_user_name_from_the_trace() {
        let u = "localhost/harness-dev-1/?api-version=2019-10-01&DeviceClientType=azure-iot-device-iothub-py%2F2.14.0%283.11.7%3BLinux%20%231%20SMP%20PREEMPT_DYNAMIC%20%400%3Bx86_64%29";
        assert_eq!(parse(u), Ok(device("localhost", "harness-dev-1")));
    }

    #[test]
    fn the_node_sdk_user_name_from_the_trace() {
        let u = "localhost/harness-dev-1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4%20(node%20v20.20.2%3B%20Debian%2012%3B%20x64)";
        assert_eq!(parse(u), Ok(device("localhost", "harness-dev-1")));
    }

    #[test]
    fn query_keys_are_ignored_and_a_query_may_be_absent() {
        assert_eq!(
            parse("hub.courier.test/d1/?model-id=dtmi%3Acom%3Aexample%3B1&x=y"),
            Ok(device("hub.courier.test", "d1"))
        );
        assert_eq!(
            parse("hub.courier.test/d1/"),
            Ok(device("hub.courier.test", "d1"))
        );
        assert_eq!(
            parse("hub.courier.test/d1"),
            Ok(device("hub.courier.test", "d1"))
        );
    }

    #[test]
    fn a_module_user_name_names_the_module() {
        assert_eq!(
            parse("h.test/d1/m1/?api-version=2021-04-12"),
            Ok(Username {
                host: "h.test",
                device_id: "d1",
                module_id: Some("m1"),
            })
        );
    }

    #[test]
    fn malformed_user_names_are_refused() {
        for u in [
            "",
            "hostonly",
            "h.test//?a=b",
            "/d1/?a=b",
            "h/d/m/x/?a",
            "h.test/d1//",
        ] {
            assert!(parse(u).is_err(), "{u:?} should be refused");
        }
    }
}
