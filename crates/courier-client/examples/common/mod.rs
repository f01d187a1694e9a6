//! Settings shared by the examples, from the environment, so that each
//! example reads like the SDK samples it mirrors.
//!
//! - `DEVICE_CONNECTION_STRING` / `SERVICE_CONNECTION_STRING`
//! - `COURIER_CA`: PEM file of the CA to trust (default: `courier-data/tls/ca.pem`
//!   when it exists, else the public roots, as for Azure IoT Hub)
//! - `COURIER_TRANSPORT`: `mqtt`, `mqtt-ws`, `amqp`, `amqp-ws` or `http` (default `mqtt`)
//! - `COURIER_HTTPS_PORT`, `COURIER_MQTT_PORT`, `COURIER_AMQP_PORT`: for a hub
//!   not on the standard ports 443, 8883 and 5671

#![allow(dead_code)]

use std::path::PathBuf;

use courier_client::{DeviceOptions, ServiceOptions, ServiceTransport, Transport};

/// The environment variable `name`, or an error that says what to set.
pub(crate) fn required(name: &str) -> Result<String, Box<dyn std::error::Error>> {
    std::env::var(name).map_err(|_| format!("set {name} (see the example's header)").into())
}

fn port(name: &str) -> Result<Option<u16>, Box<dyn std::error::Error>> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(
            value
                .parse()
                .map_err(|_| format!("{name}={value} is not a port"))?,
        )),
        Err(_) => Ok(None),
    }
}

fn ca() -> Option<PathBuf> {
    std::env::var_os("COURIER_CA")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("courier-data/tls/ca.pem")).filter(|p| p.exists()))
}

/// The device transport named by `COURIER_TRANSPORT`.
pub(crate) fn transport() -> Result<Transport, Box<dyn std::error::Error>> {
    let name = std::env::var("COURIER_TRANSPORT").unwrap_or_else(|_| "mqtt".into());
    Ok(match name.to_ascii_lowercase().as_str() {
        "mqtt" => Transport::Mqtt,
        "mqtt-ws" | "mqttws" => Transport::MqttWs,
        "amqp" => Transport::Amqp,
        "amqp-ws" | "amqpws" => Transport::AmqpWs,
        "http" | "https" => Transport::Http,
        other => {
            return Err(format!(
                "COURIER_TRANSPORT={other}: use mqtt, mqtt-ws, amqp, amqp-ws or http"
            )
            .into())
        }
    })
}

/// Device options from the environment.
pub(crate) fn device_options() -> Result<DeviceOptions, Box<dyn std::error::Error>> {
    let mut options = DeviceOptions::new();
    if let Some(ca) = ca() {
        options = options.ca_certificate_file(ca)?;
    }
    if let Some(p) = port("COURIER_HTTPS_PORT")? {
        options = options.https_port(p);
    }
    if let Some(p) = port("COURIER_MQTT_PORT")? {
        options = options.mqtt_port(p);
    }
    if let Some(p) = port("COURIER_AMQP_PORT")? {
        options = options.amqp_port(p);
    }
    Ok(options)
}

/// Service options from the environment (AMQP unless `COURIER_TRANSPORT` says `http` or `amqp-ws`).
pub(crate) fn service_options() -> Result<ServiceOptions, Box<dyn std::error::Error>> {
    let transport = match transport()? {
        Transport::Http => ServiceTransport::Http,
        Transport::AmqpWs | Transport::MqttWs => ServiceTransport::AmqpWs,
        Transport::Amqp | Transport::Mqtt => ServiceTransport::Amqp,
    };
    let mut options = ServiceOptions::new().transport(transport);
    if let Some(ca) = ca() {
        options = options.ca_certificate_file(ca)?;
    }
    if let Some(p) = port("COURIER_HTTPS_PORT")? {
        options = options.https_port(p);
    }
    if let Some(p) = port("COURIER_AMQP_PORT")? {
        options = options.amqp_port(p);
    }
    Ok(options)
}
