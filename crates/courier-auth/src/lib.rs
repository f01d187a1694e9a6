//! Identity material as Azure IoT Hub forms and checks it: connection strings, shared access
//! policies and their rights, SAS tokens (minting and verification), and X.509 thumbprints.
//!
//! The verification rules follow what the official SDKs actually send (see
//! `shared/spec/iothub-wire.md` §1), not what the docs say: the signature covers the `sr`
//! field exactly as written, fields come in any order, an empty `skn` means "no key name",
//! and .NET double-encodes device ids.
//!
//! This crate is pure computation. It must not do I/O, depend on an async runtime, or read the
//! clock: callers pass `now_unix` and look keys up through [`KeyStore`].

mod connection_string;
mod policy;
mod rights;
mod sas;
mod verify;
mod x509;

pub use connection_string::{ConnectionString, ConnectionStringError};
pub use policy::{default_policies, generate_key, Policy};
pub use rights::{ParseRightError, Right, Rights};
pub use sas::{generate_token, sign, SasError, SasToken, SAS_PREFIX};
pub use verify::{
    AuthError, Authenticator, DeviceCredentials, KeyStore, Principal, Scope, CLOCK_SKEW_SECS,
};
pub use x509::{thumbprint_matches, thumbprints};
