//! One module per command group; each turns validated settings into API calls
//! and printed results.

pub(crate) mod bench;
mod c2d;
mod device;
mod feedback;
mod hub;

use std::process::ExitCode;

use crate::cli::{ClientArgs, Command};
use crate::output::Printer;

/// How a command that did not fail ended; each has its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Done as asked.
    Success,
    /// `--wait-feedback` saw no record for the message in time.
    FeedbackTimedOut,
    /// `--wait-feedback` saw a status other than Success.
    NegativeFeedback,
}

impl Outcome {
    /// The process exit code: 0, 3 or 4.
    pub(crate) fn exit_code(self) -> ExitCode {
        match self {
            Self::Success => ExitCode::SUCCESS,
            Self::FeedbackTimedOut => ExitCode::from(3),
            Self::NegativeFeedback => ExitCode::from(4),
        }
    }
}

/// Runs a client command (anything but `serve`).
pub(crate) async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Serve(_) | Command::Bench(_) => {
            anyhow::bail!("`serve` and `bench` run on their own runtime")
        }
        Command::Device(args) => device::run(&args.client, args.command).await,
        Command::C2d(args) => c2d::run(&args.client, args.command).await,
        Command::Feedback(args) => feedback::run(&args).await,
        Command::Hub(args) => hub::run(&args.client, &args.command).await,
    }
}

/// Waits for Ctrl-C when `enabled`, else forever; lets `--follow` loops end cleanly.
async fn interrupted(enabled: bool) {
    if enabled && tokio::signal::ctrl_c().await.is_ok() {
        return;
    }
    std::future::pending::<()>().await;
}

fn printer(args: &ClientArgs) -> Printer {
    Printer::new(args.json)
}
