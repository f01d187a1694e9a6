//! The `courier` command: `courier serve` runs a hub; the other commands act on
//! a running hub through its HTTPS API (`docs/http-api.md`), as a service, as
//! the registry's administrator or as a device.
//!
//! It must not reach into the hub's store or state: everything but `serve`
//! goes over HTTPS, exactly as any other client would.

mod api;
mod cli;
mod commands;
mod output;
mod parse;
mod target;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};
use crate::commands::Outcome;

/// jemalloc instead of glibc malloc: thread caches instead of contended arena
/// locks (see `docs/ARCHITECTURE.md`, "Dependencies and why").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_errors = match &cli.command {
        Command::Serve(_) => false,
        Command::Device(a) => a.client.json,
        Command::C2d(a) => a.client.json,
        Command::Feedback(a) => a.client.json,
        Command::Hub(a) => a.client.json,
        Command::Bench(a) => a.client.json,
    };
    match run(cli) {
        Ok(outcome) => outcome.exit_code(),
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            report(&error, json_errors);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Serve(args) => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(courier_server::serve(args))?;
            Ok(Outcome::Success)
        }
        // The load generator picks its own runtime: it needs every core.
        Command::Bench(args) => commands::bench::run(&args),
        // A client makes one request at a time; one thread is plenty.
        client_command => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(commands::run(client_command)),
    }
}

/// True when stdout was closed (e.g. `courier device list | head -1`): not a failure.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints the error and every cause to stderr, as text or as one JSON object.
fn report(error: &anyhow::Error, json: bool) {
    let api_error = error.chain().find_map(|cause| {
        let hub = match cause.downcast_ref::<courier_client::ClientError>() {
            Some(client) => client.hub_error(),
            None => cause.downcast_ref::<courier_client::HubError>(),
        }?;
        Some(serde_json::json!({
            "status": hub.status(),
            "code": hub.code,
            "name": hub.name,
            "message": hub.message,
        }))
    });
    if json {
        let causes: Vec<String> = error.chain().skip(1).map(ToString::to_string).collect();
        let document = serde_json::json!({
            "error": error.to_string(),
            "causes": causes,
            "apiError": api_error,
        });
        eprintln!("{document}");
        return;
    }
    eprintln!("error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}
