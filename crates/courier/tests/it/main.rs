//! The `courier` binary's integration tests: one test binary, real hubs
//! started by the binary itself on ephemeral ports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bench;
mod cli;
mod crash;
mod examples;
mod mqtt;
mod sdk;
mod support;
