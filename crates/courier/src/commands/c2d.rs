//! `courier c2d …`: send (as the service), receive (as the device), purge.

use std::io::Read as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{interrupted, printer, service_client, Outcome};
use crate::api::{Ack, Expiry, FeedbackStatus, OutgoingMessage};
use crate::cli::{C2dCommand, ClientArgs, ReceiveArgs, SendArgs, Settlement};
use crate::client::Client;
use crate::output::{self, Printer};
use crate::parse::BodySource;
use crate::target::{Scope, Target};

/// Runs a C2D command.
pub(super) async fn run(args: &ClientArgs, command: C2dCommand) -> anyhow::Result<Outcome> {
    match command {
        C2dCommand::Send(send_args) => send(args, send_args).await,
        C2dCommand::Receive(receive_args) => receive(args, &receive_args).await,
        C2dCommand::Purge { device } => {
            let (client, _) = service_client(args)?;
            let result = client
                .purge(&device)
                .await
                .with_context(|| format!("cannot purge the queue of device '{device}'"))?;
            printer(args).emit(&result, || {
                format!(
                    "purged {} message(s) from device '{device}'",
                    result.total_messages_purged
                )
            })?;
            Ok(Outcome::Success)
        }
    }
}

async fn send(args: &ClientArgs, send: SendArgs) -> anyhow::Result<Outcome> {
    let ack = send.ack.unwrap_or(Ack::None);
    if send.wait_feedback && ack == Ack::None {
        anyhow::bail!("--wait-feedback needs --ack positive, negative or full: with no ack the hub sends no feedback");
    }
    let expiry = match (send.ttl, send.expiry) {
        (Some(ttl), _) => Expiry::TtlSeconds(ttl.as_secs()),
        (None, Some(at)) => {
            OffsetDateTime::parse(&at, &Rfc3339).with_context(|| {
                format!("--expiry '{at}' is not an RFC 3339 time such as 2030-01-01T00:00:00Z")
            })?;
            Expiry::At(at)
        }
        (None, None) => Expiry::Default,
    };
    // Feedback is matched by message id, so a waited-for message must have one.
    let message_id = send
        .message_id
        .or_else(|| send.wait_feedback.then(|| uuid::Uuid::new_v4().to_string()));
    let message = OutgoingMessage {
        body: read_body(&send.body)?,
        message_id: message_id.clone(),
        correlation_id: send.correlation_id,
        user_id: send.user_id,
        content_type: send.content_type,
        content_encoding: send.content_encoding,
        ack,
        expiry,
        properties: send.properties,
    };
    let (client, _) = service_client(args)?;
    let device = &send.device;
    let receipt = client
        .send_message(device, &message)
        .await
        .with_context(|| format!("cannot send a message to device '{device}'"))?;
    let printer = printer(args);
    printer.emit(&receipt, || {
        format!(
            "sent to '{device}': sequence number {}, message id {}",
            receipt.sequence_number,
            receipt.message_id.as_deref().unwrap_or("(none)")
        )
    })?;
    match message_id.filter(|_| send.wait_feedback) {
        Some(id) => wait_for_feedback(&client, &printer, &id, send.timeout).await,
        None => Ok(Outcome::Success),
    }
}

/// Reads feedback batches until one holds a record for `message_id`, completes
/// that batch and leaves the others locked (they return when the lock expires).
async fn wait_for_feedback(
    client: &Client,
    printer: &Printer,
    message_id: &str,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Some(batch) = client
            .receive_feedback(remaining)
            .await
            .context("cannot receive feedback")?
        else {
            return timed_out(printer, message_id, timeout);
        };
        let Some(record) = batch
            .records
            .iter()
            .find(|r| r.original_message_id == message_id)
        else {
            // Batches for other messages keep coming while any are unlocked, so
            // the deadline is checked here as well as in the long poll.
            if Instant::now() >= deadline {
                return timed_out(printer, message_id, timeout);
            }
            continue;
        };
        client
            .complete_feedback(&batch.lock_token)
            .await
            .context("cannot complete the feedback batch")?;
        printer.emit(
            &json!({ "messageId": message_id, "feedback": record }),
            || {
                format!(
                    "feedback: {} ({})",
                    record.status_code.as_str(),
                    record.description
                )
            },
        )?;
        return Ok(if record.status_code == FeedbackStatus::Success {
            Outcome::Success
        } else {
            Outcome::NegativeFeedback
        });
    }
}

fn timed_out(printer: &Printer, message_id: &str, timeout: Duration) -> anyhow::Result<Outcome> {
    printer.emit(
        &json!({ "messageId": message_id, "feedback": null }),
        || {
            format!(
                "no feedback for message {message_id} within {}s",
                timeout.as_secs()
            )
        },
    )?;
    Ok(Outcome::FeedbackTimedOut)
}

fn read_body(source: &BodySource) -> anyhow::Result<Vec<u8>> {
    match source {
        BodySource::Literal(text) => Ok(text.as_bytes().to_vec()),
        BodySource::File(path) => std::fs::read(path)
            .with_context(|| format!("cannot read the body file {}", path.display())),
        BodySource::Stdin => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .context("cannot read the body from standard input")?;
            Ok(body)
        }
    }
}

async fn receive(args: &ClientArgs, receive: &ReceiveArgs) -> anyhow::Result<Outcome> {
    let device = receive.device.as_str();
    let target = Target::from_args(args, receive.device_connection_string.as_deref())?;
    let authorization = target.authorization(Scope::Device(device))?;
    let client = Client::new(&target, &authorization)
        .with_context(|| format!("cannot connect to {}", target.endpoint))?;
    let printer = printer(args);
    let limit = receive.count.or((!receive.follow).then_some(1));
    let settlement = receive.settlement();

    let receiving = async {
        let mut received = 0_u64;
        while limit.is_none_or(|limit| received < limit) {
            let message = client
                .receive_message(device, receive.wait)
                .await
                .with_context(|| format!("cannot receive as device '{device}'"))?;
            let Some(message) = message else {
                if receive.follow {
                    continue;
                }
                break;
            };
            received += 1;
            // Print before settling: if the output is lost (a closed pipe), the
            // message stays unsettled and is delivered again.
            let token = message.lock_token.as_str();
            printer.emit(&output::message_json(&message, settlement.as_str()), || {
                output::message_text(&message)
            })?;
            let settled = match settlement {
                Settlement::Complete => client.complete_message(device, token).await,
                Settlement::Reject => client.reject_message(device, token).await,
                Settlement::Abandon => client.abandon_message(device, token).await,
            };
            settled.with_context(|| {
                format!(
                    "cannot {} the message with lock token {token}",
                    settlement.as_str()
                )
            })?;
            printer.note(settlement.past_tense())?;
        }
        if received == 0 {
            printer.note("no message")?;
        }
        anyhow::Ok(Outcome::Success)
    };
    tokio::select! {
        outcome = receiving => outcome,
        () = interrupted(receive.follow) => Ok(Outcome::Success),
    }
}
