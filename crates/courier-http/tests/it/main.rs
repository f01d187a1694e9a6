//! The HTTPS heads in process: the router over a real hub on a temporary
//! write-ahead log, driven with the requests the official SDKs send.

// Helpers here are test code too: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod device_api;
mod registry_api;
mod routing;
mod service_api;
mod support;
