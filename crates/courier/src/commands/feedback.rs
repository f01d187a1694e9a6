//! `courier feedback`: read the hub's feedback queue as the service, through
//! the Rust SDK (`courier-client`).

use anyhow::Context as _;
use serde_json::json;

use super::{interrupted, printer, Outcome};
use crate::cli::FeedbackArgs;
use crate::output;
use crate::target::Target;

/// Receives batches, prints their records, and completes (or abandons) each.
pub(super) async fn run(args: &FeedbackArgs) -> anyhow::Result<Outcome> {
    let service = Target::from_args(&args.client, None)?.service_client()?;
    let mut feedback = service
        .feedback_receiver()
        .await
        .context("cannot receive feedback")?;
    let printer = printer(&args.client);
    let limit = args.count.or((!args.follow).then_some(1));
    let (verb, past) = if args.abandon {
        ("abandon", "abandoned")
    } else {
        ("complete", "completed")
    };

    let receiving = async {
        let mut received = 0_u64;
        while limit.is_none_or(|limit| received < limit) {
            let batch = feedback
                .receive(args.wait)
                .await
                .context("cannot receive feedback")?;
            let Some(batch) = batch else {
                if args.follow {
                    continue;
                }
                break;
            };
            received += 1;
            // Print before settling, so that lost output leaves the batch to come back.
            printer.emit(&json!({ "batch": batch, "settlement": verb }), || {
                batch
                    .records
                    .iter()
                    .map(output::feedback_record_text)
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
            let settled = if args.abandon {
                feedback.abandon(&batch).await
            } else {
                feedback.complete(&batch).await
            };
            settled.with_context(|| {
                format!(
                    "cannot {verb} the feedback batch {}",
                    batch.lock_token.as_deref().unwrap_or("")
                )
            })?;
            printer.note(&format!(
                "batch of {} record(s) {past}",
                batch.records.len()
            ))?;
        }
        if received == 0 {
            printer.note("no feedback")?;
        }
        anyhow::Ok(Outcome::Success)
    };
    tokio::select! {
        outcome = receiving => outcome,
        () = interrupted(args.follow) => Ok(Outcome::Success),
    }
}
