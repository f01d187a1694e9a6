//! Composition of a Courier node: configuration, the data directory, TLS
//! certificates and the TLS listeners, wired around the hub engine by
//! `serve`.
//!
//! This crate owns processes, files and sockets at start-up and shutdown. It
//! must not decide a message's fate (that is `courier-hub`/`courier-core`),
//! nor speak a protocol itself (the heads do); it only builds their inputs.

pub mod config;
pub mod datadir;
pub mod https;
pub mod limits;
pub mod listener;
mod serve;
pub mod tls;
pub mod ws;

pub use config::ServeArgs;
pub use serve::serve;
